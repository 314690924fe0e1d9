"""Session calendars for building and resampling bars: trading windows, breaks, night sessions.

A :class:`Sessions` is a list of trading windows in one time zone (minutes from local midnight;
a window may run past midnight, e.g. ``21:00-02:30``), the weekdays they open on, and the bar
label convention of the market's data files:

* ``"end"``: an intraday bar carries its END time and covers ``(end - step, end]``. A-share and
  Chinese futures vendors (TDX, the zsh_a_etf files: 09:31..11:30, 13:01..15:00 for 1m,
  09:35..11:30, 13:05..15:00 for 5m; rqalpha's IF1706: 09:31..15:00) and NinjaTrader's US minute
  export (09:31..16:00) label this way.
* ``"start"``: a bar carries its START time and covers ``[start, start + step)``: exchange crypto
  candles (freqtrade's UNITTEST_BTC-1m, Bitstamp 30m), vn.py's own bars.

Windows that open at or after ``night_from`` (18:00 by default) are night sessions: their bars
belong to the NEXT trading day (the next listed weekday: Friday night -> Monday), which is what a
daily bar (``"1d"``) groups by. Exchange holidays are not modelled. Pure data, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np

MIN_NS = 60_000_000_000
DAY_MIN = 1440
NS_PER_DAY = 86_400_000_000_000


def _minutes(text: str) -> int:
    h, m = (int(x) for x in text.strip().split(":"))
    if not (0 <= h <= 24 and 0 <= m < 60) or h * 60 + m > DAY_MIN:
        raise ValueError(f"bad time of day {text!r} (want HH:MM)")
    return h * 60 + m


@dataclass(frozen=True)
class Sessions:
    """Trading windows ``(open_min, close_min, night)`` in the order of a trading day (night first).

    ``close_min`` may exceed 1440 (the window runs past midnight). ``tz``: the zone the windows are
    in; bars whose data carries naive wall time (``BarSeries.tz is None``) are read as that local time.
    """

    windows: tuple[tuple[int, int, bool], ...]
    tz: str = "UTC"
    weekdays: frozenset[int] = frozenset(range(5))
    label: str = "end"
    name: str = ""

    def __post_init__(self) -> None:
        if self.label not in ("end", "start"):
            raise ValueError(f"label must be 'end' or 'start', not {self.label!r}")
        if not self.windows:
            raise ValueError("a session calendar needs at least one window")
        for o, c, _ in self.windows:
            if not 0 <= o < c <= o + DAY_MIN:
                raise ValueError(f"session window {o}-{c} (minutes) must open before it closes, within 24 h")
        ZoneInfo(self.tz)

    @classmethod
    def parse(cls, spec: str, tz: str = "UTC", *, weekdays: str | frozenset[int] = frozenset(range(5)),
              label: str = "end", night_from: str | None = "18:00", name: str = "") -> "Sessions":
        """From ``"21:00-23:30,09:00-10:15,10:30-11:30,13:30-15:00"``; a window whose close is before its
        open runs past midnight (``21:00-02:30``); ``24:00`` closes at midnight; weekdays like ``"0-4"``."""
        night = _minutes(night_from) if night_from is not None else None
        wins = []
        for part in spec.split(","):
            a, b = part.split("-")
            o, c = _minutes(a), _minutes(b)
            if c <= o:
                c += DAY_MIN
            wins.append((o, c, night is not None and o >= night))
        wins.sort(key=lambda w: (not w[2], w[0]))
        if isinstance(weekdays, str):
            lo, _, hi = weekdays.partition("-")
            weekdays = frozenset(range(int(lo), int(hi or lo) + 1))
        return cls(tuple(wins), tz, frozenset(weekdays), label, name or spec)

    @classmethod
    def from_trading_hours(cls, hours, *, label: str = "end") -> "Sessions":
        """From a :class:`tradeloop.data.mqtt.hours.TradingHours` (the live feed's staleness windows)."""
        wins = tuple((w[0].hour * 60 + w[0].minute, DAY_MIN if w[1] is None else w[1].hour * 60 + w[1].minute, False)
                     for w in hours.windows)
        return cls(tuple(sorted(wins)), hours.tz, frozenset(hours.weekdays), label, "trading-hours")

    def with_label(self, label: str | None) -> "Sessions":
        return self if label is None or label == self.label else Sessions(self.windows, self.tz, self.weekdays, label,
                                                                           self.name)

    def trading_day_of(self, cal_day: np.ndarray, night: bool) -> np.ndarray:
        """The trading day (days since 1970-01-01) of a window that opened on ``cal_day``."""
        if not night:
            return cal_day
        out = cal_day + 1
        if self.weekdays and len(self.weekdays) < 7:
            for _ in range(7):   # roll forward to a trading weekday (1970-01-01 was a Thursday: weekday 3)
                bad = ~np.isin((out + 3) % 7, list(self.weekdays))
                if not bad.any():
                    break
                out = np.where(bad, out + 1, out)
        return out


PRESETS: dict[str, Sessions] = {
    "cn-a": Sessions.parse("09:30-11:30,13:00-15:00", "Asia/Shanghai", name="cn-a"),
    "cn-index-futures": Sessions.parse("09:30-11:30,13:00-15:00", "Asia/Shanghai", name="cn-index-futures"),
    "cn-commodity-day": Sessions.parse("09:00-10:15,10:30-11:30,13:30-15:00", "Asia/Shanghai",
                                       name="cn-commodity-day"),
    "cn-commodity": Sessions.parse("21:00-23:00,09:00-10:15,10:30-11:30,13:30-15:00", "Asia/Shanghai",
                                   name="cn-commodity"),
    "us-equity": Sessions.parse("09:30-16:00", "America/New_York", name="us-equity"),
    "crypto": Sessions.parse("00:00-24:00", "UTC", weekdays="0-6", label="start", night_from=None, name="crypto"),
}
ALWAYS = Sessions(((0, DAY_MIN, False),), "UTC", frozenset(range(7)), "start", "always")


def sessions_of(spec: "Sessions | str | None", label: str | None = None) -> Sessions:
    """A preset name, a :class:`Sessions`, or None (24/7 from UTC midnight), with ``label`` overriding its own."""
    if spec is None:
        s = ALWAYS
    elif isinstance(spec, Sessions):
        s = spec
    elif spec in PRESETS:
        s = PRESETS[spec]
    else:
        raise ValueError(f"unknown sessions {spec!r}; give a Sessions or one of {', '.join(sorted(PRESETS))}")
    return s.with_label(label)


@lru_cache(maxsize=65536)
def _offset_at_hour(hour: int, tz: str) -> int:
    dt = datetime.fromtimestamp(hour * 3600, timezone.utc).astimezone(ZoneInfo(tz))
    off = dt.utcoffset()
    return int(off.total_seconds()) * 1_000_000_000 if off is not None else 0


def local_offsets(ts: np.ndarray, data_tz: str | None, sessions: Sessions) -> np.ndarray:
    """Nanoseconds to add to ``ts`` for the sessions' local wall time: 0 for naive (wall-time) data."""
    ts = np.asarray(ts, dtype=np.int64)
    if data_tz is None or data_tz == sessions.tz:
        return np.zeros(len(ts), np.int64)
    if data_tz != "UTC":
        raise ValueError(f"timestamps in zone {data_tz!r}: only naive (wall time) or UTC data is supported")
    hours = ts // 3_600_000_000_000
    uniq, inv = np.unique(hours, return_inverse=True)
    return np.array([_offset_at_hour(int(h), sessions.tz) for h in uniq], np.int64)[inv]
