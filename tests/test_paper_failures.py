"""A paper session that fails mid-way (engine/live/paper.py) leaves a run folder that says so.

Real ``tradeloop paper`` processes (Mosquitto, the exchange simulator, the live runner, a lockstep replay of
600519 in January 2010): a strategy that raises, or the exchange simulator or the broker killed with SIGKILL,
ends the session with exit status 1 and one line, a run folder with ``status: failed``, the error and what
filled before it, the state files kept and no process left behind. The manifests of identical sessions are
identical: the loopback ports of the broker and exchange a session starts are not recorded.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import psutil
import pytest

from tradeloop.engine.live.paper import LOCAL_EXCHANGE, LOCAL_MQTT, mosquitto_binary
from tradeloop.risk.store import ControlStore

from tests.conftest import need
from tests.live_procs import ENV, ROOT, SHARED, Proc, wait_until
from tests.mosquitto import Mosquitto

DATA = SHARED / "qbot" / "600519_unadjusted.csv"
JANUARY = ("--set", "run.start=2010-01-01", "--set", "run.end=2010-01-31")   # 20 daily bars
FAILING = '''\
from tradeloop import Context, Strategy
from tradeloop.data.schema import Bar


class FailsOnFifthBar(Strategy):
    """Buys 100 shares on each bar; raises on the fifth."""

    def on_start(self, ctx: Context) -> None:
        self.n = 0

    def on_bar(self, ctx: Context, bar: Bar) -> None:
        self.n += 1
        if self.n == 5:
            raise RuntimeError("the fifth bar")
        ctx.buy(bar.symbol, 100)
'''
RAISE_LINE = FAILING.splitlines().index('            raise RuntimeError("the fifth bar")') + 1


@pytest.fixture(autouse=True)
def _needs_mosquitto_and_data() -> None:
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    need(DATA)


def paper_args(strategy: str, out, *extra: str) -> list[str]:
    return ["-m", "tradeloop", "paper", strategy, "--data", str(DATA), *JANUARY, "--cash", "1000000",
            "--out", str(out), "--quiet", *extra]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)


def children_once_started(p: Proc, out) -> list[psutil.Process]:
    """The session's child processes (Mosquitto, the exchange simulator), once its runner opened the state file."""
    wait_until(lambda: (out / "live.sqlite").exists() or p.proc.poll() is not None, 30, "the session's state file")
    kids = psutil.Process(p.proc.pid).children(recursive=True)
    assert p.proc.poll() is None and len(kids) == 2, (kids, p.tail())
    return kids


def last_line(p: Proc) -> str:
    return p.log.read_text().strip().splitlines()[-1]


def table(folder, name: str) -> pl.DataFrame:
    return pl.read_parquet(folder / f"{name}.parquet")


def test_a_strategy_that_raises_on_its_fifth_bar_leaves_a_failed_run_folder_and_no_processes(tmp_path):
    """Exit 1, one line naming the strategy's file:line; the run folder holds status failed, that error, the
    four fills and the equity of the five steps up to the failing one (the backtest's failed run has the same),
    the traceback in events.jsonl, and the state files; Mosquitto and the exchange simulator are gone."""
    strategy = tmp_path / "failing.py"
    strategy.write_text(FAILING)
    out = tmp_path / "session"
    p = Proc("paper", paper_args(f"{strategy}:FailsOnFifthBar", out, "--pace", "0.2"), tmp_path)
    try:
        kids = children_once_started(p, out)
        assert p.wait(60) == 1, p.tail()
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, ([(k.cmdline(), k.status()) for k in alive], p.tail())
    finally:
        p.stop()

    error = f"strategy error: {strategy}:{RAISE_LINE} in on_bar: RuntimeError: the fifth bar"
    assert last_line(p) == (f"tradeloop paper: stopped by {error} (run folder {out}: status failed, traceback in "
                            f"{out / 'events.jsonl'})")
    assert "Traceback" not in p.log.read_text()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["kind"], manifest["status"], manifest["error"]) == ("paper", "failed", error)
    assert manifest["details"]["session"]["steps"] == 4
    fills = table(out, "fills")
    assert fills["qty"].to_list() == [100.0] * 4
    assert fills["order_id"].to_list() == ["O00000001", "O00000002", "O00000003", "O00000004"]
    assert table(out, "equity").height == 5   # the failing step included, as in the backtest
    (failed,) = [json.loads(x) for x in (out / "events.jsonl").read_text().splitlines() if '"paper.failed"' in x]
    assert failed["error"] == error and 'raise RuntimeError("the fifth bar")' in failed["traceback"]
    for kept in ("live.sqlite", "exchange.sqlite", "report.html", "orders.parquet", "metrics.json"):
        assert (out / kept).exists(), kept

    # the backtest of the same strategy and data fails on the same bar with the same fills
    bt = cli("-m", "tradeloop", "backtest", f"{strategy}:FailsOnFifthBar", "--data", str(DATA), *JANUARY,
             "--cash", "1000000", "--out", str(tmp_path / "backtest"), "--quiet")
    assert bt.returncode == 2 and f"{strategy}:{RAISE_LINE} in on_bar" in bt.stderr, bt.stderr
    assert table(tmp_path / "backtest", "fills").equals(fills)
    assert table(tmp_path / "backtest", "equity")["equity"].to_list() == table(out, "equity")["equity"].to_list()


