"""The China A-share market profile (``--market cn-a``) on real A-share files.

qbot: daily bars with the exchange's pre_close (forward-adjusted, plus one unadjusted file);
kronos: 5-minute bars of 600977.SH without pre_close (the prior day's last close is used).
"""
from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from tradeloop.brokers.costs import AShareCommission
from tradeloop.brokers.orders import Order, OrderStatus, Side
from tradeloop.brokers.profiles import ChinaAShares
from tradeloop.brokers.sim import FillRules, SimulatedVenue
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import NS_PER_DAY
from tradeloop.engine.drivers.backtest import run_backtest
from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.assembly.build import build_risk, build_rules
from tradeloop.risk.checks import LotCheck
from tradeloop.risk.pipeline import BatchState

from .helpers import Scripted, series

from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
QBOT = SHARED / "qbot"
KRONOS = SHARED / "kronos" / "XSHG_5min_600977.csv"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")

STOCKS = ["000002.SZ", "000651.SZ", "000858.SZ", "300059.SZ", "600036.SH", "600519.SH", "600519_unadjusted",
          "601318.SH", "601398.SH"]


def cn_parts(**run):
    """FillRules and RiskPipeline of a ``--market cn-a`` run, built from the configuration as the CLI does."""
    cfg = RunConfig()
    cfg.run.market = "cn-a"
    for k, v in run.items():
        setattr(cfg.run, k, v)
    rules = build_rules(cfg)
    return rules, build_risk(cfg, rules)


