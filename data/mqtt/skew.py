"""How far ahead of this machine's clock live market data may be stamped: one setting for the runner and the exchange.

A bar or tick stamped further ahead than this is dropped (reason ``future``) by the live runner's
feed (:class:`tradeloop.data.mqtt.MqttFeed`) and by the exchange simulator alike: one bad stamp
would otherwise become its symbol's last timestamp (every real bar after it dropped as old), move
the exchange's clock past every order, or fill an order at a price from no real market.

Defaults: ticks 5 s (clock difference between publisher and consumer); bars one bar interval (a
bar may be stamped with the end of its interval and published as it closes, or early by clock skew).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

NS = 1_000_000_000
DEFAULT_TICK_S = 5.0
DEFAULT_BAR_S = 86_400.0   # when the interval has no length we can read (e.g. a venue's own name for it)
_UNITS = {"d": 86_400 * NS, "h": 3_600 * NS, "m": 60 * NS, "s": NS, "ms": 1_000_000, "us": 1_000, "ns": 1}
_INTERVAL_RE = re.compile(r"(\d+)(d|h|m|s|ms|us|ns)\Z")


def interval_ns(interval: str) -> int | None:
    """The length of a bar interval name (``1d``, ``4h``, ``5m``, ``30s``, ``250ms``) in ns; None if unreadable."""
    m = _INTERVAL_RE.match(interval.strip())
    if not m or int(m.group(1)) <= 0:
        return None
    return int(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True)
class FutureSkew:
    """Largest lead over this machine's clock (seconds) a tick or a bar may be stamped with.

    ``bar_s`` None: one bar interval (see :func:`interval_ns`; a day where it cannot be read).
    """

    tick_s: float = DEFAULT_TICK_S
    bar_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("tick_s", "bar_s"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"future skew {name} must be a finite number of seconds >= 0, not {value!r}")

    def tick_ns(self) -> int:
        return int(self.tick_s * NS)

    def bar_ns(self, interval: str) -> int:
        if self.bar_s is not None:
            return int(self.bar_s * NS)
        return interval_ns(interval) or int(DEFAULT_BAR_S * NS)

    def limit_ns(self, kind: str, interval: str) -> int:
        """The lead allowed for ``kind`` (``"bar"`` or ``"tick"``) of bars of ``interval``."""
        return self.bar_ns(interval) if kind == "bar" else self.tick_ns()
