"""Bars from ticks, and bars resampled to higher timeframes, the same in backtests and live.

Every builder comes in two forms that give identical bars (tested): a batch function over a
whole :class:`TickSeries` / :class:`BarSeries` (numpy), and a streaming class fed one tick or
bar at a time that hands back each bar once it has closed.

Rules (see :mod:`tradeloop.data.sessions` for the calendars):

* Time bars are cut on a grid anchored at each session window's OPEN (A-share 60m: 10:30, 11:30,
  14:00, 15:00) and truncated at its close: no bar spans a break (lunch, 10:15-10:30, night->day).
  A bucket truncated by a close is labelled with the close (``end``) or its start (``start``).
* ``label="end"``: a bar covers ``(end - step, end]`` (right-closed), so a tick at exactly 09:35:00
  is in the 09:35 bar, and a 1m bar stamped 09:35 is in the 5m bar stamped 09:35. ``label="start"``:
  ``[start, start + step)``. A tick exactly at a window's open (``end``) or close (``start``) joins
  that window's first (last) bar. Ticks and bars outside every window are dropped.
* ``"1d"`` groups by trading day (night sessions belong to the next one) and is labelled at the
  trading day's midnight, like daily files, whatever ``label`` says.
* OHLCV: open first, high max, low min, close last, volume sum, ``amount`` summed where present
  (from ticks: sum of price * size); a ``ticks`` column counts the ticks of a tick-built bar.
  Empty buckets make no bar (nothing is forward-filled).
* Tick price: ``price="auto"`` the trade price, or the bid/ask mid where a tick has none;
  ``"trade"`` trade prices only (quote-only ticks skipped); ``"mid"`` always the mid.
* Tick-count bars (``every=n``) close on their n-th tick; volume bars (``volume=v``) close on the tick
  that takes the session's cumulative volume to the next multiple of ``v`` (overshoot counts toward
  the next bar). Both restart at every session window; labelled by their last (``end``) or first
  (``start``) tick's stamp.
"""
from __future__ import annotations

import math
import re
from typing import Iterable

import numpy as np

from tradeloop.data.schema import Bar, BarSeries, Tick, TickSeries
from tradeloop.data.sessions import DAY_MIN, MIN_NS, NS_PER_DAY, Sessions, local_offsets, sessions_of

_TF = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$", re.I)
_UNIT = {"s": 1_000_000_000, "sec": 1_000_000_000, "m": MIN_NS, "min": MIN_NS, "h": 60 * MIN_NS}


def timeframe_ns(tf: str) -> int | None:
    """``"5m"`` -> its length in ns; ``"1d"`` -> None (a trading day). Seconds, minutes, hours, 1d."""
    m = _TF.match(tf)
    if not m:
        raise ValueError(f"bad timeframe {tf!r}: want e.g. 15s, 1m, 5m, 30m, 1h, 1d")
    n, unit = int(m.group(1)), m.group(2).lower()
    if n <= 0:
        raise ValueError(f"bad timeframe {tf!r}: must be positive")
    if unit == "d":
        if n != 1:
            raise ValueError(f"timeframe {tf!r}: only 1d is supported above hours")
        return None
    step = n * _UNIT[unit]
    if step > NS_PER_DAY:
        raise ValueError(f"timeframe {tf!r} is longer than a day")
    return step


