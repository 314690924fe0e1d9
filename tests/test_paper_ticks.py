"""A tick strategy's paper session makes exactly its tick backtest's fills.

``paper(cfg)`` on a tick input: its own Mosquitto, the exchange simulator process matching ticks with the
run's ``[quotes]`` rules (the rules file's ``"quotes"``: the tick backtest's QuoteVenue), the live runner
subscribed to ticks, and a lockstep replay of the tick file (one ``$clock`` per timestamp). The backtest is
``run_tick_backtest`` with the same QuoteRules and no latency.
"""
from __future__ import annotations

import copy
import json

import polars as pl
import pytest

from tradeloop.brokers.fill_config import (load_exchange_rules, load_rules, quote_rules_from_dict,
                                           quote_rules_to_dict, write_rules)
from tradeloop.brokers.quotes import Latency, QuoteRules
from tradeloop.brokers.sim import FillRules
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.assembly.build import build_quotes, build_rules
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.drivers.ticks import run_tick_backtest
from tradeloop.engine.loop.strategy import Param, Strategy
from tradeloop.errors import ConfigError
from tests.live_procs import SHARED
from tests.test_live_parity import live_procs_mosquitto, run_fills

VNPY = SHARED / "vnpy" / "RM705-2017-03-20.csv"
END = "2017-03-20 09:40:00"     # the first ~4,800 ticks (500 ms snapshots from 09:00)


class EmaMid(Strategy):
    """EMA(alpha) of the mid; the mid crossing above it while flat buys ``size``, crossing below while long sells."""

    alpha = Param(0.02, "EMA weight of each new mid", min=0.0, max=1.0)
    size = Param(1.0, "lots per entry", min=0.0)

    def on_start(self, ctx):
        self.ema, self.prev, self.first = 0.0, 0.0, True

    def on_tick(self, ctx, t):
        mid = (t.bid + t.ask) / 2.0
        if self.first:
            self.ema, self.first = mid, False
            return
        self.ema += self.alpha * (mid - self.ema)
        d = mid - self.ema
        prev, self.prev = self.prev, d
        pos = ctx.position(t.symbol)
        if prev <= 0.0 < d and pos == 0:
            ctx.buy(t.symbol, self.size)
        elif prev >= 0.0 > d and pos > 0:
            ctx.sell(t.symbol, pos)


def tick_config(**quotes) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy, cfg.run.cash, cfg.run.end = "tests.test_paper_ticks:EmaMid", 1_000_000.0, END
    cfg.params = {"alpha": 0.02, "size": 3.0}
    cfg.commission = {"kind": "percent", "rate": 0.0001}
    cfg.data = [DataSpec(str(VNPY), kind="ticks")]
    for k, v in quotes.items():
        setattr(cfg.quotes, k, v)
    return cfg


def tick_backtest_fills(cfg: RunConfig) -> pl.DataFrame:
    ticks = load_ticks(VNPY).between(None, _ns(END))
    res = run_tick_backtest(EmaMid(**cfg.params), [ticks], cash=cfg.run.cash, rules=build_rules(cfg),
                            quotes=build_quotes(cfg))
    f = res.fills
    return pl.DataFrame({"ts": [x.ts for x in f], "symbol": [x.symbol for x in f], "side": [x.side.value for x in f],
                         "qty": [float(x.qty) for x in f], "price": [float(x.price) for x in f],
                         "commission": [float(x.commission) for x in f]})


def _ns(text: str) -> int:
    from tradeloop.engine.assembly.build import _ts
    return _ts(text)


@pytest.mark.parametrize("size_limit", [True, False])
def test_tick_paper_session_makes_the_tick_backtests_fills(tmp_path, size_limit):
    """vn.py futures L1 snapshots: buys at the ask, sells at the bid, for at most the displayed size
    (``size_limit``: a 3-lot order may take several ticks), the rest working on the next ticks."""
    if live_procs_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")
    if not VNPY.exists():
        pytest.skip(f"{VNPY} is not there")
    from tradeloop.engine.live.paper import paper
    cfg = tick_config(size_limit=size_limit)
    expected = tick_backtest_fills(cfg)
    assert expected.height >= 20, "the comparison needs trades"
    _, folder = paper(copy.deepcopy(cfg), out=tmp_path / "paper")
    got = run_fills(folder)
    assert got.height == expected.height
    assert got.equals(expected)        # ts, side, qty, price, commission: bit for bit
    buys = expected.filter(pl.col("side") == "BUY")
    assert buys.height and expected.filter(pl.col("side") == "SELL").height
    written = json.loads((folder / "fill_rules.json").read_text())
    assert written["quotes"]["size_limit"] is size_limit
    live = json.loads((folder / "metrics.json").read_text()).get("live", {})
    assert live.get("ticks", 0) > 4000 and live.get("exchange_market_data_dropped") == {}


def test_paper_refuses_simulated_latency_on_ticks(tmp_path):
    with pytest.raises(ConfigError, match="latency"):
        from tradeloop.engine.live.paper import paper
        paper(tick_config(entry_ms=5.0), out=tmp_path / "paper")


def test_quote_rules_travel_in_the_rules_file_exactly_and_strictly(tmp_path):
    q = QuoteRules(size_limit=False, limit_on="trade", trade_through=False,
                   latency=Latency(entry_ns=5, data_ns=7, jitter="exponential", jitter_ns=3, seed=9))
    assert quote_rules_from_dict(quote_rules_to_dict(q)) == q
    path = write_rules(tmp_path / "r.json", FillRules(lot_size=1.0), q)
    assert load_exchange_rules(path) == (FillRules(lot_size=1.0), q)
    assert load_exchange_rules(write_rules(tmp_path / "b.json", FillRules())) == (FillRules(), None)
    with pytest.raises(ValueError, match="load_exchange_rules"):
        load_rules(path)          # a reader that knows no tick rules never drops them silently
    for bad, why in [({"size_limt": True}, "unknown key 'size_limt'"), ({"limit_on": "bar"}, "limit_on"),
                     ({"size_limit": "yes"}, "size_limit"), ({"latency": {"entry_ns": -1}}, ">= 0"),
                     ({"latency": {"entry_ns": 1.5}}, "entry_ns"), ({"latency": {"jitter": "gauss"}}, "jitter"),
                     ([], "expected an object")]:
        data = {"fill_at": "open", "quotes": bad}
        (tmp_path / "x.json").write_text(json.dumps(data))
        with pytest.raises(ValueError, match=why):
            load_exchange_rules(tmp_path / "x.json")


def test_replay_command_needs_data_or_ticks_and_refuses_ticks_without_a_trade_price(tmp_path, capsys):
    from tradeloop.data.replay import main
    with pytest.raises(SystemExit) as e:
        main(["--mqtt", "mqtt://127.0.0.1:1"])
    assert e.value.code == 2 and "--data and/or --ticks" in capsys.readouterr().err
    quotes_only = tmp_path / "q.csv"
    quotes_only.write_text("timestamp,bid,ask,bid_size,ask_size\n"
                           "2024-01-02 09:30:00,10.0,10.1,5,6\n2024-01-02 09:30:01,10.0,10.2,5,6\n")
    try:
        load_ticks(quotes_only)
    except Exception:   # noqa: BLE001  (the loaders read no such layout: nothing to check here)
        pytest.skip("no quote-only tick layout to test with")
    assert main(["--ticks", f"X={quotes_only}", "--mqtt", "mqtt://127.0.0.1:1"]) == 2
    assert "trade price" in capsys.readouterr().err
