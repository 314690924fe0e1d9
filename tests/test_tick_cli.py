"""Tick backtests from the command line and the config: recorded like any run (manifest, metrics, report)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tradeloop.brokers.costs import PercentCommission
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import RunConfig
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tests.conftest import SHARED_DATA, need

ROOT = Path(__file__).resolve().parents[1]
VNPY = SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv"

STRATEGY = '''
from tradeloop import Param, Strategy


class EmaTicks(Strategy):
    """EMA(alpha) of the mid: cross up and flat -> buy 1, cross down and long -> sell 1."""

    alpha = Param(0.01, "EMA weight", min=0.0, max=1.0)
    fail_after = Param(0, "raise after this many ticks (0: never)", min=0)

    def on_start(self, ctx):
        self.ema = self.prev = 0.0
        self.first = True
        self.seen = 0

    def on_tick(self, ctx, t):
        self.seen += 1
        if self.fail_after and self.seen > self.fail_after:
            raise RuntimeError("boom")
        mid = (t.bid + t.ask) / 2.0
        if self.first:
            self.ema, self.first = mid, False
            return
        ema = self.ema = self.ema + self.alpha * (mid - self.ema)
        d = mid - ema
        prev, self.prev = self.prev, d
        if prev <= 0.0 < d:
            if ctx.position(t.symbol) == 0:
                ctx.buy(t.symbol, 1)
        elif prev >= 0.0 > d and ctx.position(t.symbol) == 1:
            ctx.sell(t.symbol, 1)
'''


@pytest.fixture()
def strat(tmp_path):
    need(VNPY)
    p = tmp_path / "ema_ticks.py"
    p.write_text(STRATEGY)
    return f"{p}:EmaTicks"


def _fills(rows):
    return [(f.ts, f.side.name, f.price, f.qty) for f in rows]


def test_cli_tick_backtest_writes_a_complete_run_folder(tmp_path, strat):
    out = tmp_path / "run"
    assert main(["backtest", strat, "--ticks", str(VNPY), "--cash", "1000000", "--out", str(out), "--quiet"]) == 0
    for name in ("manifest.json", "metrics.json", "report.html", "events.jsonl"):
        assert (out / name).exists(), name
    man = json.loads((out / "manifest.json").read_text())
    assert man["kind"] == "backtest" and man["status"] == "completed"
    (inp,) = man["inputs"]
    assert inp["kind"] == "ticks" and inp["symbol"] == "RM705" and inp["rows"] == 16979 and len(inp["sha256"]) == 64
    assert man["fill_rules"]["quotes"]["size_limit"] is True
    assert man["fill_rules"]["quotes"]["latency"]["entry_ns"] == 0
    assert man["config"]["data"][0]["kind"] == "ticks"
    # the fills equal run_tick_backtest's on the same file and rules
    import importlib.util
    spec = importlib.util.spec_from_file_location("ema_ticks", strat.rpartition(":")[0])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = run_tick_backtest(mod.EmaTicks(), [load_ticks(VNPY)], cash=1e6,
                            rules=FillRules(commission=PercentCommission(0.0)), quotes=QuoteRules())
    assert len(ref.fills) > 50
    fills = pl.read_parquet(out / "fills.parquet")
    assert fills.height == len(ref.fills)
    assert fills["price"].to_list() == [f.price for f in ref.fills]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final_value"] == pytest.approx(ref.final_value)


def test_config_ticks_and_quotes_latency_trade_from(tmp_path, strat):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(f'''
[run]
strategy = "{strat}"
cash = 1000000
trade_from = "2017-03-20T10:00"

[[data]]
path = "{VNPY}"
kind = "ticks"

[quotes]
size_limit = false
entry_ms = 250
jitter = "uniform"
jitter_ms = 100
seed = 3
''')
    cfg = RunConfig.load(cfg_file).validate()
    result, out = backtest(cfg, out=tmp_path / "run")
    ref = run_tick_backtest(__import__("importlib").import_module("ema_ticks").EmaTicks(), [load_ticks(VNPY)],
                            cash=1e6, quotes=QuoteRules(size_limit=False, latency=Latency(
                                entry_ns=250_000_000, jitter="uniform", jitter_ns=100_000_000, seed=3)),
                            trade_from=int(np.datetime64("2017-03-20T10:00", "ns").astype(np.int64)))
    assert _fills(result.fills) == _fills(ref.fills) and result.fills
    assert min(f.ts for f in result.fills) >= int(np.datetime64("2017-03-20T10:00", "ns").astype(np.int64))
    man = json.loads((out / "manifest.json").read_text())
    assert man["fill_rules"]["quotes"]["latency"]["jitter"] == "uniform"
    assert man["span"]   # metrics over the traded span
    again = RunConfig.from_dict(man["config"])
    assert again.quotes == cfg.quotes and again.data[0].kind == "ticks"


def test_tick_strategy_failure_writes_a_failed_run(tmp_path, strat):
    out = tmp_path / "run"
    rc = main(["backtest", strat, "--ticks", str(VNPY), "--param", "fail_after=500", "--out", str(out), "--quiet"])
    assert rc != 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["status"] == "failed" and "boom" in man["error"]


def test_ticks_from_the_catalog(tmp_path, strat):
    cat = tmp_path / "cat"
    assert main(["data", "import", "--ticks", str(VNPY), "--catalog", str(cat)]) == 0
    out = tmp_path / "run"
    assert main(["backtest", strat, "--catalog", str(cat), "--ticks", "RM705", "--out", str(out), "--quiet"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["inputs"][0]["catalog"] == str(cat) and man["inputs"][0]["rows"] == 16979
    direct = tmp_path / "direct"
    assert main(["backtest", strat, "--ticks", str(VNPY), "--out", str(direct), "--quiet"]) == 0
    assert (json.loads((out / "metrics.json").read_text())["final_value"]
            == json.loads((direct / "metrics.json").read_text())["final_value"])


@pytest.mark.parametrize("setting, words", [
    ("quotes.entry_ms=-1", "quotes.entry_ms"),
    ("quotes.jitter=gauss", "quotes.jitter"),
    ("quotes.limit_on=mid", "quotes.limit_on"),
    ("quotes.size_limit=3", "quotes"),
    ("quotes.seed=-2", "quotes.seed"),
    ("quotes.latency=5", "quotes"),
])
def test_bad_quote_settings_are_one_line_errors(tmp_path, strat, capsys, setting, words):
    rc = main(["backtest", strat, "--ticks", str(VNPY), "--set", setting, "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and words in err, err


def test_bad_tick_kind_in_config(tmp_path, strat):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text(f'[run]\nstrategy = "{strat}"\n[[data]]\npath = "{VNPY}"\nkind = "quotes"\n')
    assert main(["backtest", "--config", str(cfg_file), "--out", str(tmp_path / "r")]) == 2


def test_parquet_ticks_load_compact_and_exact(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    need(VNPY)
    s = load_ticks(VNPY)
    t = pa.table({"ts": pa.array(s.ts, pa.timestamp("ns")), "bid": s.bid, "ask": s.ask, "bid_size": s.bid_size,
                  "ask_size": s.ask_size, "last": s.price, "last_volume": s.size})
    p = tmp_path / "rm.parquet"
    pq.write_table(t, p, row_group_size=5000)
    for compact in (False, True):
        q = load_ticks(p, "RM705", compact=compact)
        assert len(q) == len(s) and q.symbol == "RM705"
        for f in ("ts", "price", "size", "bid", "ask", "bid_size", "ask_size"):
            assert np.array_equal(np.asarray(getattr(q, f), np.float64 if f != "ts" else np.int64),
                                  getattr(s, f)), f
        assert (q.bid.dtype == np.float32) is compact
        r1 = run_tick_backtest(_ema(), [q], cash=1e6)
        r0 = run_tick_backtest(_ema(), [s], cash=1e6)
        assert _fills(r1.fills) == _fills(r0.fills) and r1.fills
        assert np.array_equal(r1.equity, r0.equity)
    # a value float32 cannot hold keeps its column float64
    t2 = t.set_column(1, "bid", pa.array(s.bid + 0.1))
    pq.write_table(t2.set_column(2, "ask", pa.array(s.ask + 0.1)), p, row_group_size=5000)
    q = load_ticks(p, compact=True)
    assert q.bid.dtype == np.float64 and np.array_equal(q.bid, s.bid + 0.1)
    # a bad row names its row
    bad = s.ask.copy()
    bad[7000] = s.bid[7000] - 1
    pq.write_table(t.set_column(2, "ask", pa.array(bad)), p, row_group_size=5000)
    from tradeloop.data.errors import DataError
    with pytest.raises(DataError, match="row 7001"):
        load_ticks(p)


def _ema():
    import importlib.util
    import sys
    import tempfile
    d = Path(tempfile.mkdtemp())
    (d / "ema_ticks_mod.py").write_text(STRATEGY)
    spec = importlib.util.spec_from_file_location("ema_ticks_mod", d / "ema_ticks_mod.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.EmaTicks()
