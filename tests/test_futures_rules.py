"""Futures rules beyond accounting: daily price limits (data columns or the instrument's ``limit``), rolls of a
continuous position from one contract to the next, margin used over time. IF1706 (rqalpha) is the real data;
where a case needs a price at the limit or a second contract, the test says how it derives it from IF1706."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.conftest import need
from tests.test_futures import IF_FILE, MULT, RATE, Schedule, _series, if_rules, raw_if
from tradeloop.brokers.costs import PerShareCommission
from tradeloop.brokers.instruments import Instrument, InstrumentTable, instrument_from_dict
from tradeloop.brokers.orders import OrderStatus
from tradeloop.brokers.sim import FillRules
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import BarSeries
from tradeloop.engine.drivers.backtest import run_backtest


def _with_bar(ser: BarSeries, i: int, price: float) -> BarSeries:
    """``ser`` with bar ``i`` traded flat at ``price`` (open = high = low = close)."""
    cols = {k: getattr(ser, k).copy() for k in ("open", "high", "low", "close")}
    for c in cols.values():
        c[i] = price
    return dataclasses.replace(ser, **cols)


def test_if1706_carries_its_limit_columns():
    ser = load_bars(need(IF_FILE), "IF1706")
    assert ser.extra["limit_up"][0] == 3516.8 and ser.extra["limit_down"][0] == 2877.6
    assert "open_interest" in ser.extra and ser.extra["open_interest"][0] == 537


@pytest.mark.parametrize("side", [1, -1])
def test_if1706_no_buy_at_limit_up_no_sell_at_limit_down(side):
    # IF1706 never reached its limits on 2016-11-08: bar 50 is set to trade flat at the file's own HighLimitPx
    # (buy) / LowLimitPx (sell); the order placed at bar 49 would fill there at the limit, and does not: it keeps
    # working and fills at bar 51's real open
    opens, _ = raw_if()
    ser = load_bars(need(IF_FILE), "IF1706")
    lim = ser.extra["limit_up" if side > 0 else "limit_down"][50]
    res = run_backtest(Schedule({49: side}), [_with_bar(ser, 50, lim)], cash=2_000_000.0,
                       rules=if_rules(PerShareCommission(2.3)))
    (f,) = res.fills
    assert f.ts == int(ser.ts[51]) and f.price == opens[51] and f.side.sign == side
    assert res.orders[0].status is OrderStatus.FILLED
    # without the limit columns the same order fills at the limit price on bar 50
    plain = dataclasses.replace(_with_bar(ser, 50, lim), extra={})
    (g,) = run_backtest(Schedule({49: side}), [plain], cash=2_000_000.0, rules=if_rules(PerShareCommission(2.3))).fills
    assert g.ts == int(ser.ts[50]) and g.price == lim
    # the other side trades at the limit: a sell at limit-up, a buy at limit-down
    (h,) = run_backtest(Schedule({49: -side}), [_with_bar(ser, 50, lim)], cash=2_000_000.0,
                        rules=if_rules(PerShareCommission(2.3))).fills
    assert h.ts == int(ser.ts[50]) and h.price == lim


def test_instrument_limit_from_previous_close_by_hand():
    # daily bars, previous close 3000, limit 10% -> limit-up 3300.0, limit-down 2700.0 (tick 0.2)
    day = np.int64(86_400 * 10**9)
    ts = np.datetime64("2024-01-02T07:00", "ns").astype(np.int64) + np.arange(5) * day
    o = np.array([3000.0, 3000.0, 3300.0, 3250.0, 3200.0])
    c = np.array([3000.0, 3000.0, 3300.0, 3260.0, 3200.0])
    ser = BarSeries("IF2403", ts, o, np.maximum(o, c), np.minimum(o, c), c, np.full(5, 100.0))
    inst = instrument_from_dict({"pattern": "IF*", "asset_class": "future", "multiplier": MULT, "margin": RATE,
                                 "tick": 0.2, "qty_step": 1, "limit": 0.1, "commission": "per_share"}, "t")
    rules = FillRules(instruments=InstrumentTable((inst,)))
    res = run_backtest(Schedule({1: 1}), [ser], cash=1_000_000.0, rules=rules)
    (f,) = res.fills   # bar 2 opens at 3300.0 = 3000 x 1.1: limit-up, no buy; bar 3 at 3250
    assert f.ts == int(ts[3]) and f.price == 3250.0
    # without the limit it fills at 3300 on bar 2
    free = FillRules(instruments=InstrumentTable((dataclasses.replace(inst, limit=None),)))
    (g,) = run_backtest(Schedule({1: 1}), [ser], cash=1_000_000.0, rules=free).fills
    assert g.ts == int(ts[2]) and g.price == 3300.0
    with pytest.raises(Exception, match="limit"):
        instrument_from_dict({"pattern": "X", "limit": 1.5}, "t")


# ------------------------------------------------------------------------------------------------ rolls
# /work/shared/data holds one futures contract with minute bars (IF1706); the next contract here is IF1706
# shifted: "IF1709" = IF1706's prices + 25.0 points, same timestamps, with a stated open interest that passes
# IF1706's real one at bar 120 (synthetic; the real IF1709 of that day is not in the data).
SHIFT, ROLL_BAR = 25.0, 120


def _two_contracts() -> tuple[BarSeries, BarSeries]:
    near = load_bars(need(IF_FILE), "IF1706")
    oi = near.extra["open_interest"]
    far_oi = np.where(np.arange(len(near)) >= ROLL_BAR, oi + 1, oi - 1)
    far = BarSeries("IF1709", near.ts, near.open + SHIFT, near.high + SHIFT, near.low + SHIFT, near.close + SHIFT,
                    near.volume, extra={"open_interest": far_oi})
    return near, far


@pytest.mark.parametrize("how", ["dates", "open_interest"])
def test_roll_closes_old_opens_new_with_costs_and_continuous_pnl(how):
    from tradeloop.engine.loop.rolls import rolls_by_dates, rolls_by_open_interest
    near, far = _two_contracts()
    if how == "dates":
        rolls = rolls_by_dates([(str(np.datetime64(int(near.ts[ROLL_BAR]), "ns")), "IF1706", "IF1709")])
    else:
        rolls = rolls_by_open_interest([near, far])
    assert [(r.ts, r.old, r.new) for r in rolls] == [(int(near.ts[ROLL_BAR]), "IF1706", "IF1709")]
    fee = 2.3
    s = Schedule({20: -2})   # on_bar runs per symbol (IF1706, IF1709): call 20 is IF1706 at bar 10; short 2
    start = 2_000_000.0
    res = run_backtest(s, [near, far], cash=start, rules=if_rules(PerShareCommission(fee)), rolls=rolls)
    roll_fills = [f for f in res.fills if res.orders[[o.id for o in res.orders].index(f.order_id)].tag == "roll"]
    assert [(f.symbol, f.side.sign * f.qty, f.ts) for f in roll_fills] == [
        ("IF1706", 2, int(near.ts[ROLL_BAR + 1])), ("IF1709", -2, int(near.ts[ROLL_BAR + 1]))]
    assert [f.commission for f in roll_fills] == [fee * 2, fee * 2]
    assert [f.price for f in roll_fills] == [near.open[ROLL_BAR + 1], near.open[ROLL_BAR + 1] + SHIFT]
    assert res.rolls and res.rolls[0]["qty"] == -2
    # PnL continuous: by hand, short 2 from bar 11's open, marked on IF1706 to the roll fill, then on IF1709;
    # the 25-point gap between the contracts is no PnL, only the fees are
    o, c = near.open, near.close
    hand = np.full(len(c), start)
    for t in range(11, len(c)):
        if t <= ROLL_BAR:
            hand[t] = start - fee * 2 - 2 * (c[t] - o[11]) * MULT
        else:
            pnl_old = -2 * (o[ROLL_BAR + 1] - o[11]) * MULT
            pnl_new = -2 * ((c[t] + SHIFT) - (o[ROLL_BAR + 1] + SHIFT)) * MULT
            hand[t] = start - fee * 6 + pnl_old + pnl_new
    np.testing.assert_allclose(res.equity, hand, rtol=1e-12)
    # equal to the one-contract run with the two extra fees
    one = run_backtest(Schedule({10: -2}), [near], cash=start, rules=if_rules(PerShareCommission(fee)))
    np.testing.assert_allclose(res.equity[ROLL_BAR + 1:], one.equity[ROLL_BAR + 1:] - 4 * fee, rtol=1e-12)
    # margin in use follows the contract held: IF1706 until the roll fill, IF1709 after
    assert res.margin is not None
    assert res.margin[ROLL_BAR] == pytest.approx(2 * c[ROLL_BAR] * MULT * RATE)
    assert res.margin[-1] == pytest.approx(2 * (c[-1] + SHIFT) * MULT * RATE)
    assert res.margin[5] == 0.0


def test_roll_without_a_position_sends_nothing():
    from tradeloop.engine.loop.rolls import rolls_by_open_interest
    near, far = _two_contracts()
    res = run_backtest(Schedule({}), [near, far], cash=1e6, rules=if_rules(), rolls=rolls_by_open_interest([near, far]))
    assert not res.fills and res.rolls[0]["qty"] == 0


# ------------------------------------------------------------------------------------------------ report
def test_report_shows_instrument_kinds_and_margin_and_leverage(tmp_path):
    from tradeloop.engine.cli.main import main
    import polars as pl
    cfg = tmp_path / "run.toml"
    cfg.write_text('[[instruments]]\npattern = "IF*"\nasset_class = "future"\nmultiplier = 300\nmargin = 0.2\n'
                   'maintenance_margin = 0.15\nlimit = 0.1\nqty_step = 1\ntick = 0.2\n')
    out = tmp_path / "run"
    assert main(["backtest", "sma_cross", "--config", str(cfg), "--data", str(need(IF_FILE)), "--symbol", "IF1706",
                 "--param", "size=1", "--cash", "2000000", "--out", str(out), "--quiet"]) == 0
    eq = pl.read_parquet(out / "equity.parquet")
    assert "margin" in eq.columns
    fills = pl.read_parquet(out / "fills.parquet")
    assert len(fills) > 0 and eq["margin"].max() > 0
    html = (out / "report.html").read_text()
    assert "Instruments: IF1706: future x300, margin 20.0%" in html and "limit 10.0%" in html
    assert "Margin used and leverage" in html and "Leverage (gross notional / equity)" in html


# ------------------------------------------------------------------------------ periods per year in research
def test_window_and_sweep_point_metrics_use_the_runs_periods_per_year():
    import math
    from tradeloop.engine.research.stitch import Span
    from tradeloop.engine.research.sweep import deflated_sharpe_of
    closes = [100, 101, 103, 102, 105, 104, 107, 108]
    day = np.int64(86_400 * 10**9)
    ts = np.datetime64("2024-01-01", "ns").astype(np.int64) + np.arange(len(closes)) * day
    c = np.array(closes, float)
    res = run_backtest(Schedule({0: 10}), [BarSeries("BTCUSD", ts, c, c, c, c, np.full(len(c), 1e6))], cash=10_000.0)
    span = Span.__new__(Span)
    span.result, span.handoff = res, []
    span.periods_per_year = 365
    m365 = span.metrics()
    span.periods_per_year = 252
    m252 = span.metrics()
    assert m365["periods_per_year"] == 365 and m252["periods_per_year"] == 252
    assert m365["sharpe"] == pytest.approx(m252["sharpe"] * math.sqrt(365 / 252))
    # the sweep's deflated Sharpe turns each point's annualised Sharpe into a daily one with the point's own P
    rows = [{"status": "ok", "sharpe": 2.0, "periods_per_year": 365, "skew": 0.0, "kurtosis": 3.0, "days": 400},
            {"status": "ok", "sharpe": 1.0, "periods_per_year": 365, "skew": 0.0, "kurtosis": 3.0, "days": 400}]
    out = deflated_sharpe_of(rows[0], rows)
    assert out["sharpe_daily"] == pytest.approx(2.0 / math.sqrt(365))
