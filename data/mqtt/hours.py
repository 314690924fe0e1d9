"""Trading-session windows and per-symbol staleness, kept free of I/O so they test with a fake clock.

A symbol is stale when, inside a session window, no valid message for it has arrived for
``stale_after`` seconds; the count starts at the later of its last message and the window's
opening (so a symbol is not stale the instant the market opens). Outside the windows nothing
goes stale; a stale symbol stays stale until its next message.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time as dtime
from zoneinfo import ZoneInfo


def _hhmm(text: str) -> dtime | None:
    """``HH:MM`` as a time; ``24:00`` as None (end of day)."""
    h, m = (int(x) for x in text.strip().split(":"))
    if (h, m) == (24, 0):
        return None
    return dtime(h, m)


@dataclass(frozen=True)
class TradingHours:
    """Trading windows in one time zone on given weekdays (Mon=0), e.g. ``TradingHours.parse("09:30-11:30,13:00-15:00", "Asia/Shanghai")``."""

    windows: tuple[tuple[dtime, dtime | None], ...]
    tz: str = "UTC"
    weekdays: frozenset[int] = frozenset(range(5))

    @classmethod
    def parse(cls, spec: str, tz: str = "UTC", weekdays: str | frozenset[int] = frozenset(range(5))) -> TradingHours:
        """From ``"HH:MM-HH:MM[,HH:MM-HH:MM...]"`` (``24:00`` ends a window at midnight); weekdays like ``"0-4"``."""
        wins = []
        for part in spec.split(","):
            a, b = part.split("-")
            start, end = _hhmm(a), _hhmm(b)
            if start is None or (end is not None and end <= start):
                raise ValueError(f"session window {part!r} must open before it closes (within one day)")
            wins.append((start, end))
        if isinstance(weekdays, str):
            lo, _, hi = weekdays.partition("-")
            weekdays = frozenset(range(int(lo), int(hi or lo) + 1))
        ZoneInfo(tz)  # fail early on an unknown zone
        return cls(tuple(wins), tz, frozenset(weekdays))

    def opened_at(self, now: float) -> float | None:
        """Epoch seconds at which the window containing ``now`` opened; None outside every window."""
        local = datetime.fromtimestamp(now, ZoneInfo(self.tz))
        if local.weekday() not in self.weekdays:
            return None
        t = local.time()
        for start, end in self.windows:
            if start <= t and (end is None or t < end):
                opened = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
                return opened.timestamp()
        return None


ALWAYS = TradingHours(((dtime(0, 0), None),), "UTC", frozenset(range(7)))


class Staleness:
    """Which symbols are stale, from message arrival times and the session (all times epoch seconds)."""

    def __init__(self, stale_after: float, session: TradingHours | None = None) -> None:
        if stale_after <= 0:
            raise ValueError(f"stale_after must be > 0 seconds, not {stale_after}")
        self.stale_after = stale_after
        self.session = session or ALWAYS
        self.last: dict[str, float] = {}
        self.stale: set[str] = set()

    def watch(self, symbols: list[str], now: float) -> None:
        """Start the clock for symbols that have not reported yet."""
        for s in symbols:
            self.last.setdefault(s, now)

    def seen(self, symbol: str, now: float) -> bool:
        """Record a message for ``symbol``; True if it was stale and is fresh again."""
        self.last[symbol] = now
        if symbol in self.stale:
            self.stale.discard(symbol)
            return True
        return False

    def check(self, now: float) -> list[str]:
        """Symbols that became stale since the last check (sorted)."""
        opened = self.session.opened_at(now)
        if opened is None:
            return []
        limit = self.stale_after
        out = [s for s, t in self.last.items() if s not in self.stale and now - max(t, opened) >= limit]
        self.stale.update(out)
        return sorted(out)

