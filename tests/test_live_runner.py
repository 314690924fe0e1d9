"""What an operator gets wrong when starting ``tradeloop live`` is refused with a clear message."""
from __future__ import annotations

import json
import os
import sqlite3
import time

import numpy as np
import pytest

from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tests import live_procs
from tests.mosquitto import mosquitto  # noqa: F401  (fixture)


def test_live_without_a_broker_address_or_symbols_names_what_is_missing(tmp_path, capsys):
    assert main(["live", "sma_cross", "--mqtt", "mqtt://127.0.0.1:1", "--state", str(tmp_path / "s.sqlite"),
                 "--symbols", "A"]) == 2
    assert "live.fix is required" in capsys.readouterr().err
    assert main(["live", "sma_cross", "--mqtt", "mqtt://127.0.0.1:1", "--fix", "127.0.0.1:1",
                 "--state", str(tmp_path / "s.sqlite")]) == 2
    assert "live.symbols is required" in capsys.readouterr().err
    assert main(["live", "sma_cross", "--mqtt", "mqtt://127.0.0.1:1", "--fix", "localhost",
                 "--state", str(tmp_path / "s.sqlite"), "--symbols", "A"]) == 2
    assert "expected HOST:PORT" in capsys.readouterr().err


def dump(path) -> list:
    with sqlite3.connect(path) as db:
        return [list(db.execute(f"SELECT * FROM {t}")) for t in ("live_meta", "live_order", "live_fill", "fix_session")]


def test_a_state_file_of_another_run_is_refused_and_left_untouched(tmp_path, capsys):
    state = tmp_path / "s.sqlite"
    base = ["--mqtt", "mqtt://127.0.0.1:1", "--fix", "127.0.0.1:1", "--state", str(state)]
    from tradeloop.engine.config.run import RunConfig
    from tradeloop.engine.live.runner import LiveRunner
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.live.mqtt, cfg.live.fix, cfg.live.state, cfg.live.symbols = "mqtt://x:1", "127.0.0.1:1", str(state), ["A"]
    LiveRunner(cfg).close()                       # the file now belongs to sma_cross on A
    before = dump(state)
    assert main(["live", "sma_cross", *base, "--symbols", "B"]) == 2
    err = capsys.readouterr().err
    assert "belongs to another run" in err and "symbols" in err and "new --state file" in err
    assert main(["live", "mean_reversion", *base, "--symbols", "A"]) == 2
    assert "strategy" in capsys.readouterr().err
    assert dump(state) == before


def test_a_password_file_open_to_others_is_refused(tmp_path, capsys):
    secret = tmp_path / "fix.pw"
    secret.write_text("hunter2\n")
    os.chmod(secret, 0o644)
    assert main(["live", "sma_cross", "--mqtt", "mqtt://127.0.0.1:1", "--fix", "127.0.0.1:1", "--state",
                 str(tmp_path / "s.sqlite"), "--symbols", "A", "--password-file", str(secret)]) == 2
    err = capsys.readouterr().err
    assert "accessible by group or others" in err and "chmod 600" in err
    assert "hunter2" not in err


def test_a_refused_logon_stops_the_runner_at_once_with_the_reason_and_no_password_in_the_log(mosquitto, tmp_path):
    exch, port = live_procs.exchange(tmp_path, mosquitto.url, venue="v", interval="1d",
                                     extra=("--password-env", "EXCH_PW"), env={"EXCH_PW": "right-horse-battery"})
    try:
        t0 = time.monotonic()
        p = live_procs.Proc("live", ["-m", "tradeloop", "live", "sma_cross", "--mqtt", mosquitto.url, "--fix",
                                     f"127.0.0.1:{port}", "--state", str(tmp_path / "s.sqlite"), "--symbols", "A",
                                     "--password-env", "TRADER_PW", "--log-json"], tmp_path,
                            env={"TRADER_PW": "wrong-staple"})
        assert p.wait(30) == 1
        assert time.monotonic() - t0 < 20          # no endless reconnecting with a bad password
    finally:
        exch.stop()
    log = p.tail(100_000)
    assert "logon refused" in log
    assert "wrong-staple" not in log and "right-horse-battery" not in log