def is_exchange(cmd: list[str]) -> bool:
    return cmd[1:3] == ["-m", "tradeloop.brokers.exchange"]


def is_mosquitto(cmd: list[str]) -> bool:
    return Path(cmd[0]).name == "mosquitto"


@pytest.mark.parametrize("victim, what", [(is_exchange, "exchange simulator"), (is_mosquitto, "MQTT broker")],
                         ids=["exchange", "mosquitto"])
def test_a_child_process_killed_mid_session_fails_the_session_naming_the_lost_connection(tmp_path, victim, what):
    """SIGKILL the exchange simulator (or Mosquitto) after a few bars: the session stops at once with exit 1 and
    a failed run folder naming the lost connection, holding the fills made before it (those of the state file's
    event log); the other process is stopped with it."""
    out = tmp_path / "session"
    p = Proc("paper", paper_args("tests.operator_strategies:BigOrders", out, "--pace", "0.1"), tmp_path)
    try:
        kids = children_once_started(p, out)
        store = ControlStore(out / "live.sqlite", create=False)

        def steps() -> int:
            return sum(e["kind"] == "equity" for e in store.events(0, 100_000))

        wait_until(lambda: steps() >= 5 or p.proc.poll() is not None, 30, "five steps")
        (target,) = [k for k in kids if victim(k.cmdline())]
        t0 = time.monotonic()
        target.kill()
        assert p.wait(30) == 1, p.tail()
        assert time.monotonic() - t0 < 10, p.tail()   # at once, not after the replay's one-minute ack timeout
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, ([(k.cmdline(), k.status()) for k in alive], p.tail())
    finally:
        p.stop()

    assert last_line(p).startswith(f"tradeloop paper: stopped by ConnectionError: lost the connection to the {what}")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"].startswith(f"ConnectionError: lost the connection to the {what}")
    assert "was killed by SIGKILL mid-session" in manifest["error"] and "\n" not in manifest["error"]
    assert 5 <= manifest["details"]["session"]["steps"] < 20
    logged = [e["data"]["order_id"] for e in store.events(0, 100_000) if e["kind"] == "fill"]
    assert table(out, "fills")["order_id"].to_list() == logged and len(logged) >= 3


def test_sigterm_mid_replay_stops_the_session_with_a_stopped_run_folder_and_no_processes(tmp_path):
    """Without --console too, SIGTERM ends a session cleanly: exit 0, the run folder written with status stopped
    and the steps done so far, Mosquitto and the exchange simulator stopped with it."""
    out = tmp_path / "session"
    p = Proc("paper", paper_args("tests.operator_strategies:BigOrders", out, "--pace", "0.1"), tmp_path)
    try:
        kids = children_once_started(p, out)
        store = ControlStore(out / "live.sqlite", create=False)
        wait_until(lambda: sum(e["kind"] == "equity" for e in store.events(0, 100_000)) >= 3
                   or p.proc.poll() is not None, 30, "three steps")
        p.proc.terminate()
        assert p.wait(30) == 0, p.tail()
        gone, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, ([(k.cmdline(), k.status()) for k in alive], p.tail())
    finally:
        p.stop()
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["status"], manifest["error"]) == ("stopped", None)
    steps = manifest["details"]["session"]["steps"]
    assert 3 <= steps < 20 and table(out, "equity").height == steps   # the replay was not over


def test_identical_sessions_record_identical_manifests_and_a_given_broker_as_given(tmp_path):
    """The broker and exchange a session starts are recorded as such, not by their loopback ports, and the state
    file by its name in the run folder: two identical sessions have identical manifests. ``--mqtt URL`` is
    recorded as given."""
    manifests = []
    for name in ("a", "b"):
        done = cli(*paper_args("tests.operator_strategies:BigOrders", tmp_path / name))
        assert done.returncode == 0, done.stderr[-2000:]
        manifests.append(json.loads((tmp_path / name / "manifest.json").read_text()))
    live = manifests[0]["config"]["live"]
    assert (live["mqtt"], live["fix"], live["state"]) == (LOCAL_MQTT, LOCAL_EXCHANGE, "live.sqlite")
    assert manifests[0] == manifests[1]
    assert manifests[0]["status"] == "completed" and manifests[0]["error"] is None

    (tmp_path / "broker").mkdir()
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        done = cli(*paper_args("tests.operator_strategies:BigOrders", tmp_path / "c", "--mqtt", broker.url))
    finally:
        broker.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    given = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert given["config"]["live"]["mqtt"] == broker.url and given["config"]["live"]["fix"] == LOCAL_EXCHANGE
    assert {k: v for k, v in given.items() if k != "config"} == {k: v for k, v in manifests[0].items() if k != "config"}
