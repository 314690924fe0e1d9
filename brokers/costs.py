"""Commission and slippage models for the simulated venue.

Commission models are called once per fill with the fill's symbol, side, quantity, price and
timestamp (int64 ns; None where no date applies) and return the fee in account currency.
Slippage models move a fill price against the trader.
Both are small frozen dataclasses so a run's configuration can be written to its manifest.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np

from tradeloop.brokers.orders import Side
from tradeloop.errors import ConfigError, check_fields, limits

# Sanity bounds of cost settings: above these a value is a typo (0.5 for 0.5%, bps for a fraction), never a
# market's real fee. Rates are fractions of the notional; minimums and per-share fees are account currency.
MAX_RATE = 0.1          # 10% of the notional
MAX_MINIMUM = 1e6       # per fill
MAX_PER_SHARE = 100.0   # per unit
MAX_BPS = 1000.0        # 10%
MAX_IMPACT = 1.0        # volume-share impact coefficient
RATE = limits(ge=0, le=MAX_RATE, text=f"between 0 and {MAX_RATE:g} (a fraction of the notional: 0.001 is 0.1%)")
MINIMUM = limits(ge=0, le=MAX_MINIMUM)


class CommissionModel(Protocol):
    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int | None = None) -> float: ...


@dataclass(frozen=True, slots=True)
class PercentCommission:
    """``rate`` of the traded notional, at least ``minimum`` per fill (0.001 = 0.1%)."""

    rate: float = field(default=0.0, metadata=RATE)
    minimum: float = field(default=0.0, metadata=MINIMUM)

    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int | None = None) -> float:
        fee = self.rate * abs(qty) * price
        return fee if fee >= self.minimum else self.minimum


@dataclass(frozen=True, slots=True)
class PerShareCommission:
    """``per_share`` for each unit traded, at least ``minimum`` per fill."""

    per_share: float = field(default=0.0, metadata=limits(ge=0, le=MAX_PER_SHARE))
    minimum: float = field(default=0.0, metadata=MINIMUM)

    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int | None = None) -> float:
        fee = self.per_share * abs(qty)
        return fee if fee >= self.minimum else self.minimum


@dataclass(frozen=True, slots=True)
class AShareCommission:
    """China A-share fees: broker commission (``rate``, at least ``minimum`` per fill), stamp duty
    and the exchange transfer fee on both sides, all as fractions of the traded notional.

    Stamp duty follows the official schedule by the fill's date (:data:`CN_STAMP_DUTY`: 0.1% on
    both sides from 2008-04-24, on sells only from 2008-09-19, 0.05% on sells from 2023-08-28, ...),
    so a backtest of 2015 pays what 2015 paid; a number for ``stamp_duty`` fixes the rate on sells
    for every date. Defaults: 0.025% with a 5 CNY minimum, 0.001% transfer fee (today's; it was
    charged differently before 2015-08-01 and is not dated here).
    """

    rate: float = field(default=0.00025, metadata=RATE)
    minimum: float = field(default=5.0, metadata=MINIMUM)
    stamp_duty: float | None = field(default=None, metadata=RATE)
    transfer_fee: float = field(default=0.00001, metadata=RATE)

    def __call__(self, symbol: str, side: Side, qty: float, price: float, ts: int | None = None) -> float:
        notional = abs(qty) * price
        fee = self.rate * notional
        if fee < self.minimum:
            fee = self.minimum
        fee += self.transfer_fee * notional
        if self.stamp_duty is not None:
            rate, sells_only = self.stamp_duty, True
        else:
            rate, sells_only = cn_stamp_duty(ts)
        if side is Side.SELL or not sells_only:
            fee += rate * notional
        return fee


# (from date, rate, sells only): China A-share stamp duty since 1997; a date before the first row
# takes the first row's rate. Dates are compared with the fill's timestamp at UTC midnight, which
# is before the session opens in Shanghai (09:30 = 01:30 UTC), so a date's fills get its rate.
CN_STAMP_DUTY = (
    ("1997-05-12", 0.005, False),
    ("1998-06-12", 0.004, False),
    ("2001-11-16", 0.002, False),
    ("2005-01-24", 0.001, False),
    ("2007-05-30", 0.003, False),
    ("2008-04-24", 0.001, False),
    ("2008-09-19", 0.001, True),
    ("2023-08-28", 0.0005, True),
)
_CN_STAMP_FROM = [int(np.datetime64(d, "ns").astype(np.int64)) for d, _, _ in CN_STAMP_DUTY]


def cn_stamp_duty(ts: int | None) -> tuple[float, bool]:
    """(rate, sells only) of A-share stamp duty on the date of ``ts``; today's without a date."""
    i = len(CN_STAMP_DUTY) - 1 if ts is None else max(bisect_right(_CN_STAMP_FROM, ts) - 1, 0)
    return CN_STAMP_DUTY[i][1], CN_STAMP_DUTY[i][2]


class SlippageModel(Protocol):
    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float: ...


@dataclass(frozen=True, slots=True)
class FixedBpsSlippage:
    """Pay ``bps`` basis points worse than the model price."""

    bps: float = field(default=0.0, metadata=limits(ge=0, le=MAX_BPS, text=f"between 0 and {MAX_BPS:g} basis points"))

    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float:
        return price * (1.0 + self.bps * 1e-4) if side is Side.BUY else price * (1.0 - self.bps * 1e-4)


@dataclass(frozen=True, slots=True)
class VolumeShareSlippage:
    """Price impact growing with the square of the share of the bar's volume taken.

    impact = ``impact`` * (qty / volume) ** 2, as a fraction of the price (zipline's model).
    """

    impact: float = field(default=0.1, metadata=limits(ge=0, le=MAX_IMPACT))

    def __call__(self, side: Side, price: float, qty: float, volume: float) -> float:
        share = min(1.0, qty / volume) if volume > 0 else 1.0
        move = self.impact * share * share
        return price * (1.0 + move) if side is Side.BUY else price * (1.0 - move)


COMMISSIONS = {"percent": PercentCommission, "per_share": PerShareCommission, "cn_a": AShareCommission}
SLIPPAGES = {"none": None, "bps": FixedBpsSlippage, "volume_share": VolumeShareSlippage}


def build_model(kind: str, registry: dict, params: dict, where: str = ""):
    """Build a cost model from its config name and parameters, naming what is wrong.

    With ``where`` (the config section, ``commission`` or ``slippage``) every parameter is also
    checked against its type and range, and errors are ConfigErrors naming ``where.key``.
    """
    pre = f"{where}: " if where else ""
    if not isinstance(kind, str) or kind not in registry:
        raise (ConfigError if where else ValueError)(
            f"{pre}unknown model {kind!r}; choose one of {', '.join(registry)}")
    cls = registry[kind]
    if cls is None:
        if params:
            raise (ConfigError if where else ValueError)(
                f"{pre}model {kind!r} takes no parameters, got {', '.join(params)}")
        return None
    try:
        model = cls(**params)
    except TypeError as e:
        raise (ConfigError if where else ValueError)(f"{pre}bad parameters for {kind!r}: {e}") from None
    if where:
        check_fields(model, where)
    return model


def describe(model) -> dict:
    """A model as a JSON-able dict (``kind`` plus its parameters) for the run manifest."""
    if model is None:
        return {"kind": "none"}
    for reg in (COMMISSIONS, SLIPPAGES):
        for kind, cls in reg.items():
            if type(model) is cls:
                return {"kind": kind, **asdict(model)}
    return {"kind": type(model).__name__}