def test_a_drawdown_stop_in_force_survives_a_restart_of_the_runner(tmp_path):
    """Risk state is journaled after each step: a stopped book stays stopped when the runner comes back."""
    from tradeloop.brokers.orders import Order, Side
    from tradeloop.data.schema import Bar
    from tradeloop.engine.config.run import RunConfig
    from tradeloop.engine.live.runner import LiveRunner

    def runner() -> LiveRunner:
        cfg = RunConfig()
        cfg.run.strategy = "sma_cross"
        cfg.risk.drawdown.max = 0.1
        cfg.live.mqtt, cfg.live.fix, cfg.live.state = "mqtt://x:1", "127.0.0.1:1", str(tmp_path / "s.sqlite")
        cfg.live.symbols = ["A"]
        r = LiveRunner(cfg)
        r.recover()
        return r

    first = runner()
    guard = next(c for c in first.risk.checks if c.name == "drawdown")
    first.journal.bars([Bar("A", 1, 10.0, 10.0, 10.0, 10.0, 1.0)])
    guard._stop(1, "max", 80_000.0, "equity 80,000.00 is 20.00% below its peak", first.risk)
    first.journal.risk(first._risk_state())
    first.close()

    second = runner()
    guard = next(c for c in second.risk.checks if c.name == "drawdown")
    assert guard.stopped == "max" and "20.00% below its peak" in guard.why
    decision, = second.risk.screen([Order("O9", "A", Side.BUY, 100)], second.engine)
    assert decision.action == "reject" and "drawdown stop" in decision.reason
    second.close()


def test_history_files_warm_a_fresh_session_up_without_sending_anything(tmp_path, capsys):
    """`tradeloop live --data FILE`: indicators start warm; live bars up to the history's end are old news."""
    from tradeloop.engine.config.run import DataSpec, RunConfig
    from tradeloop.engine.live.runner import LiveRunner
    from tests.live_procs import SHARED

    orcl = SHARED / "backtrader" / "orcl-1995-2014.txt"
    if not orcl.exists():
        pytest.skip("../shared/data is not beside the checkout")

    def config(symbols: list[str]) -> RunConfig:
        cfg = RunConfig()
        cfg.run.strategy, cfg.run.end = "sma_cross", "1996-01-01"
        cfg.data = [DataSpec(str(orcl), symbol="ORCL")]
        cfg.live.mqtt, cfg.live.fix = "mqtt://x:1", "127.0.0.1:1"
        cfg.live.state, cfg.live.symbols = str(tmp_path / f"{symbols[0]}.sqlite"), symbols
        return cfg

    runner = LiveRunner(config(["ORCL"]))
    runner.recover()
    assert runner.stats.history_bars == 252 and runner.driver.market.rows["ORCL"] == 251
    assert runner.last_ts == int(np.datetime64("1995-12-29", "ns").astype(np.int64))   # later bars are new
    assert runner.engine.orders == {} and runner.journal.load().orders == []   # crossovers seen, nothing sent
    runner.close()
    with pytest.raises(ConfigError, match="ORCL: not among live.symbols"):
        LiveRunner(config(["MSFT"])).recover()


def test_reviews_a_previous_runner_left_unfinished_are_cancelled_on_restart_and_say_so(tmp_path, capsys):
    """Held orders live only in the process that held them (never sent, never journaled). After a
    restart an approval could place nothing, so every unfinished review (pending, or answered while
    the runner was down) is cancelled, recorded as a risk event, and a late answer is refused."""
    import sqlite3

    from tradeloop.brokers.orders import Order, OrderType, Side
    from tradeloop.engine.cli.main import main
    from tradeloop.engine.config.run import RunConfig
    from tradeloop.engine.live.runner import LiveRunner

    state = tmp_path / "s.sqlite"

    def runner() -> LiveRunner:
        cfg = RunConfig()
        cfg.run.strategy = "sma_cross"
        cfg.override("risk.review.notional=10000")
        cfg.override("risk.review.timeout=3600")
        cfg.live.mqtt, cfg.live.fix, cfg.live.state = "mqtt://x:1", "127.0.0.1:1", str(state)
        cfg.live.symbols = ["A"]
        r = LiveRunner(cfg)
        r.recover()
        return r

    first = runner()
    held = [Order("O1", "A", Side.BUY, 1000, OrderType.LIMIT, limit_price=50.0),
            Order("O2", "A", Side.BUY, 300, OrderType.LIMIT, limit_price=50.0)]
    assert [d.action for d in first.risk.screen(held, first.engine)] == ["hold", "hold"]
    first.close()
    assert main(["review", "approve", "O1", "--state", str(state), "--by", "alice"]) == 0   # while it is down

    second = runner()
    cancels = [e for e in second.risk.events if e.check == "review" and e.action == "cancel"]
    assert [e.order_id for e in cancels] == ["O1", "O2"]
    assert all("restarted before acting on it; the held order was not placed" in e.reason for e in cancels)
    assert cancels[0].reason.endswith("(was approved by alice)") and cancels[1].reason.endswith("(was pending)")
    rows = dict(sqlite3.connect(state).execute("SELECT order_id, status FROM reviews").fetchall())
    assert set(rows.values()) == {"cancelled"}
    capsys.readouterr()
    assert main(["review", "approve", "O1", "--state", str(state)]) == 2
    assert "no longer pending: it was cancelled" in capsys.readouterr().err
    second.close()
    third = runner()   # nothing left to cancel
    assert not [e for e in third.risk.events if e.check == "review"]
    third.close()


