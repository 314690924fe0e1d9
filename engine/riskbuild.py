"""Building a run's market profile and risk pipeline from its configuration.

The pipeline's checks run in this order: lots (market profile), limit-move halt, drawdown stop,
sellable quantity (market profile or no short selling), max position, max gross exposure, price
collar, order rate, cash; then the review gate. Cheap refusals come first; cash is reserved only
for orders that passed everything else.
"""
from __future__ import annotations

from collections.abc import Callable

from brokers.costs import AShareCommission
from brokers.orders import Order
from brokers.profiles import PROFILES, ChinaAShares, MarketProfile
from brokers.sim import FillRules
from risk.checks import CollarCheck, GrossExposureCheck, LotCheck, MaxPositionCheck, RateCheck, SellableCheck
from risk.drawdown import ACTIONS, DrawdownGuard
from risk.halt import HaltGuard
from risk.pipeline import CashCheck, Check, RiskPipeline
from risk.review import PolicyReviewer, QueueReviewer, ReviewGate, load_policy
from risk.store import ControlStore, StoreError

from .config import ConfigError, RunConfig
from .riskconfig import MarketSection

DEFAULT_COMMISSION = {"kind": "percent", "rate": 0.0, "minimum": 0.0}


def market_profile(cfg: RunConfig) -> MarketProfile | None:
    """The profile ``run.market`` names, built from ``[market]``; None without one."""
    name = cfg.run.market
    if not name:
        if cfg.market != MarketSection():
            raise ConfigError("[market] is set but no market is chosen: give --market cn-a (or run.market)")
        return None
    if name not in PROFILES:
        raise ConfigError(f"unknown market {name!r} (known: {', '.join(sorted(PROFILES))})")
    if cfg.commission != DEFAULT_COMMISSION:
        raise ConfigError(f"market {name} sets its own fees: use [market] commission_rate, commission_min, "
                          "stamp_duty, transfer_fee instead of [commission] / --commission")
    if cfg.run.lot_size and cfg.run.lot_size != cfg.market.lot_size:
        raise ConfigError(f"run.lot_size {cfg.run.lot_size:g} differs from market.lot_size {cfg.market.lot_size}; "
                          "set the lot in [market]")
    m = cfg.market
    try:
        fees = AShareCommission(m.commission_rate, m.commission_min, m.stamp_duty, m.transfer_fee)
        for key in ("commission_rate", "commission_min", "stamp_duty", "transfer_fee"):
            if getattr(m, key) is not None and getattr(m, key) < 0:
                raise ValueError(f"{key} must not be negative, not {getattr(m, key)!r}")
        return ChinaAShares(lot_size=m.lot_size, t_plus_1=m.t_plus_1, tick=m.tick, main_limit=m.main_limit,
                            growth_limit=m.growth_limit, st_limit=m.st_limit, chinext_20pct_from=m.chinext_20pct_from,
                            st=frozenset(m.st), commission=fees)
    except ValueError as e:
        raise ConfigError(f"[market]: {e}") from None


def check_symbols(market: MarketProfile | None, symbols: list[str]) -> None:
    """Every symbol must be one the market knows (an A-share code for cn-a)."""
    board = getattr(market, "board", None)
    if board is None:
        return
    for symbol in symbols:
        try:
            board(symbol)
        except ValueError as e:
            raise ConfigError(f"market {market.name}: {e}") from None


def _positive(value: float | None, key: str) -> None:
    if value is not None and not value > 0:
        raise ConfigError(f"risk.{key} must be positive, not {value!r}")


def _checked(policy: Callable[[Order], bool], spec: str) -> Callable[[Order], bool]:
    """``policy`` whose answers must be True or False (anything else stops the run with a ConfigError)."""
    def answer(order: Order) -> bool:
        value = policy(order)
        if not isinstance(value, bool):
            raise ConfigError(f"risk.review.policy {spec} returned {value!r} for order {order.id}; "
                              "it must return True or False")
        return value
    return answer


def build_pipeline(cfg: RunConfig, rules: FillRules, *, live: bool = False) -> RiskPipeline:
    """The run's risk pipeline; ``live`` puts reviews in the ``live.state`` file instead of a policy."""
    r = cfg.risk
    for key in ("max_position", "max_gross", "max_orders_per_second", "collar"):
        _positive(getattr(r, key), key)
    if r.halt.scope not in ("symbol", "book"):
        raise ConfigError(f"risk.halt.scope must be 'symbol' or 'book', not {r.halt.scope!r}")
    if r.drawdown.action not in ACTIONS:
        raise ConfigError(f"risk.drawdown.action must be 'block' or 'flatten', not {r.drawdown.action!r}")
    market = rules.market
    checks: list[Check] = []
    try:
        if market is not None:
            checks.append(LotCheck(market.lot_size))
        if r.halt.enabled:
            checks.append(HaltGuard(r.halt.move, r.halt.scope, r.halt.cancel_working))
        if r.drawdown.max is not None or r.drawdown.daily_loss is not None:
            checks.append(DrawdownGuard(r.drawdown.max, r.drawdown.daily_loss, r.drawdown.action))
        if market is not None or not cfg.run.allow_short:
            checks.append(SellableCheck())
        if r.max_position is not None:
            checks.append(MaxPositionCheck(r.max_position))
        if r.max_gross is not None:
            checks.append(GrossExposureCheck(r.max_gross))
        if r.collar is not None:
            checks.append(CollarCheck(r.collar))
        if r.max_orders_per_second is not None:
            checks.append(RateCheck(r.max_orders_per_second))
        checks.append(CashCheck(rules.commission))
    except ValueError as e:
        raise ConfigError(f"[risk]: {e}") from None
    control = None
    if live and cfg.live.state:
        try:
            control = ControlStore(cfg.live.state)
        except StoreError as e:
            raise ConfigError(f"live.state: {e}") from None
    review = None
    if r.review.notional is not None:
        _positive(r.review.notional, "review.notional")
        _positive(r.review.timeout, "review.timeout")
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
        review = ReviewGate(r.review.notional, reviewer)
    return RiskPipeline(checks, review=review, control=control)
