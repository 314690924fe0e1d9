"""Corporate actions of equities (data.actions): dividends and splits from the data's own columns or an
actions file, applied at the ex-date's open; the adjusted-prices setting and the double-adjustment trap.

Expected cash and quantities are computed here from the raw files (csv module), not by the engine.
"""
from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tradeloop.brokers.orders import OrderStatus
from tradeloop.data.actions import load_actions, resolve, series_actions, split_adjusted
from tradeloop.data.errors import DataError
from tradeloop.data.loaders import load_bars
from tradeloop.engine.assembly.build import build_actions
from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.loop.strategy import Strategy

from tests.conftest import ORCL, SHARED_DATA, need

ZIP_AAPL = SHARED_DATA / "zipline" / "AAPL.csv.gz"
ZIP_MSFT = SHARED_DATA / "zipline" / "MSFT.csv.gz"
Q_ORCL = SHARED_DATA / "pyalgotrade" / "WIKI-ORCL-2000-quandl.csv"
CASH = 100_000.0

STRATEGY = '''
from tradeloop.engine.loop.strategy import Strategy

class BuyHold(Strategy):
    def on_bar(self, ctx, bar):
        if not ctx.position(bar.symbol) and not ctx.open_orders(bar.symbol):
            ctx.buy(bar.symbol, 100)
'''


class BuyHold(Strategy):
    """Buys (or shorts) ``qty`` at the first bar; optionally parks a far limit order before a date."""

    def __init__(self, qty: float = 100.0, limit_before: str | None = None) -> None:
        super().__init__()
        self.qty, self.limit_before = qty, limit_before
        self.seen: list[tuple[int, float, float, float, float]] = []
        self.parked = None

    def on_bar(self, ctx, bar) -> None:
        if not self.seen:
            (ctx.buy if self.qty > 0 else ctx.sell)(bar.symbol, abs(self.qty))
        day = str(np.datetime64(bar.ts, "ns").astype("datetime64[D]"))
        if self.limit_before and day == self.limit_before:
            self.parked = ctx.buy(bar.symbol, 10, limit=1.0)   # never fills: still working at the split
        self.seen.append((bar.ts, ctx.cash, ctx.position(bar.symbol), bar.close, ctx.equity))


