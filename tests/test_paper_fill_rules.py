"""``tradeloop paper`` fills with every fill model a backtest can use, because the exchange gets the rules as JSON.

Each test runs a real paper session (``engine/live/paper.py``'s ``paper(cfg)``: its own Mosquitto,
the exchange simulator process started with ``--rules fill_rules.json``, the live runner, a lockstep
replay) and the backtest of the same configuration, and asserts the same fills, to the last bit.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from tradeloop.brokers.orders import Side
from tradeloop.engine.live.paper import paper
from tests.live_procs import SHARED
from tests.test_live_parity import DAILY, backtest_fills, live_procs_mosquitto, parity_config, run_fills

ORCL = SHARED / "backtrader" / "orcl-2014.txt"


@pytest.fixture(autouse=True)
def _needs_mosquitto() -> None:
    if live_procs_mosquitto() is None:
        pytest.skip("the mosquitto binary is not installed (Debian: apt-get install mosquitto)")


def test_paper_with_per_share_commission_and_volume_share_slippage_makes_the_backtests_fills(tmp_path):
    """Models the old flag-based exchange refused: per-share fees, price impact growing with the volume taken."""
    if not ORCL.exists():
        pytest.skip(f"{ORCL} is not there")
    cfg = parity_config(ORCL, "sma_cross", {"fast": 3, "slow": 8, "size": 200_000}, 1e8, None)
    cfg.commission = {"kind": "per_share", "per_share": 0.005, "minimum": 1.0}
    cfg.slippage = {"kind": "volume_share", "impact": 0.5}
    expected = backtest_fills(cfg)
    unslipped = copy.deepcopy(cfg)
    unslipped.slippage = {"kind": "none"}
    at_model_price = backtest_fills(unslipped)

    _, folder = paper(copy.deepcopy(cfg), out=tmp_path / "paper")
    got = run_fills(folder)
    assert got.height == expected.height
    assert got.equals(expected)
    # the models were in force, not defaults: fees per share; buys dearer, sells cheaper than the model price
    # (never past the bar's high/low, so a fill at an open that is the low or high stays there)
    assert (expected["commission"] == expected["qty"] * 0.005).all()
    buy = expected["side"] == Side.BUY.value
    assert (expected["price"].filter(buy) >= at_model_price["price"].filter(buy)).all()
    assert (expected["price"].filter(~buy) <= at_model_price["price"].filter(~buy)).all()
    assert (expected["price"] != at_model_price["price"]).sum() > expected.height // 2
    written = json.loads((folder / "fill_rules.json").read_text())
    assert written["commission"] == {"kind": "per_share", "per_share": 0.005, "minimum": 1.0}
    assert written["slippage"] == {"kind": "volume_share", "impact": 0.5}


def test_paper_with_the_cn_a_profile_and_its_own_parameters_makes_the_backtests_fills(tmp_path):
    """China A-shares through the rules file: lots, T+1, price limits and the [market] fees as configured,
    not the profile's defaults (the old ``--market cn-a`` flag dropped them), with volume-share slippage."""
    if not DAILY.exists():
        pytest.skip(f"{DAILY} is not there")
    cfg = parity_config(DAILY, "sma_cross", {"fast": 3, "slow": 8, "size": 1000}, 1e7, None, market="cn-a")
    cfg.run.start, cfg.run.end = "2014-01-01", "2014-12-31"
    cfg.market.commission_rate, cfg.market.commission_min, cfg.market.stamp_duty = 0.0001, 1.0, 0.002
    cfg.slippage = {"kind": "volume_share", "impact": 0.5}
    expected = backtest_fills(cfg)

    _, folder = paper(copy.deepcopy(cfg), out=tmp_path / "paper")
    got = run_fills(folder)
    assert got.height == expected.height
    assert got.equals(expected)
    assert (expected["qty"] % 100 == 0).all()
    notional = (expected["qty"] * expected["price"]).to_numpy()
    sell = (expected["side"] == Side.SELL.value).to_numpy()
    fees = np.maximum(0.0001 * notional, 1.0) + 0.00001 * notional + np.where(sell, 0.002 * notional, 0.0)
    np.testing.assert_allclose(expected["commission"].to_numpy(), fees, rtol=1e-12)
    market = json.loads((folder / "fill_rules.json").read_text())["market"]
    assert market["name"] == "cn-a" and market["commission"]["stamp_duty"] == 0.002
