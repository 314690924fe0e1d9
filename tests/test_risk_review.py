"""Large-order review in backtests: a policy answers every held order, and held orders never fill."""
from __future__ import annotations


import polars as pl
import pytest

from tradeloop.brokers.orders import Order, OrderStatus
from tradeloop.engine.cli.main import main
from tradeloop.errors import ConfigError
from tradeloop.engine.config.run import DataSpec, RunConfig
from tradeloop.engine.assembly.backtest import backtest

from tests.conftest import SHARED_DATA as SHARED  # noqa: E402  (../shared/data or $TRADELOOP_SHARED_DATA)
ORCL = SHARED / "backtrader" / "orcl-1995-2014.txt"
pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is not beside the checkout")


def only_cheap(order: Order) -> bool:
    """A review policy for the tests: approve orders placed below 20 a share."""
    return order.created_price < 20.0


def says_maybe(order: Order) -> str:
    return "maybe"


def sma_config(**risk: object) -> RunConfig:
    cfg = RunConfig()
    cfg.run.strategy = "sma_cross"
    cfg.params = {"size": 1000}
    cfg.commission = {"kind": "percent", "rate": 0.001}
    cfg.data = [DataSpec(str(ORCL))]
    for key, value in risk.items():
        cfg.override(f"risk.review.{key}={value!r}" if isinstance(value, str) else f"risk.review.{key}={value}")
    return cfg


def fills_of(res):
    return [(f.ts, f.symbol, f.side, f.qty, f.price, f.commission) for f in res.fills]


@pytest.fixture(scope="module")
def plain():
    return backtest(sma_config(), write=False, progress=False)[0]


def test_policy_reject_holds_then_rejects_every_order_and_nothing_fills(tmp_path, plain):
    res, out = backtest(sma_config(notional=1000.0, policy="reject"), out=tmp_path / "r", progress=False)
    assert res.fills == []
    buys = [o for o in plain.orders if o.side.value == "BUY"]
    assert len(res.orders) == len(buys) > 50     # each cross-up tries again: the strategy stays flat
    assert all(o.status is OrderStatus.REJECTED for o in res.orders)
    assert all(o.reason == "review: rejected by review policy reject" for o in res.orders)
    ev = pl.read_parquet(out / "risk_events.parquet")
    assert ev.columns == ["ts", "order_id", "symbol", "check", "action", "reason", "value"]
    assert ev["check"].unique().to_list() == ["review"]
    per_order = ev.group_by("order_id", maintain_order=True).agg(pl.col("action"))
    assert per_order.height == len(res.orders)
    assert per_order["action"].to_list() == [["hold", "reject"]] * len(res.orders)
    held = ev.filter(pl.col("action") == "hold")["reason"][0]
    assert held.startswith("notional ") and held.endswith("is at or above the review threshold 1,000.00")
    statuses = pl.read_parquet(out / "order_events.parquet").filter(pl.col("order_id") == res.orders[0].id)["status"]
    assert statuses.to_list() == ["HELD", "REJECTED"]


def test_policy_approve_gives_the_same_fills_as_no_review(plain):
    res, _ = backtest(sma_config(notional=1000.0, policy="approve"), write=False, progress=False)
    assert fills_of(res) == fills_of(plain)
    assert list(res.equity) == list(plain.equity)
    holds = [e for e in res.risk_events if e.action == "hold"]
    approves = [e for e in res.risk_events if e.action == "approve"]
    assert len(holds) == len(approves) == len(res.orders)
    assert [e.order_id for e in holds] == [e.order_id for e in approves]


def test_orders_below_the_threshold_are_not_held(plain):
    res, _ = backtest(sma_config(notional=1e9, policy="reject"), write=False, progress=False)
    assert fills_of(res) == fills_of(plain)
    assert res.risk_events == []


def test_a_python_policy_decides_order_by_order(plain):
    res, _ = backtest(sma_config(notional=1000.0, policy="tests.test_risk_review:only_cheap"), write=False,
                      progress=False)
    approved = {e.order_id for e in res.risk_events if e.action == "approve"}
    rejected = {e.order_id for e in res.risk_events if e.action == "reject"}
    assert approved and rejected
    by_id = {o.id: o for o in res.orders}
    assert all(by_id[i].created_price < 20 for i in approved) and all(by_id[i].created_price >= 20 for i in rejected)
    assert {f.order_id for f in res.fills} <= {o.id for o in res.orders if o.id in approved or o.side.value == "SELL"}


@pytest.mark.parametrize("policy, message", [
    ("maybe", "risk.review.policy: review policy 'maybe': use approve, reject or module:function"),
    ("tests.no_such_module:f", "cannot import tests.no_such_module"),
    ("tests.test_risk_review:nope", "has no function 'nope'"),
])
def test_bad_policies_are_clear_errors(policy, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        backtest(sma_config(notional=1000.0, policy=policy), write=False, progress=False)


def test_a_policy_that_does_not_answer_true_or_false_stops_the_run_with_a_clear_error(tmp_path, capsys):
    code = main(["backtest", "sma_cross", "--data", str(ORCL), "--set", "risk.review.notional=1000",
                 "--set", "risk.review.policy=tests.test_risk_review:says_maybe", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "returned 'maybe' for order O00000001; it must return True or False" in capsys.readouterr().err


def test_review_keys_from_the_cli_land_in_the_manifest(tmp_path):
    import json
    out = tmp_path / "r"
    assert main(["backtest", "sma_cross", "--data", str(ORCL), "--set", "risk.review.notional=1000000",
                 "--set", "risk.review.policy=approve", "--out", str(out), "--quiet"]) == 0
    review = json.loads((out / "manifest.json").read_text())["config"]["risk"]["review"]
    assert review == {"notional": 1_000_000.0, "policy": "approve", "timeout": 300.0}