def test_a_strategy_that_raises_mid_session_stops_the_runner_and_says_what_is_left_working(mosquitto, tmp_path):
    """The error, the traceback and the orders still working at the venue go to the log
    (``live.failed``), the run folder of the session so far is written, and the exit says how to resume."""
    from tests import live_procs
    from tests.live_procs import SHARED

    orcl = SHARED / "backtrader" / "orcl-1995-2014.txt"
    if not orcl.exists():
        pytest.skip("../shared/data is not beside the checkout")
    exch, port = live_procs.exchange(tmp_path, mosquitto.url, venue="k", interval="1d")
    state, out = tmp_path / "live.sqlite", tmp_path / "run"
    feed = None
    try:
        runner = live_procs.live(tmp_path, ["tests.live_strategies:BuggyAfter", "--mqtt", mosquitto.url,
                                            "--fix", f"127.0.0.1:{port}", "--state", str(state), "--symbols", "ORCL",
                                            "--venue", "k", "--interval", "1d", "--out", str(out)])
        feed = live_procs.replay(tmp_path, ["--data", f"ORCL={orcl}", "--mqtt", mosquitto.url, "--venue", "k",
                                            "--interval", "1d", "--speed", str(86400 * 20), "--no-eos"])
        assert runner.wait(60) == 1
    finally:
        if feed is not None:
            feed.stop()
        exch.stop()
    log = runner.tail(100_000)
    failed = [json.loads(line) for line in log.splitlines() if '"live.failed"' in line]
    assert len(failed) == 1
    assert failed[0]["error"] == "ZeroDivisionError: the strategy divided by zero"
    assert failed[0]["open_orders"] == ["O00000001"] and "Traceback" in failed[0]["exception"]
    assert "tradeloop live: stopped by ZeroDivisionError: the strategy divided by zero; 1 order(s) still working " \
           "at the venue (O00000001)" in log and f"--state {state} resumes it" in log
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "live" and manifest["status"] == "failed"
    assert manifest["error"] == "ZeroDivisionError: the strategy divided by zero"
    assert (out / "report.html").is_file() and (out / "events.jsonl").is_file()



def test_a_second_runner_on_the_same_state_file_is_refused_naming_the_first(tmp_path):
    """Two runners on one state file would send the same ClOrdIDs under one FIX sequence."""
    import subprocess
    import sys

    from tradeloop.engine.config.run import RunConfig
    from tradeloop.engine.live.runner import LiveRunner

    state = tmp_path / "s.sqlite"
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.live.mqtt, cfg.live.fix, cfg.live.state, cfg.live.symbols = "mqtt://x:1", "127.0.0.1:1", str(state), ["A"]
    first = LiveRunner(cfg)
    with pytest.raises(ConfigError, match=rf"live.state {state} is in use by another runner \(pid {os.getpid()}\)"):
        LiveRunner(cfg)
    code = ("import sys; from tradeloop.engine.cli.main import main; sys.exit(main(['live', 'sma_cross', '--mqtt', 'mqtt://x:1', "
            f"'--fix', '127.0.0.1:1', '--state', {str(state)!r}, '--symbols', 'A']))")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=live_procs.ROOT,
                           env=live_procs.ENV, timeout=60)
    assert other.returncode == 2 and f"is in use by another runner (pid {os.getpid()})" in other.stderr
    first.close()
    LiveRunner(cfg).close()   # released: the next runner starts