def raw_rows(path: Path) -> list[dict[str, str]]:
    """The file's rows, ascending by date, read with the csv module (independent of the loaders)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    key = "date" if "date" in rows[0] else "Date"
    return sorted(rows, key=lambda r: r[key])


def hand(rows: list[dict[str, str]], qty: float, div: str, split: str, key: str, open_: str) -> tuple[float, float]:
    """(cash, qty) at the end: ``qty`` bought at row 1's open, then each later ex-date's dividend on the shares
    held at the previous close and each split multiplying them."""
    cash = CASH - qty * float(rows[1][open_])
    for r in rows[2:]:
        cash += qty * float(r[div])
        qty *= float(r[split]) if float(r[split]) > 0 else 1.0
    return cash, qty


def run(path: Path, strategy: Strategy, **setting) -> tuple[object, list[dict]]:
    cfg = RunConfig(data=[DataSpec(str(path), **setting)])
    series = [load_bars(path)]
    inputs = [{"path": str(path)}]
    actions = build_actions(cfg, series, inputs)
    return run_backtest(strategy, series, cash=CASH, actions=actions), inputs


def check_identity(result, strategy: BuyHold) -> None:
    """Equity at every step = cash + qty x close as the strategy saw them, and = the rebuilt curve, exactly."""
    seen = strategy.seen
    assert len(seen) == len(result.equity)
    for i, (ts, cash, qty, close, equity) in enumerate(seen):
        assert equity == cash + qty * close
        assert result.cash[i] == cash and result.equity[i] == equity, i


def test_loaders_keep_the_action_columns():
    z = load_bars(need(ZIP_MSFT))
    q = load_bars(need(Q_ORCL))
    assert set(z.extra) >= {"dividend", "split"} and set(q.extra) >= {"dividend", "split"}
    assert q.close[0] == 118.1   # the raw Close, not Adj. Close
    acts = series_actions(q)
    days = {str(np.datetime64(t, "ns").astype("datetime64[D]")): v for t, v in acts.items()}
    assert days == {"2000-01-19": (0.0, 2.0), "2000-10-13": (0.0, 2.0)}


def test_quandl_splits_against_a_hand_computation():
    rows = raw_rows(need(Q_ORCL))
    want_cash, want_qty = hand(rows, 100, "Ex-Dividend", "Split Ratio", "Date", "Open")
    assert want_qty == 400
    strat = BuyHold(limit_before="2000-01-18")
    result, inputs = run(Q_ORCL, strat)
    assert strat.seen[-1][2] == want_qty
    assert strat.seen[-1][1] == pytest.approx(want_cash, abs=1e-9)
    assert inputs[0]["corporate_actions"] == {"symbol": "WIKI-ORCL-2000-quandl", "listed": 2, "applied": 2,
                                              "adjusted": False, "adjusted_by": "detected"}
    # the split day: quantity doubled before the strategy saw the bar; the parked order cancelled ("split")
    by_day = {str(np.datetime64(t, "ns").astype("datetime64[D]")): q for t, _, q, _, _ in strat.seen}
    assert by_day["2000-01-18"] == 100 and by_day["2000-01-19"] == 200 and by_day["2000-10-13"] == 400
    assert strat.parked.status is OrderStatus.CANCELLED and strat.parked.reason == "split"
    assert [(a["split"], a["qty_before"], a["qty_after"], a["cancelled"]) for a in result.actions] == \
        [(2.0, 100, 200, 1), (2.0, 200, 400, 0)]
    check_identity(result, strat)


@pytest.mark.parametrize("qty", [100.0, -100.0], ids=["long", "short"])
def test_zipline_dividends_against_a_hand_computation(qty):
    rows = raw_rows(need(ZIP_MSFT))
    want_cash, want_qty = hand(rows, qty, "dividend", "split", "date", "open")
    strat = BuyHold(qty)
    result, inputs = run(ZIP_MSFT, strat)
    assert strat.seen[-1][2] == want_qty == qty
    assert strat.seen[-1][1] == pytest.approx(want_cash, abs=1e-9)
    paid = sum(a["cash"] for a in result.actions)
    assert paid == pytest.approx(qty * sum(float(r["dividend"]) for r in rows[2:]))
    assert (paid < 0) == (qty < 0)   # a short pays the dividends
    assert inputs[0]["corporate_actions"]["applied"] == 12
    check_identity(result, strat)


def test_double_adjustment_trap_is_detected_and_not_applied():
    s = load_bars(need(ZIP_AAPL))
    listed = series_actions(s)
    assert split_adjusted(s, listed) == ["2014-06-09"]   # split 7.0 listed, no 7x drop in the prices
    i = int(np.flatnonzero(s.ts == [t for t, v in listed.items() if v[1] == 7.0][0])[0])
    assert abs(math.log(s.close[i - 1] / s.open[i])) < 0.05
    table, note = resolve(s)
    assert len(table) == 0 and note["adjusted"] is True and note["adjusted_by"] == "detected"
    assert "NOT applied" in note["warning"] and "2014-06-09" in note["warning"]
    strat = BuyHold()
    result, inputs = run(ZIP_AAPL, strat)
    assert result.actions == [] and strat.seen[-1][2] == 100   # no split x7, no dividends
    assert strat.seen[-1][1] == CASH - 100 * s.open[1]
    # stated adjusted = false: the setting wins over the detection, and everything listed is applied
    strat = BuyHold()
    result, inputs = run(ZIP_AAPL, strat, adjusted=False)
    assert strat.seen[-1][2] == 700 and inputs[0]["corporate_actions"]["adjusted_by"] == "setting"
    check_identity(result, strat)


def test_adjusted_true_applies_nothing_and_warns():
    strat = BuyHold()
    result, inputs = run(need(Q_ORCL), strat, adjusted=True)
    assert result.actions == [] and strat.seen[-1][2] == 100
    assert "adjusted = true" in inputs[0]["corporate_actions"]["warning"]


def test_no_actions_changes_nothing():
    s = load_bars(need(ORCL))
    assert series_actions(s) == {}
    a, b = BuyHold(), BuyHold()
    plain = run_backtest(a, [s], cash=CASH)
    with_cfg, inputs = run(ORCL, b)
    assert np.array_equal(plain.equity, with_cfg.equity) and with_cfg.actions == []
    assert "corporate_actions" not in inputs[0]


def test_actions_file_and_cli_run_folder(tmp_path, capsys):
    need(ORCL)
    strat = tmp_path / "bh.py"
    strat.write_text(STRATEGY)
    acts = tmp_path / "actions.csv"
    acts.write_text("date,symbol,dividend,split\n2000-01-10,orcl-1995-2014,0.5,\n2000-01-15,OTHER,1,2\n")
    assert list(load_actions(acts)) == ["orcl-1995-2014", "OTHER"]
    out = tmp_path / "run"
    code = main(["backtest", f"{strat}:BuyHold", "--data", str(ORCL), "--set", f"run.actions={acts}",
                 "--set", "run.start=2000-01-03", "--set", "run.end=2000-03-01", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    table = pl.read_parquet(out / "actions.parquet")
    assert table["dividend"].to_list() == [0.5] and table["cash"].to_list() == [50.0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"][0]["corporate_actions"]["applied"] == 1
    # the trap through the CLI: a warning in the run's events and the manifest note
    out2 = tmp_path / "run2"
    assert main(["backtest", f"{strat}:BuyHold", "--data", str(need(ZIP_AAPL)), "--out", str(out2), "--quiet"]) == 0
    assert "double_adjustment" in (out2 / "events.jsonl").read_text()
    note = json.loads((out2 / "manifest.json").read_text())["inputs"][0]["corporate_actions"]
    assert "NOT applied" in note["warning"] and not (out2 / "actions.parquet").exists()


@pytest.mark.parametrize("body, line, field", [
    ("date,symbol,dividend,split\n2000-01-19,X,abc,2\n", 2, "dividend"),
    ("date,symbol,dividend,split\n2000-01-19,X,0,1\n2000-13-45,X,0,2\n", 3, "date"),
    ("date,symbol,dividend,split\n2000-01-19,X,0,-2\n", 2, "split"),
    ("date,symbol,dividend,split\n2000-01-19,,0,2\n", 2, "symbol"),
    ("date,dividend,split\n2000-01-19,0,2\n", 1, "symbol"),
])
def test_malformed_actions_file_is_one_line_naming_file_line_field(tmp_path, capsys, body, line, field):
    acts = tmp_path / "bad.csv"
    acts.write_text(body)
    with pytest.raises(DataError) as e:
        load_actions(acts)
    assert (e.value.line, e.value.field) == (line, field)
    code = main(["backtest", "sma_cross", "--data", str(need(ORCL)), "--set", f"run.actions={acts}",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{acts}:{line}" in err and f"field {field!r}" in err
