"""Commission and slippage models for the simulated venue.

Commission models are called once per fill with the fill's symbol, side, quantity and price
and return the fee in account currency. Slippage models move a fill price against the trader.
Both are small frozen dataclasses so a run's configuration can be written to its manifest.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol

from .orders import Side


class CommissionModel(Protocol):
    def __call__(self, symbol: str, side: Side, qty: float, price: float) -> float: ...


@dataclass(frozen=True, slots=True)
class PercentCommission:
    """``rate`` of the traded notional, at least ``minimum`` per fill (0.001 = 0.1%)."""

    rate: float = 0.0
    minimum: float = 0.0

    def __call__(self, symbol: str, side: Side, qty: float, price: float) -> float:
        fee = self.rate * abs(qty) * price
        return fee if fee >= self.minimum else self.minimum


@dataclass(frozen=True, slots=True)
class PerShareCommission:
    """``per_share`` for each unit traded, at least ``minimum`` per fill."""

    per_share: float = 0.0
    minimum: float = 0.0

    def __call__(self, symbol: str, side: Side, qty: float, price: float) -> float:
        fee = self.per_share * abs(qty)
        return fee if fee >= self.minimum else self.minimum


@dataclass(frozen=True, slots=True)
class AShareCommission:
    """China A-share fees: broker commission (``rate``, at least ``minimum`` per fill), stamp duty
    on sells and the exchange transfer fee on both sides, all as fractions of the traded notional.

    Defaults: 0.025% with a 5 CNY minimum, 0.05% stamp duty (since 2023-08-28), 0.001% transfer fee.
    """

    rate: float = 0.00025
    minimum: float = 5.0
    stamp_duty: float = 0.0005
    transfer_fee: float = 0.00001

    def __call__(self, symbol: str, side: Side, qty: float, price: float) -> float:
        notional = abs(qty) * price
        fee = self.rate * notional
        if fee < self.minimum:
            fee = self.minimum
        fee += self.transfer_fee * notional
        if side is Side.SELL:
            fee += self.stamp_duty * notional
        return fee


class SlippageModel(Protocol):
    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float: ...


@dataclass(frozen=True, slots=True)
class FixedBpsSlippage:
    """Pay ``bps`` basis points worse than the model price."""

    bps: float = 0.0

    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float:
        return price * (1.0 + self.bps * 1e-4) if side is Side.BUY else price * (1.0 - self.bps * 1e-4)


@dataclass(frozen=True, slots=True)
class VolumeShareSlippage:
    """Price impact growing with the square of the share of the bar's volume taken.

    impact = ``impact`` * (qty / volume) ** 2, as a fraction of the price (zipline's model).
    """

    impact: float = 0.1

    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float:
        share = min(1.0, qty / volume) if volume > 0 else 1.0
        move = self.impact * share * share
        return price * (1.0 + move) if side is Side.BUY else price * (1.0 - move)


COMMISSIONS = {"percent": PercentCommission, "per_share": PerShareCommission, "cn_a": AShareCommission}
SLIPPAGES = {"none": None, "bps": FixedBpsSlippage, "volume_share": VolumeShareSlippage}


def build_model(kind: str, registry: dict, params: dict):
    """Build a cost model from its config name and parameters, naming what is wrong."""
    try:
        cls = registry[kind]
    except KeyError:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(registry)}") from None
    if cls is None:
        if params:
            raise ValueError(f"model {kind!r} takes no parameters, got {', '.join(params)}")
        return None
    try:
        return cls(**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for {kind!r}: {e}") from None


def describe(model) -> dict:
    """A model as a JSON-able dict (``kind`` plus its parameters) for the run manifest."""
    if model is None:
        return {"kind": "none"}
    for reg in (COMMISSIONS, SLIPPAGES):
        for kind, cls in reg.items():
            if type(model) is cls:
                return {"kind": kind, **asdict(model)}
    return {"kind": type(model).__name__}