def limit(pre_close: float, rate: float, up: bool) -> float:
    """The exchange's limit price, computed by hand: pre_close x (1 +/- rate), rounded half up to 0.01."""
    x = Decimal(repr(pre_close)) * (Decimal(1) + (Decimal(repr(rate)) if up else -Decimal(repr(rate))))
    return float(x.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def limit_days(path: Path) -> tuple[list[int], list[int], np.ndarray]:
    """Rows whose close is at the day's limit-up / limit-down price, and the file's pct_chg column."""
    s = load_bars(path)
    raw = pl.read_csv(path).sort("trade_date")
    pct = raw["pct_chg"].to_numpy()
    rate = 0.10  # every file ends before ChiNext moved to 20% limits (2020-08-24) or is main board
    ups, downs = [], []
    for i in range(1, len(s)):
        pc = float(s.extra["pre_close"][i])
        if s.close[i] >= limit(pc, rate, True) - 0.005:
            ups.append(i)
        elif s.close[i] <= limit(pc, rate, False) + 0.005:
            downs.append(i)
    return ups, downs, pct


@pytest.mark.parametrize("name", STOCKS)
def test_no_buy_fills_at_limit_up_and_no_sell_fills_at_limit_down_on_real_daily_data(name):
    path = QBOT / f"{name}.csv"
    s = load_bars(path)
    ups, downs, pct = limit_days(path)
    assert ups or downs, f"{name}: expected real limit days in the file"
    # these are real limit days: the exchange's own change of the day is about +/-10%
    tol = 9.5 if name.startswith("300") else 9.9   # 300059's adjusted prices are ~1 CNY: coarse ticks
    assert all(pct[i] >= tol for i in ups) and all(pct[i] <= -tol for i in downs)
    base = next(i for i in range(1, len(s)) if i not in ups and i not in downs)   # buy shares to sell later
    ups, downs = [i for i in ups if i > base], [i for i in downs if i > base]
    script = {base: lambda c: c.buy(name, 10_000, tif="IOC")}
    for i in ups + downs:   # at the close of every limit day, try both sides (IOC: that close or nothing)
        script[i] = lambda c: (c.buy(name, 100, tif="IOC"), c.sell(name, 100, tif="IOC"))
    rules, risk = cn_parts(fill_at="close")
    res = run_backtest(Scripted(script), [s], cash=1e9, rules=rules, risk=risk)
    day_of = {int(s.ts[i]): i for i in ups + downs}
    fills = {(day_of.get(f.ts), f.side) for f in res.fills}
    for i in ups:
        assert (i, Side.BUY) not in fills, f"{name}: a buy filled at limit-up on row {i}"
        assert (i, Side.SELL) in fills, f"{name}: the sell on limit-up row {i} should fill"
    for i in downs:
        assert (i, Side.SELL) not in fills, f"{name}: a sell filled at limit-down on row {i}"
        assert (i, Side.BUY) in fills, f"{name}: the buy on limit-down row {i} should fill"
    unfilled = [o for o in res.orders if o.filled_qty == 0]
    assert len(unfilled) == len(ups) + len(downs)
    assert all(o.status is OrderStatus.CANCELLED for o in unfilled)   # IOC, never traded


def test_orders_for_a_day_that_opens_at_the_limit_do_not_fill_at_its_open():
    checked = 0
    for name in STOCKS:
        s = load_bars(QBOT / f"{name}.csv")
        pre = s.extra["pre_close"]
        up_open = [i for i in range(2, len(s)) if s.open[i] >= limit(float(pre[i]), 0.10, True) - 0.005]
        down_open = [i for i in range(2, len(s)) if s.open[i] <= limit(float(pre[i]), 0.10, False) + 0.005]
        script = {1: lambda c, name=name: c.buy(name, 50_000)}
        for i in up_open:
            script[i - 1] = lambda c, name=name: c.buy(name, 100, tif="IOC")
        for i in down_open:
            script[i - 1] = lambda c, name=name: c.sell(name, 100, tif="IOC")
        rules, risk = cn_parts()
        res = run_backtest(Scripted(script), [s], cash=1e9, rules=rules, risk=risk)
        blocked = {int(s.ts[i]) for i in up_open + down_open}
        assert not [f for f in res.fills if f.ts in blocked and f.qty == 100], name
        tries = [o for o in res.orders if o.qty == 100]
        assert len(tries) == len(blocked)
        assert all(o.status is OrderStatus.CANCELLED and o.filled_qty == 0 for o in tries), name  # reached the venue
        checked += len(blocked)
    assert checked >= 20   # one-price limit days across the files


def test_the_kronos_5_minute_file_never_reaches_its_limits():
    s = load_bars(KRONOS)
    p = ChinaAShares()
    from tradeloop.engine.loop.market import prior_day_close
    pc = prior_day_close(s)
    assert np.isnan(pc[:28]).all() and pc[28] == s.close[27]   # first day unknown, then the prior day's close
    bands = [p.limits(s.symbol, int(t), c) for t, c in zip(s.ts, pc, strict=True)]
    assert all(b is None or (b[0] < lo and hi < b[1]) for b, lo, hi in zip(bands, s.low, s.high, strict=True))


def test_fill_quantities_are_whole_lots_on_real_data():
    cfg = RunConfig()
    cfg.run.strategy = "momentum_rotation"
    cfg.run.market = "cn-a"
    cfg.run.cash = 1_000_000.0
    cfg.params = {"lookback": 20, "top": 2, "rebalance": 5}
    cfg.data = [DataSpec(str(QBOT / f"{n}.csv")) for n in ("600519.SH", "000858.SZ", "601318.SH", "300059.SZ")]
    res, _ = backtest(cfg, write=False, progress=False)
    assert len(res.fills) > 100
    held: dict[str, float] = {}
    for f in res.fills:
        held[f.symbol] = held.get(f.symbol, 0.0) + f.signed_qty
        whole_position_sell = f.side is Side.SELL and held[f.symbol] == 0
        assert f.qty % 100 == 0 or whole_position_sell, f
        assert held[f.symbol] >= 0   # no short selling in cn-a


def test_odd_lot_buys_are_refused_and_odd_lots_can_only_be_sold_whole():
    class Account:
        cash, equity, now = 1e9, 1e9, 0

        def position(self, s):
            return 150.0

        def sellable(self, s):
            return 150.0

        def working(self, s):
            return 0.0

        def working_sells(self, s):
            return 0.0

        def price(self, s):
            return 10.0

    check, state = LotCheck(100), BatchState(Account())

    def verdict(side, q):
        return check(Order("O1", "600000.SH", side, q), state)

    assert verdict(Side.BUY, 150).reason == "buy 150 is not a multiple of the 100-share lot"
    assert verdict(Side.BUY, 200) is None
    assert verdict(Side.SELL, 100) is None
    assert verdict(Side.SELL, 150) is None        # the whole position, odd lot included
    assert "odd lots can only be sold as the whole position (150)" in verdict(Side.SELL, 50).reason


def test_the_venue_fills_an_odd_remainder_only_as_a_whole():
    class Sink:
        fills: list = []

        def affordable(self, *a):
            return None

        def on_fill(self, fill, order):
            self.fills.append(fill.qty)

        def on_order_event(self, *a):
            pass

        def pre_close(self, s):
            return 10.0

        def sellable(self, s):
            return 150.0

    p = ChinaAShares()
    venue = SimulatedVenue(FillRules(lot_size=100, participation=0.12, commission=p.commission, market=p), Sink())
    venue.submit(Order("O1", "600000.SH", Side.SELL, 150.0), 0)
    for ts in (1, 2, 3):
        venue.on_bar("600000.SH", ts, 10.0, 10.0, 10.0, 10.0, 1000.0)   # 12% of 1000 = 120 per bar
    assert Sink.fills == [100.0, 50.0]


def test_t_plus_1_refuses_selling_shares_bought_the_same_day_on_5_minute_bars():
    s = load_bars(KRONOS)
    sym = s.symbol
    seen = []
    script = {30: lambda c: (c.buy(sym, 100), c.buy(sym, 100_000)),      # fill at row 31, 2024-06-19 09:50
              40: lambda c: (seen.append((c.position(sym), c.sellable(sym))), c.sell(sym, 100)),  # same day: refused
              76: lambda c: (seen.append((c.position(sym), c.sellable(sym))),
                             c.sell(sym, 100), c.sell(sym, 100_000))}    # next day: both fill at row 77
    rules, risk = cn_parts()
    strat = Scripted(script)
    res = run_backtest(strat, [s], cash=2_000_000.0, rules=rules, risk=risk)
    assert seen == [(100_100, 0), (100_100, 100_100)]
    same_day = res.orders[2]
    assert same_day.status is OrderStatus.REJECTED
    assert same_day.reason == ("sellable: sell 100 XSHG_5min_600977 exceeds the 0 sellable; 100100 bought today "
                               "are not sellable until the next trading day (T+1)")
    assert [(f.side, f.qty, f.ts) for f in res.fills] == [
        (Side.BUY, 100, s.ts[31]), (Side.BUY, 100_000, s.ts[31]), (Side.SELL, 100, s.ts[77]),
        (Side.SELL, 100_000, s.ts[77])]
    assert any(e.check == "sellable" and e.action == "reject" and e.order_id == same_day.id for e in res.risk_events)
    # fees by hand: commission 0.025% (at least 5), transfer fee 0.001%, stamp duty 0.05% on sells
    # buy 100 @ 11.34: 1,134 -> 5 (minimum) + 0.01134
    # buy 100,000 @ 11.34: 1,134,000 -> 283.50 + 11.34
    # sell 100 @ 11.13: 1,113 -> 5 (minimum) + 0.01113 + 0.5565
    # sell 100,000 @ 11.13: 1,113,000 -> 278.25 + 11.13 + 556.50
    assert [f.price for f in res.fills] == [11.34, 11.34, 11.13, 11.13]
    assert [f.commission for f in res.fills] == pytest.approx([5.01134, 294.84, 5.56763, 845.88], abs=1e-9)


def test_the_venue_itself_holds_a_sell_of_todays_shares_until_the_next_day():
    """Orders that skip the pre-trade checks (the drawdown stop's flatten orders) still obey T+1."""
    from tradeloop.risk.pipeline import RiskPipeline
    bars = series("600000.SH", [(10.0, 10.0, 10.0, 10.0, 1e6)] * 6, step=NS_PER_DAY // 3)  # 3 bars a day
    rules, _ = cn_parts()
    strat = Scripted({0: lambda c: c.buy("600000.SH", 300), 1: lambda c: c.sell("600000.SH", 300)})
    res = run_backtest(strat, [bars], cash=1e6, rules=rules, risk=RiskPipeline([]))
    assert [(f.side, f.ts) for f in res.fills] == [(Side.BUY, bars.ts[1]), (Side.SELL, bars.ts[3])]


def test_fees_model_by_hand():
    fee = AShareCommission()
    assert fee("600000.SH", Side.BUY, 100, 10.0) == pytest.approx(5.0 + 0.01)
    assert fee("600000.SH", Side.SELL, 100, 10.0) == pytest.approx(5.0 + 0.01 + 0.5)
    assert fee("600000.SH", Side.BUY, 100_000, 10.0) == pytest.approx(250.0 + 10.0)
    custom = AShareCommission(rate=0.0003, minimum=0.0, stamp_duty=0.001, transfer_fee=0.0)
    assert custom("600000.SH", Side.SELL, 1000, 10.0) == pytest.approx(3.0 + 10.0)


def ns(date: str) -> int:
    return int(np.datetime64(date, "ns").astype(np.int64))


@pytest.mark.parametrize("date, buy_stamp, sell_stamp", [
    ("2005-06-01", 0.001, 0.001),      # both sides, 0.1%
    ("2007-06-01", 0.003, 0.003),      # after 2007-05-30: 0.3% both sides
    ("2008-05-05", 0.001, 0.001),      # after 2008-04-24: 0.1% both sides
    ("2008-09-19", 0.0, 0.001),        # from 2008-09-19: sells only
    ("2015-07-08", 0.0, 0.001),
    ("2023-08-25", 0.0, 0.001),
    ("2023-08-28", 0.0, 0.0005),       # halved from 2023-08-28
])
def test_stamp_duty_follows_the_official_schedule_by_the_fills_date(date, buy_stamp, sell_stamp):
    fee = AShareCommission(rate=0.0, minimum=0.0, transfer_fee=0.0)
    ts = ns(date) + 2 * 3_600_000_000_000          # 10:00 in Shanghai
    assert fee("600000.SH", Side.BUY, 1000, 10.0, ts) == pytest.approx(buy_stamp * 10_000)
    assert fee("600000.SH", Side.SELL, 1000, 10.0, ts) == pytest.approx(sell_stamp * 10_000)
    fixed = AShareCommission(rate=0.0, minimum=0.0, transfer_fee=0.0, stamp_duty=0.002)   # a number: sells, every date
    assert (fixed("600000.SH", Side.BUY, 1000, 10.0, ts), fixed("600000.SH", Side.SELL, 1000, 10.0, ts)) == \
        pytest.approx((0.0, 20.0))


def test_a_2015_backtest_pays_2015_stamp_duty():
    """A sell on 2015 data pays 0.1% (the 0.05% of today would understate every round trip)."""
    s = load_bars(QBOT / "600519_unadjusted.csv")
    s = s.between(ns("2015-06-01"), ns("2015-06-10"))
    sym = s.symbol
    rules, risk = cn_parts()
    res = run_backtest(Scripted({0: lambda c: c.buy(sym, 1000), 3: lambda c: c.sell(sym, 1000)}), [s],
                       cash=1e7, rules=rules, risk=risk)
    buy, sell = res.fills
    notional = sell.qty * sell.price
    assert sell.commission == pytest.approx(0.00025 * notional + 0.00001 * notional + 0.001 * notional)
    assert buy.commission == pytest.approx(0.00025 * buy.qty * buy.price + 0.00001 * buy.qty * buy.price)


@pytest.mark.parametrize("symbol, ts, expected", [
    ("600519.SH", "2020-01-02", 0.10), ("000002.SZ", "2020-01-02", 0.10), ("XSHG_5min_600977", "2024-06-19", 0.10),
    ("300059.SZ", "2020-08-21", 0.10), ("300059.SZ", "2020-08-24", 0.20), ("688981.SH", "2020-01-02", 0.20),
    ("600001.SH", "2020-01-02", 0.05),
])
def test_limit_rates_by_board(symbol, ts, expected):
    p = ChinaAShares(st=frozenset({"600001.SH"}))
    assert p.limit_rate(symbol, int(np.datetime64(ts, "ns").astype(np.int64))) == expected


def test_limit_prices_round_half_up_to_the_tick():
    p = ChinaAShares()
    assert p.limits("600519.SH", 0, 205.7) == (185.13, 226.27)     # 2015-04-16: closed at 226.27, limit-up
    assert p.limits("600519.SH", 0, 10.05) == (9.05, 11.06)        # 11.055 rounds up
    assert p.limits("600519.SH", 0, float("nan")) is None


@pytest.mark.parametrize("argv, message", [
    (["--market", "us"], "unknown market 'us' (known: cn-a)"),
    (["--set", "market.lot_size=100", "--set", "market.st=600001.SH"], "[market] is set but no market is chosen"),
    (["--market", "cn-a", "--commission", "0.001"], "market cn-a sets its own fees"),
    (["--market", "cn-a", "--set", "market.main_limit=1.5"], "main_limit must be a fraction between 0 and 1"),
    (["--market", "cn-a", "--set", "market.nope=1"], "no key 'market.nope'"),
    (["--market", "cn-a", "--set", "market.chinext_20pct_from=soon"], "chinext_20pct_from must be a date"),
])
def test_market_configuration_errors_are_clear(tmp_path, capsys, argv, message):
    code = main(["backtest", "sma_cross", "--data", str(QBOT / "600519.SH.csv"), "--out", str(tmp_path / "r"),
                 "--quiet", *argv])
    assert code == 2
    assert message in capsys.readouterr().err


def test_a_symbol_without_an_a_share_code_is_refused(tmp_path, capsys):
    orcl = SHARED / "backtrader" / "orcl-2014.txt"
    assert main(["backtest", "sma_cross", "--data", str(orcl), "--market", "cn-a", "--out", str(tmp_path / "r")]) == 2
    assert "symbol 'orcl-2014' has no six-digit A-share code" in capsys.readouterr().err


def test_market_cn_a_from_the_cli_writes_the_resolved_rules_to_the_manifest(tmp_path):
    out = tmp_path / "r"
    assert main(["backtest", "sma_cross", "--data", str(QBOT / "600519_unadjusted.csv"), "--market", "cn-a",
                 "--param", "sizing=allin", "--cash", "1000000", "--set", "market.stamp_duty=0.001",
                 "--set", "market.st=600001.SH", "--out", str(out), "--quiet"]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["config"]["run"]["market"] == "cn-a"
    assert man["config"]["market"]["stamp_duty"] == 0.001 and man["config"]["market"]["st"] == ["600001.SH"]
    assert man["fill_rules"]["market"]["name"] == "cn-a" and man["fill_rules"]["lot_size"] == 100
    assert man["fill_rules"]["commission"] == {"kind": "cn_a", "rate": 0.00025, "minimum": 5.0, "stamp_duty": 0.001,
                                               "transfer_fee": 0.00001}
    fills = pl.read_parquet(out / "fills.parquet")
    assert fills.height > 0 and (fills["qty"] % 100 == 0).all()


def test_the_profile_alone_never_imports_the_engine():
    import subprocess
    import sys
    code = "import sys, brokers.sim, brokers.profiles; print(any(m.split('.')[0] == 'engine' for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_config_error_type():
    cfg = RunConfig()
    cfg.run.market = "cn-a"
    cfg.run.lot_size = 50
    with pytest.raises(ConfigError, match="run.lot_size 50 differs from market.lot_size 100"):
        build_rules(cfg)
