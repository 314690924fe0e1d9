"""Building a run's risk pipeline from its ``[risk]`` section (:mod:`tradeloop.risk.config`).

The pipeline's checks run in this order: operator halts (live runs with a state file: risk/control.py),
lots (market profile) or quantity steps (instruments), minimum notional (instruments), limit-move halt, drawdown stop,
sellable quantity (market profile or no short selling), max position, max gross exposure, price
collar, order rate, cash; then the review gate. Cheap refusals come first; cash is reserved only
for orders that passed everything else.
"""
from __future__ import annotations

from collections.abc import Callable

from tradeloop.brokers.orders import Order
from tradeloop.brokers.sim import FillRules
from tradeloop.errors import ConfigError
from tradeloop.risk.checks import (CollarCheck, GrossExposureCheck, LotCheck, MaxPositionCheck, MinNotionalCheck,
                                   RateCheck, SellableCheck, StepCheck)
from tradeloop.risk.config import RiskSection
from tradeloop.risk.control import OperatorGuard
from tradeloop.risk.drawdown import DrawdownGuard
from tradeloop.risk.halt import HaltGuard
from tradeloop.risk.pipeline import CashCheck, Check, RiskPipeline
from tradeloop.risk.review import PolicyReviewer, QueueReviewer, ReviewGate, load_policy
from tradeloop.risk.store import ControlStore, StoreError


def _checked(policy: Callable[[Order], bool], spec: str) -> Callable[[Order], bool]:
    """``policy`` whose answers must be True or False (anything else stops the run with a ConfigError)."""
    def answer(order: Order) -> bool:
        value = policy(order)
        if not isinstance(value, bool):
            raise ConfigError(f"risk.review.policy {spec} returned {value!r} for order {order.id}; "
                              "it must return True or False")
        return value
    return answer


def build_pipeline(r: RiskSection, rules: FillRules, *, allow_short: bool = False, state: str | None = None,
                   live: bool = False) -> RiskPipeline:
    """The risk pipeline of section ``r``; ``live`` puts reviews in the ``state`` file (``live.state``) instead of
    answering them by policy, waiting ``risk.review.timeout`` seconds of the wall clock, and takes operator
    commands from it (OperatorGuard). ``allow_short`` drops the sellable-quantity check where no market profile
    needs it."""
    r.validate()   # every key's type and range (risk/config.py), the review timeout when reviews are on
    market = rules.market
    checks: list[Check] = []
    try:
        table = rules.instruments
        if market is not None:
            checks.append(LotCheck(market.lot_size))   # the profile's instrument: lots, odd-lot sells
        elif any(i.qty_step > 0 for i in table.entries):
            checks.append(StepCheck(table))
        if any(i.min_notional > 0 for i in table.entries):
            checks.append(MinNotionalCheck(table))
        if r.halt.enabled:
            checks.append(HaltGuard(r.halt.move, r.halt.scope, r.halt.cancel_working))
        if r.drawdown.max is not None or r.drawdown.daily_loss is not None:
            checks.append(DrawdownGuard(r.drawdown.max, r.drawdown.daily_loss, r.drawdown.action))
        if market is not None or not allow_short:
            checks.append(SellableCheck(instruments=table if table.has_futures else None))
        if r.max_position is not None:
            checks.append(MaxPositionCheck(r.max_position))
        if r.max_gross is not None:
            checks.append(GrossExposureCheck(r.max_gross, instruments=table if table.has_futures else None))
        if r.collar is not None:
            checks.append(CollarCheck(r.collar))
        if r.max_orders_per_second is not None:
            checks.append(RateCheck(r.max_orders_per_second))
        futures = table if table.has_futures else None   # futures: margin instead of cash (CashCheck)
        if any(i.commission is not None for i in table.entries):   # per-instrument fee schedules
            checks.append(CashCheck(lambda symbol, *a: rules.fee_model(symbol)(symbol, *a), instruments=futures))
        else:
            checks.append(CashCheck(rules.commission, instruments=futures))
    except ValueError as e:
        raise ConfigError(f"[risk]: {e}") from None
    control = None
    if live and state:
        try:
            control = ControlStore(state)
        except StoreError as e:
            raise ConfigError(f"live.state: {e}") from None
    if control is not None:   # a person's halts and the kill switch refuse orders before anything else
        checks.insert(0, OperatorGuard())
    review = None
    if r.review.notional is not None:
        if live:
            if control is None:
                raise ConfigError("risk.review.notional is set: a live run needs live.state (--state FILE) "
                                  "to hold its review queue")
            reviewer = QueueReviewer(control, r.review.timeout)
        else:
            try:
                reviewer = PolicyReviewer(_checked(load_policy(r.review.policy), r.review.policy), r.review.policy)
            except ValueError as e:
                raise ConfigError(f"risk.review.policy: {e}") from None
        table = rules.instruments
        review = ReviewGate(r.review.notional, reviewer, instruments=table if table and table.has_futures else None)
    return RiskPipeline(checks, review=review, control=control)