def assign(local: np.ndarray, sessions: Sessions, step: int | None) -> tuple[np.ndarray, ...]:
    """Each local wall-time stamp's bucket: (ok, label, end, segment, trading_day), all int64 but ``ok``.

    ``end`` is the bucket's last instant (the close of a truncated bucket); ``segment`` numbers the
    session window instance (a new one after every break).
    """
    local = np.asarray(local, dtype=np.int64)
    n = len(local)
    day = local // NS_PER_DAY
    tod = local - day * NS_PER_DAY
    win = np.full(n, -1, np.int64)
    wday = day.copy()
    end_label = sessions.label == "end"
    wd = np.array(sorted(sessions.weekdays), np.int64)
    for strict in (True, False):          # half-open membership first, then a window's other edge
        for i, (o, c, _night) in enumerate(sessions.windows):
            o_ns, c_ns = o * MIN_NS, c * MIN_NS
            for shift in ((0, 1) if c > DAY_MIN else (0,)):
                t = tod + shift * NS_PER_DAY
                if strict:
                    inside = (t > o_ns) & (t <= c_ns) if end_label else (t >= o_ns) & (t < c_ns)
                else:
                    inside = (t == o_ns) if end_label else (t == c_ns)
                cal = day - shift
                inside &= (win < 0) & np.isin((cal + 3) % 7, wd)
                if inside.any():
                    win[inside] = i
                    wday[inside] = cal[inside]
    ok = win >= 0
    label = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    tday = np.zeros(n, np.int64)
    seg = wday * 64 + win
    for i, (o, c, night) in enumerate(sessions.windows):
        m = win == i
        if not m.any():
            continue
        open_ns = wday[m] * NS_PER_DAY + o * MIN_NS
        close_ns = wday[m] * NS_PER_DAY + c * MIN_NS
        tday[m] = sessions.trading_day_of(wday[m], night)
        if step is None:
            continue
        rel = local[m] - open_ns
        nb = -(-(c - o) * MIN_NS // step)
        if end_label:
            idx = np.maximum(-(-rel // step) - 1, 0)
        else:
            idx = np.minimum(rel // step, nb - 1)
        b0 = open_ns + idx * step
        b1 = np.minimum(b0 + step, close_ns)
        label[m] = b1 if end_label else b0
        end[m] = b1
    if step is None:   # a trading day: labelled at its midnight, complete at its last window's close
        last_close = sessions.windows[-1][1] * MIN_NS
        label = tday * NS_PER_DAY
        end = tday * NS_PER_DAY + last_close
    return ok, label, end, seg, tday


# -- batch ----------------------------------------------------------------------------------------
def _tick_prices(ticks: TickSeries, price: str) -> np.ndarray:
    mid = (ticks.bid + ticks.ask) / 2.0
    if price == "trade":
        return ticks.price.astype(np.float64)
    if price == "mid":
        return mid
    if price == "auto":
        return np.where(np.isnan(ticks.price), mid, ticks.price)
    raise ValueError(f"price must be 'auto', 'trade' or 'mid', not {price!r}")


def _aggregate(symbol: str, keys: np.ndarray, o, h, lo, c, v, extra: dict[str, np.ndarray], tz, source) -> BarSeries:
    """Rows with equal consecutive ``keys`` become one bar stamped with the key."""
    if len(keys) == 0:
        e = np.empty(0)
        return BarSeries(symbol, np.empty(0, np.int64), e, e.copy(), e.copy(), e.copy(), e.copy(),
                         {k: np.empty(0) for k in extra}, tz, source)
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    last = np.concatenate((starts[1:], [len(keys)])) - 1
    ex = {k: np.add.reduceat(a, starts) for k, a in extra.items()}
    return BarSeries(symbol, keys[starts].astype(np.int64), o[starts].astype(np.float64),
                     np.maximum.reduceat(h, starts).astype(np.float64), np.minimum.reduceat(lo, starts).astype(np.float64),
                     c[last].astype(np.float64), np.add.reduceat(v, starts).astype(np.float64), ex, tz, source)


def bars_from_ticks(ticks: TickSeries, timeframe: str | None = None, sessions: "Sessions | str | None" = None, *,
                    label: str | None = None, price: str = "auto", every: int | None = None,
                    volume: float | None = None) -> BarSeries:
    """Bars from a whole TickSeries: time bars (``timeframe``), tick-count (``every``) or volume (``volume``) bars.

    ``sessions``: a :class:`Sessions`, a preset name (``cn-a``, ``cn-commodity``, ``crypto``...) or None
    (24/7, windows from UTC midnight, labelled by start unless ``label`` says otherwise).
    """
    kinds = sum(x is not None for x in (timeframe, every, volume))
    if kinds != 1:
        raise ValueError("give exactly one of timeframe, every (ticks per bar) or volume (per bar)")
    sess = sessions_of(sessions, label)
    p = _tick_prices(ticks, price)
    size = np.nan_to_num(ticks.size.astype(np.float64))
    keep = ~np.isnan(p)
    ts = ticks.ts[keep]
    p, size = p[keep], size[keep]
    off = local_offsets(ts, ticks.tz, sess)
    step = timeframe_ns(timeframe) if timeframe is not None else 0
    ok, lab, _end, seg, _tday = assign(ts + off, sess, step if timeframe is not None else MIN_NS)
    if timeframe is not None:   # a trading day's midnight is a date (like daily files): no zone shift back
        keys = lab[ok] if step is None else lab[ok] - off[ok]
    else:
        ts_ok, seg_ok, size_ok = ts[ok], seg[ok], size[ok]
        new_seg = np.concatenate(([True], seg_ok[1:] != seg_ok[:-1]))
        seg_no = np.cumsum(new_seg) - 1
        seg_start = np.flatnonzero(new_seg)
        if every is not None:
            if every <= 0:
                raise ValueError("every must be a positive number of ticks")
            k = np.arange(len(ts_ok)) - seg_start[seg_no]
            bar_in_seg = k // every
        else:
            if not volume > 0:
                raise ValueError("volume per bar must be positive")
            cum = np.cumsum(size_ok)
            before = cum - size_ok - (cum - size_ok)[seg_start][seg_no]   # session volume before each tick
            bar_in_seg = np.floor(before / volume + 1e-9).astype(np.int64)
        bar_id = seg_no * (1 << 32) + bar_in_seg
        starts = np.flatnonzero(np.concatenate(([True], bar_id[1:] != bar_id[:-1])))
        lasts = np.concatenate((starts[1:], [len(bar_id)])) - 1
        stamp = ts_ok[lasts] if sess.label == "end" else ts_ok[starts]
        keys = np.repeat(stamp, np.diff(np.concatenate((starts, [len(bar_id)]))))
    p, size = p[ok], size[ok]
    extra = {"amount": p * size, "ticks": np.ones(len(p))}
    return _aggregate(ticks.symbol, keys, p, p, p, p, size, extra, ticks.tz, ticks.source)


def resample(bars: BarSeries, timeframe: str, sessions: "Sessions | str | None" = None, *,
             label: str | None = None) -> BarSeries:
    """``bars`` aggregated to ``timeframe`` (5m, 30m, 1h, 1d...); both carry the same ``label`` convention."""
    sess = sessions_of(sessions, label)
    step = timeframe_ns(timeframe)
    off = local_offsets(bars.ts, bars.tz, sess)
    ok, lab, _end, _seg, _tday = assign(bars.ts + off, sess, step)
    keys = lab[ok] if step is None else lab[ok] - off[ok]
    extra = {k: bars.extra[k][ok].astype(np.float64) for k in ("amount", "ticks") if k in bars.extra}
    return _aggregate(bars.symbol, keys, bars.open[ok], bars.high[ok], bars.low[ok], bars.close[ok],
                      bars.volume[ok], extra, bars.tz, bars.source)


# -- streaming -------------------------------------------------------------------------------------
class _Acc:
    __slots__ = ("key", "end", "seg", "o", "h", "l", "c", "v", "amount", "n", "first_ts", "last_ts")

    def __init__(self, key: int, end: int, seg: int, ts: int, o: float, h: float, l: float, c: float, v: float,
                 amount: float | None, n: int) -> None:
        self.key, self.end, self.seg = key, end, seg
        self.o, self.h, self.l, self.c, self.v, self.amount, self.n = o, h, l, c, v, amount, n
        self.first_ts = self.last_ts = ts

    def add(self, ts: int, h: float, l: float, c: float, v: float, amount: float | None, n: int) -> None:
        if h > self.h:
            self.h = h
        if l < self.l:
            self.l = l
        self.c = c
        self.v += v
        if amount is not None:
            self.amount = (self.amount or 0.0) + amount
        self.n += n
        self.last_ts = ts

    def bar(self, symbol: str, stamp: int) -> Bar:
        return Bar(symbol, stamp, self.o, self.h, self.l, self.c, self.v, self.amount)


class _Streaming:
    """What the tick and bar builders share: one open bucket, closed when a point lands in another."""

    def __init__(self, symbol: str, timeframe: str, sessions: "Sessions | str | None", label: str | None,
                 data_tz: str | None) -> None:
        self.symbol = symbol
        self.timeframe = timeframe
        self.sessions = sessions_of(sessions, label)
        self.step = timeframe_ns(timeframe)
        self.data_tz = data_tz
        self.cur: _Acc | None = None
        self._lo = self._hi = 0        # data-time bounds strictly inside the open bucket (fast path)
        self.counts: list[int] = []    # ticks per closed bar (tick builder)

    def _locate(self, ts: int) -> tuple[int, int, int] | None:
        """(key, end, segment) of ``ts`` in data time; None outside every window."""
        arr = np.array([ts], np.int64)
        off = int(local_offsets(arr, self.data_tz, self.sessions)[0])
        ok, lab, end, seg, _ = assign(arr + off, self.sessions, self.step)
        if not ok[0]:
            return None
        if self.step is None:
            return int(lab[0]), int(end[0]) - off, int(seg[0])
        return int(lab[0]) - off, int(end[0]) - off, int(seg[0])

    def _place(self, ts: int) -> tuple[bool, list[Bar], tuple[int, int, int] | None]:
        """Whether ``ts`` joins the open bucket; else the bar it closes and its own bucket."""
        cur = self.cur
        if cur is not None and self._lo < ts < self._hi:
            return True, [], None
        where = self._locate(ts)
        if where is None:
            return False, [], None
        if cur is not None and where[0] == cur.key:
            return True, [], None
        out = self._close()
        return False, out, where

    def _open(self, where: tuple[int, int, int], ts: int, *ohlcv) -> None:
        key, end, seg = where
        self.cur = _Acc(key, end, seg, ts, *ohlcv)
        if self.step is None:
            self._lo = self._hi = 0
        else:  # the open bucket's interior in data time: (end - step, end), and never past the close
            self._lo, self._hi = max(end - self.step, ts), end

    def _close(self) -> list[Bar]:
        cur = self.cur
        if cur is None:
            return []
        self.cur = None
        self._lo = self._hi = 0
        self.counts.append(cur.n)
        return [cur.bar(self.symbol, cur.key)]

    def flush(self, now: int | None = None) -> list[Bar]:
        """Close the open bar: always (``now`` None: end of data), or if ``now`` is past its end."""
        if self.cur is None or (now is not None and now <= self.cur.end):
            return []
        return self._close()


class BarBuilder(_Streaming):
    """Time bars from ticks fed one by one; ``update`` returns the bars a tick closed (the same bars
    as :func:`bars_from_ticks`; call ``flush()`` at the end, or ``flush(now)`` from a timer live)."""

    def __init__(self, symbol: str, timeframe: str, sessions: "Sessions | str | None" = None, *,
                 label: str | None = None, price: str = "auto", data_tz: str | None = None) -> None:
        super().__init__(symbol, timeframe, sessions, label, data_tz)
        if price not in ("auto", "trade", "mid"):
            raise ValueError(f"price must be 'auto', 'trade' or 'mid', not {price!r}")
        self.price = price

    def update(self, tick: Tick) -> list[Bar]:
        mid = (tick.bid + tick.ask) / 2.0
        p = tick.price if self.price == "trade" else mid if self.price == "mid" else (
            mid if math.isnan(tick.price) else tick.price)
        if math.isnan(p):
            return []
        size = 0.0 if math.isnan(tick.size) else float(tick.size)
        joined, out, where = self._place(tick.ts)
        if joined:
            self.cur.add(tick.ts, p, p, p, size, p * size, 1)
        elif where is not None:
            self._open(where, tick.ts, p, p, p, p, size, p * size, 1)
        return out


class Resampler(_Streaming):
    """Bars of a lower timeframe fed one by one -> closed bars of ``timeframe`` (equal to :func:`resample`).

    A bucket closes as soon as it is complete: with ``end`` labels when the bar stamped with the
    bucket's end arrives; with ``start`` labels when a bar's end (``ts + base``) reaches it (``base``:
    the input bars' length, e.g. ``"1m"``; without it, when the next bucket's first bar arrives).
    Otherwise (a missing last bar) the next bucket's first bar closes it.
    """

    def __init__(self, symbol: str, timeframe: str, sessions: "Sessions | str | None" = None, *,
                 label: str | None = None, base: str | int | None = None, data_tz: str | None = None) -> None:
        super().__init__(symbol, timeframe, sessions, label, data_tz)
        self.base = timeframe_ns(base) if isinstance(base, str) else base
        self.end_label = self.sessions.label == "end"

    def update(self, bar: Bar) -> list[Bar]:
        joined, out, where = self._place(bar.ts)
        if joined:
            self.cur.add(bar.ts, bar.high, bar.low, bar.close, bar.volume, bar.amount, 1)
        elif where is not None:
            self._open(where, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.amount, 1)
        else:
            return out
        cur = self.cur
        done = bar.ts >= cur.end if self.end_label else (self.base is not None and bar.ts + self.base >= cur.end)
        if done:
            out += self._close()
        return out


def stream_ticks(builder: BarBuilder, ticks: Iterable[Tick]) -> list[Bar]:
    """Every bar ``builder`` makes from ``ticks``, the last one flushed (a batch check of the streaming path)."""
    out: list[Bar] = []
    for t in ticks:
        out += builder.update(t)
    return out + builder.flush()
