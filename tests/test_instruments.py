"""The instrument table (brokers/instruments.py): parsing and errors, pattern resolution, the manifest, fractional
crypto fills on real Bitstamp BTC/USD bars, minimum notional, and metrics annualised with 365 periods for 24/7."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from tradeloop.brokers.costs import AShareCommission, PercentCommission
from tradeloop.brokers.fill_config import rules_from_dict, rules_to_dict
from tradeloop.brokers.instruments import (Instrument, InstrumentTable, floor_step, instrument_from_dict,
                                           load_instruments, periods_per_year)
from tradeloop.brokers.orders import Side
from tradeloop.engine.assembly.backtest import backtest
from tradeloop.engine.assembly.build import build_risk, build_rules
from tradeloop.engine.cli.main import main
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.errors import ConfigError

from tests.conftest import SHARED_DATA, need

BTC = SHARED_DATA / "pyalgotrade" / "30min-bitstampUSD-2.csv"   # BTC/USD on Bitstamp, 30-min bars, 41 days
CRYPTO = {"pattern": "BTC*", "asset_class": "crypto", "qty_step": 0.0001, "min_notional": 10.0, "currency": "USD",
          "calendar": "crypto", "commission": {"kind": "percent", "rate": 0.001}}


# ------------------------------------------------------------------------------------------- parsing
def test_a_row_parses_with_its_fee_model_and_defaults():
    inst = instrument_from_dict(CRYPTO, "instruments #1")
    assert inst.qty_step == 0.0001 and inst.min_notional == 10.0 and inst.multiplier == 1.0
    assert inst.commission == PercentCommission(rate=0.001)
    assert inst.always_open and inst.margin is None
    assert instrument_from_dict({"pattern": "IF*", "asset_class": "future", "multiplier": 300, "margin": 0.12,
                                 "maintenance_margin": 0.1, "commission": "per_share"}, "x").multiplier == 300.0


@pytest.mark.parametrize("change, words", [
    ({"qty_step": -1}, "instruments #1.qty_step must be between 0 and"),
    ({"min_notional": "ten"}, "instruments #1.min_notional must be a number"),
    ({"asset_class": "bond"}, "instruments #1.asset_class must be one of"),
    ({"calendar": "mars"}, "instruments #1.calendar must be one of"),
    ({"multiplier": 10}, "instruments #1.multiplier must be 1 for asset_class 'crypto'"),
    ({"margin": 1.5}, "instruments #1.margin must be a fraction in (0, 1]"),
    ({"tick": float("inf")}, "instruments #1.tick must be a finite number"),
    ({"commission": {"kind": "percent", "rate": 5}}, "instruments #1.commission.rate must be between 0 and 0.1"),
    ({"commission": "free"}, "instruments #1.commission: unknown model 'free'"),
    ({"lots": 1}, "instruments #1: unknown key 'lots'"),
    ({"pattern": ""}, "instruments #1.pattern"),
])
def test_a_bad_row_is_an_error_naming_its_key(change, words):
    with pytest.raises(ConfigError) as e:
        instrument_from_dict({**CRYPTO, **change}, "instruments #1")
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_bad_row_through_the_cli_is_one_line_and_exit_2(tmp_path, capsys):
    need(BTC)
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[run]\nstrategy = "sma_cross"\n[[data]]\npath = "{BTC}"\nsymbol = "BTCUSD"\n'
                   '[[instruments]]\npattern = "BTC*"\nasset_class = "crypto"\nqty_step = -0.1\n')
    assert main(["backtest", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "instruments #1.qty_step must be between 0 and" in err, err
    assert not (tmp_path / "run").exists()


def test_files_csv_and_toml(tmp_path):
    csv = tmp_path / "inst.csv"
    csv.write_text("pattern,asset_class,qty_step,min_notional,currency,calendar,commission,commission.rate\n"
                   "BTC*,crypto,0.0001,10,USD,crypto,percent,0.001\n"
                   "ETH*,crypto,0.001,,USD,,,\n")
    rows = load_instruments(csv)
    assert [r.pattern for r in rows] == ["BTC*", "ETH*"]
    assert rows[0].commission == PercentCommission(0.001) and rows[1].commission is None
    assert rows[1].min_notional == 0.0 and rows[1].always_open   # crypto without a calendar: 24/7
    toml = tmp_path / "inst.toml"
    toml.write_text('[[instruments]]\npattern = "BTC*"\nasset_class = "crypto"\nqty_step = 0.0001\n')
    assert load_instruments(toml)[0].qty_step == 0.0001
    bad = tmp_path / "bad.csv"
    bad.write_text("pattern,qty_step\nBTC*,abc\n")
    with pytest.raises(ConfigError, match=r"bad.csv row 2.qty_step must be a number"):
        load_instruments(bad)
    cfg = RunConfig()
    cfg.run.instruments = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="run.instruments: .*missing.toml"):
        cfg.validate()


# ---------------------------------------------------------------------------------------- resolution
def test_exact_symbol_beats_patterns_then_the_first_matching_pattern_wins():
    t = InstrumentTable((Instrument("BTC*", "crypto", qty_step=0.001), Instrument("*USD", "fx"),
                         Instrument("BTCUSD", "crypto", qty_step=0.0001)))
    assert t.resolve("BTCUSD").qty_step == 0.0001           # exact name
    assert t.resolve("BTCEUR").qty_step == 0.001            # first glob in order
    assert t.resolve("EURUSD").asset_class == "fx"
    assert t.resolve("600519.SH") is None                   # no row: the run's own rules
    assert t.resolved(["BTCEUR", "600519.SH"])["600519.SH"] is None
    assert periods_per_year(t, ["EURUSD"]) == 252 and periods_per_year(t, ["EURUSD", "BTCEUR"]) == 365
    assert periods_per_year(None, ["BTCUSD"]) == 252


def test_floor_step_rounds_down_to_the_step_exactly():
    assert floor_step(0.30000000000000004, 0.1) == 0.3
    assert floor_step(158.32915, 0.0001) == 158.3291
    assert floor_step(299.9999999999, 100) == 300.0 and floor_step(250, 100) == 200.0


def test_cn_a_symbols_resolve_to_the_profile_lot_and_tick():
    cfg = RunConfig()
    cfg.run.market = "cn-a"
    rules = build_rules(cfg)
    inst = rules.instruments.resolve("600519.SH")
    assert inst.profile == "cn-a" and inst.qty_step == 100 == rules.market.lot_size
    assert inst.tick == rules.market.tick == 0.01 and inst.calendar == "cn-a" and inst.currency == "CNY"
    assert isinstance(inst.commission, AShareCommission) and inst.commission is rules.market.commission
    assert rules.qty_step("600519.SH") == 100 and periods_per_year(rules.instruments, ["600519.SH"]) == 252
    cfg.instruments = [{"pattern": "688*", "qty_step": 200}]
    with pytest.raises(ConfigError, match="market cn-a sets qty_step"):
        build_rules(cfg)


def test_fill_rules_json_round_trip_keeps_the_table():
    cfg = RunConfig()
    cfg.instruments = [dict(CRYPTO), {"pattern": "IF*", "asset_class": "future", "multiplier": 300, "margin": 0.12}]
    rules = build_rules(cfg)
    back = rules_from_dict(json.loads(json.dumps(rules_to_dict(rules))))
    assert back == rules and back.instruments.resolve("BTCUSD").commission == PercentCommission(0.001)
    d = rules_to_dict(rules)
    d["instruments"][0]["qty_step"] = -1
    with pytest.raises(ValueError, match=r"rules.instruments #1.qty_step"):
        rules_from_dict(d)


def test_pre_trade_checks_refuse_below_min_notional_and_off_step():
    from tradeloop.brokers.orders import Order, OrderType, TimeInForce
    from tradeloop.risk.pipeline import BatchState

    cfg = RunConfig()
    cfg.instruments = [dict(CRYPTO)]
    rules = build_rules(cfg)
    checks = {c.name: c for c in build_risk(cfg, rules).checks}
    assert {"qty_step", "min_notional"} <= set(checks)

    class Acct:
        def position(self, s): return 0.0
        def price(self, s): return 600.0

    state = type("S", (), {"account": Acct()})()
    mk = lambda q: Order("O1", "BTCUSD", Side.BUY, q, OrderType.MARKET, None, None, TimeInForce.GTC, 0, 600.0)
    v = checks["min_notional"](mk(0.01), state)
    assert v.action == "reject" and "notional 6.00 is below the minimum 10 USD (BTC*)" in v.reason
    assert checks["min_notional"](mk(0.02), state) is None
    assert "not a multiple of its quantity step 0.0001" in checks["qty_step"](mk(0.02005), state).reason
    assert checks["qty_step"](mk(0.0203), state) is None
    assert BatchState  # the real state type exists; the checks read only .account


# ----------------------------------------------------------------------------------- a crypto run
@pytest.fixture(scope="module")
def crypto_run(tmp_path_factory):
    need(BTC)
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.params = {"fast": 10, "slow": 30, "sizing": "allin", "target": 0.95}
    cfg.data = [DataSpec(str(BTC), symbol="BTCUSD")]
    cfg.instruments = [dict(CRYPTO)]
    _, out = backtest(cfg, out=tmp_path_factory.mktemp("btc") / "run", progress=False)
    return out


def test_crypto_fills_are_fractional_multiples_of_the_step(crypto_run):
    fills = pd.read_parquet(crypto_run / "fills.parquet")
    assert len(fills) > 10
    units = fills["qty"] / 0.0001
    assert ((units - units.round()).abs() < 1e-6).all()
    assert (fills["qty"] % 1 != 0).any()                       # not whole units
    assert (fills["qty"] * fills["price"] >= 10).all()
    fee = 0.001 * fills["qty"] * fills["price"]               # the instrument's fee schedule, in USD
    assert (fills["commission"] - fee).abs().max() < 1e-9


def test_the_manifest_carries_the_resolved_instrument_and_p(crypto_run):
    m = json.loads((crypto_run / "manifest.json").read_text())
    inst = m["instruments"]["BTCUSD"]
    assert inst["pattern"] == "BTC*" and inst["qty_step"] == 0.0001 and inst["min_notional"] == 10
    assert inst["commission"] == {"kind": "percent", "rate": 0.001, "minimum": 0.0}
    assert inst["calendar"] == "crypto" and inst["periods_per_year"] == 365
    assert m["periods_per_year"] == 365
    assert json.loads((crypto_run / "metrics.json").read_text())["periods_per_year"] == 365


def test_crypto_metrics_are_quantstats_with_365_periods(crypto_run):
    qs = pytest.importorskip("quantstats")
    m = json.loads((crypto_run / "metrics.json").read_text())
    eq = pd.read_parquet(crypto_run / "equity.parquet")
    s = pd.Series(eq["equity"].to_numpy(), index=pd.DatetimeIndex(eq["ts"]))
    eod = s.groupby(s.index.normalize()).last()
    ret = eod.pct_change()
    ret.iloc[0] = eod.iloc[0] / m["start_cash"] - 1.0
    assert m["days"] == len(ret) and (ret.index.day_of_week >= 5).any()   # weekends are trading days

    def rel(a, b):
        assert a is not None and math.isclose(a, float(b), rel_tol=1e-9), (a, b)

    rel(m["sharpe"], qs.stats.sharpe(ret, rf=0.0, periods=365))
    rel(m["sortino"], qs.stats.sortino(ret, rf=0.0, periods=365))
    rel(m["volatility"], qs.stats.volatility(ret, periods=365))
    rel(m["annual_return"], qs.stats.cagr(ret, periods=365))
    rel(m["calmar"], qs.stats.calmar(ret, periods=365))
    assert not math.isclose(m["sharpe"], float(qs.stats.sharpe(ret, rf=0.0, periods=252)), rel_tol=1e-3)


def test_an_order_below_min_notional_is_refused_with_the_reason(tmp_path):
    need(BTC)
    from tests.helpers import Scripted
    from tradeloop.data.loaders import load_bars
    from tradeloop.engine.drivers.backtest import run_backtest

    cfg = RunConfig()
    cfg.instruments = [dict(CRYPTO)]
    rules = build_rules(cfg)
    s = load_bars(BTC, "BTCUSD").between(None, None)
    strat = Scripted({0: lambda ctx: ctx.buy("BTCUSD", 0.01), 1: lambda ctx: ctx.buy("BTCUSD", 0.0345)})
    res = run_backtest(strat, [s], cash=10_000.0, rules=rules, risk=build_risk(cfg, rules))
    reasons = [r for _, status, r in strat.orders if status == "REJECTED"]
    assert any("below the minimum 10 USD" in (r or "") for r in reasons), strat.orders
    assert [f.qty for f in res.fills] == [0.0345]
