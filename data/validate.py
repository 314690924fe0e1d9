"""Bar checks shared by every loader: find bad rows, then raise, drop or repair them.

Checks, in the order a row is tested (the first failing one names the row's problem):
more fields than the header has columns, unparseable timestamp, missing or non-numeric OHLCV cell,
non-positive price, negative volume, a value past the bounds of money arithmetic (a price or
pre_close above ``MAX_PRICE``, a volume above ``MAX_VOLUME``, another extra column's value above
``MAX_AMOUNT`` in size or infinite), high < low, open or close outside [low, high]; then, over the
rows that passed, duplicate and out-of-order timestamps (after a file that runs mostly backwards
has been reversed).

Out of order under ``on_bad="drop"``: the rows kept are a longest strictly rising run of stamps
(the fewest rows dropped), so one misplaced row costs that row, not every row after it.
"""
from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field as dc_field
from typing import Literal

import numpy as np
import structlog

from tradeloop.data.errors import DataError
from tradeloop.data.schema import BAR_FIELDS, PRICE_FIELDS, BarSeries

OnBad = Literal["raise", "drop", "repair"]
LOG = structlog.get_logger("tradeloop.data")
EXAMPLE_LINES = 5
FIXABLE = ("high_below_low", "outside_range")
# Bounds of a bar's values: above them, money arithmetic (price x quantity, sums of notionals) is no
# longer exact to the cent or overflows to inf. No traded instrument comes near them.
MAX_PRICE = 1e12      # open, high, low, close, pre_close
MAX_VOLUME = 1e15     # volume
MAX_AMOUNT = MAX_PRICE * MAX_VOLUME  # any other extra column (amount / turnover): |value| at most this


@dataclass
class RawBars:
    """Parsed columns of one input in file order, before checks; ``cols`` holds float64 OHLCV (NaN = bad)."""

    path: str
    ts: np.ndarray
    ts_ok: np.ndarray
    cols: dict[str, np.ndarray]
    names: dict[str, str]
    cell: Callable[[str, int], object]
    line: Callable[[int], int]
    time_ok: np.ndarray | None = None
    extra: dict[str, np.ndarray] = dc_field(default_factory=dict)  # extra columns (NaN = missing, allowed)
    ragged: dict[int, str] = dc_field(default_factory=dict)        # record -> why it has too many fields


def _fmt_ts(ns: int) -> str:
    """A ns stamp as ISO text for messages."""
    return str(np.datetime64(int(ns), "ns")).replace(".000000000", "")


def _row_checks(raw: RawBars) -> list[tuple[str, str, np.ndarray]]:
    """(check, field key, mask) for the per-row checks, in priority order."""
    c = raw.cols
    out: list[tuple[str, str, np.ndarray]] = []
    if raw.ragged:
        m = np.zeros(len(raw.ts), dtype=bool)
        m[list(raw.ragged)] = True
        out.append(("extra_fields", "", m))
    out.append(("bad_timestamp", "ts", ~raw.ts_ok))
    out += [("missing_or_non_numeric", f, ~np.isfinite(c[f])) for f in BAR_FIELDS]
    out += [("non_positive_price", f, c[f] <= 0) for f in PRICE_FIELDS]
    out.append(("negative_volume", "volume", c["volume"] < 0))
    out += [("out_of_bounds", f, c[f] > _bound(f)) for f in BAR_FIELDS]
    out += [("out_of_bounds", k, _extra_out(k, v)) for k, v in raw.extra.items()]
    out.append(("high_below_low", "high", c["high"] < c["low"]))
    for f in ("open", "close"):
        out.append(("outside_range", f, (c[f] > c["high"]) | (c[f] < c["low"])))
    return out


def _bad_rows(raw: RawBars) -> np.ndarray:
    """Rows failing any check of ``_row_checks``, as one mask built in place (clean files need no more)."""
    c = raw.cols
    bad = ~raw.ts_ok
    if raw.ragged:
        bad[list(raw.ragged)] = True
    for f in PRICE_FIELDS:  # not > 0 is NaN, -inf or non-positive; above the bound includes +inf
        bad |= ~(c[f] > 0)
        bad |= c[f] > MAX_PRICE
    v = c["volume"]
    bad |= ~(v >= 0)
    bad |= v > MAX_VOLUME
    for k, x in raw.extra.items():
        bad |= _extra_out(k, x)
    h, lo = c["high"], c["low"]
    bad |= h < lo
    for f in ("open", "close"):
        bad |= c[f] > h
        bad |= c[f] < lo
    return bad


def _bound(key: str) -> float:
    """The largest value ``key`` may hold (see MAX_PRICE, MAX_VOLUME, MAX_AMOUNT)."""
    return MAX_VOLUME if key == "volume" else MAX_PRICE if key in PRICE_FIELDS or key == "pre_close" else MAX_AMOUNT


def _extra_out(key: str, x: np.ndarray) -> np.ndarray:
    """Rows where extra column ``key`` is infinite or past its bound in size (NaN, a missing value, passes)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu":
        return np.zeros(len(x), dtype=bool)
    return np.abs(x.astype(np.float64)) > _bound(key)


def _reason(raw: RawBars, check: str, key: str, rec: int) -> tuple[str, str]:
    """(field as written, human reason) for row ``rec`` failing ``check`` on ``key``."""
    c = raw.cols
    if check == "extra_fields":
        return "", raw.ragged[rec]
    if check == "out_of_bounds":
        v = float(c[key][rec]) if key in c else float(raw.extra[key][rec])
        return raw.names.get(key, key), (f"{v!r} is out of bounds: |{key}| must be at most {_bound(key):.0e} "
                                         "(beyond it money arithmetic overflows)")
    if check == "bad_timestamp":
        if raw.time_ok is not None and not raw.time_ok[rec]:
            key = "time"
        text = raw.cell(key, rec)
        return raw.names[key], ("missing timestamp" if text in (None, "") else f"unparseable timestamp: {text!r}")
    if check == "missing_or_non_numeric":
        text = raw.cell(key, rec)
        return raw.names[key], ("missing value" if text in (None, "") else f"not a number: {text!r}")
    v = float(c[key][rec])
    if check == "non_positive_price":
        return raw.names[key], f"non-positive price: {v!r}"
    if check == "negative_volume":
        return raw.names[key], f"negative volume: {v!r}"
    lo, hi = float(c["low"][rec]), float(c["high"][rec])
    if check == "high_below_low":
        return raw.names[key], f"high {hi!r} < low {lo!r}"
    return raw.names[key], f"{key} {v!r} outside [low {lo!r}, high {hi!r}]"


def _report(raw: RawBars, log: list | None, action: str, check: str, recs: np.ndarray) -> None:
    """Log one dropped/repaired group through structlog and into ``log``."""
    if len(recs) == 0:
        return
    lines = [raw.line(int(r)) for r in np.sort(recs)[:EXAMPLE_LINES]]
    entry = {"file": raw.path, "action": action, "check": check, "count": len(recs), "lines": lines}
    if log is not None:
        log.append(entry)
    LOG.warning("bars_dropped" if action == "drop" else "bars_repaired", file=raw.path, check=check,
                count=entry["count"], lines=lines)


def clean(raw: RawBars, on_bad: OnBad = "raise", log: list | None = None, *, reverse: bool = True) -> np.ndarray:
    """Check every bar and return the record indices to keep, in rising-ts order (may repair ``raw.cols``)."""
    if on_bad not in ("raise", "drop", "repair"):
        raise ValueError(f"on_bad must be 'raise', 'drop' or 'repair', not {on_bad!r}")
    n = len(raw.ts)
    bad = _bad_rows(raw)
    any_bad = bool(bad.any())
    checks = _row_checks(raw) if any_bad else []  # which check failed: only asked when a row did
    first_row_bad = int(np.argmax(bad)) if any_bad else n
    if on_bad == "raise":
        keep = ~bad
    else:
        keep = _handle_rows(raw, checks, bad, on_bad, log)
    idx = np.flatnonzero(keep)
    t = raw.ts[idx]
    if reverse and len(t) > 1:
        d = np.diff(t)
        if int((d < 0).sum()) > int((d > 0).sum()):
            idx, t = idx[::-1], t[::-1]
            LOG.info("bars_reversed", file=raw.path, rows=len(idx))
    if len(t) < 2:
        order_bad = np.zeros(len(t), dtype=bool)
    else:
        prev = np.maximum.accumulate(t)[:-1]
        order_bad = np.concatenate(([False], t[1:] <= prev))
    if on_bad == "raise":
        first_order = int(idx[order_bad].min()) if order_bad.any() else n
        if first_row_bad < n and first_row_bad <= first_order:
            rec = first_row_bad
            check, key, _ = next(c for c in checks if c[2][rec])
            field, reason = _reason(raw, check, key, rec)
            raise DataError(raw.path, raw.line(rec), field, reason)
        if first_order < n:
            raise _order_error(raw, idx, t, first_order)
        return idx
    if not order_bad.any():
        return idx
    if on_bad == "drop":
        keep = _rising(t)
        drop = ~keep
        dup = drop & np.isin(t, t[keep])  # a stamp some kept row has: a duplicate; else out of order
        _report(raw, log, "drop", "duplicate_timestamp", idx[dup])
        _report(raw, log, "drop", "out_of_order", idx[drop & ~dup])
        return idx[keep]
    order = np.argsort(t, kind="stable")
    _report(raw, log, "repair", "out_of_order", idx[order_bad & (t < np.maximum.accumulate(t))])
    idx, t = idx[order], t[order]
    last = np.concatenate((t[:-1] != t[1:], [True]))
    _report(raw, log, "repair", "duplicate_timestamp", idx[~last])
    return idx[last]


def _rising(t: np.ndarray) -> np.ndarray:
    """Mask of a longest strictly rising subsequence of ``t``: the fewest rows to drop to make ``t`` strictly rising.

    Of several such subsequences the one keeping the earliest rows: the row dropped is the one
    that steps back in time (and the first of equal stamps is kept), as ``raise`` would name it.
    O(n log n), over the stretch from the first to the last row out of place only: a row above
    every stamp before it and below every stamp after it fits any rising subsequence and is kept.
    """
    n = len(t)
    keep = np.ones(n, dtype=bool)
    late = np.flatnonzero(t[1:] <= np.maximum.accumulate(t)[:-1]) + 1      # not above every stamp before it
    if len(late) == 0:
        return keep
    early = np.flatnonzero(t[:-1] >= np.minimum.accumulate(t[::-1])[::-1][1:])  # not below every stamp after it
    lo, hi = min(int(late[0]), int(early[0])), max(int(late[-1]), int(early[-1])) + 1
    seg = t[lo:hi].tolist()
    # longest rising run starting at each row (patience sorting from the right, on negated stamps)
    longest = [0] * len(seg)
    tails: list[int] = []
    for j in range(len(seg) - 1, -1, -1):
        u = -seg[j]
        k = bisect_left(tails, u)
        if k == len(tails):
            tails.append(u)
        else:
            tails[k] = u
        longest[j] = k + 1
    need, last = len(tails), None
    keep[lo:hi] = False
    for j, x in enumerate(seg):  # earliest row that still leaves a run of the needed length
        if need and longest[j] == need and (last is None or x > last):
            keep[lo + j] = True
            need, last = need - 1, x
    return keep


def _handle_rows(raw: RawBars, checks: list, bad: np.ndarray, on_bad: str, log: list | None) -> np.ndarray:
    """Drop (or, for OHLC range problems under 'repair', fix) rows failing per-row checks; return the keep mask."""
    if not bad.any():
        return np.ones(len(bad), dtype=bool)
    remaining = bad.copy()
    groups: dict[str, np.ndarray] = {}
    for check, _, m in checks:
        hit = m & remaining
        if hit.any():
            groups[check] = hit if check not in groups else groups[check] | hit
            remaining &= ~hit
    keep = ~bad
    for check, hit in groups.items():
        if on_bad == "repair" and check in FIXABLE:
            c = raw.cols
            c["high"], c["low"] = np.array(c["high"]), np.array(c["low"])  # polars buffers may be read-only
            stack = np.vstack([c[f][hit] for f in PRICE_FIELDS])
            c["high"][hit] = stack.max(axis=0)
            c["low"][hit] = stack.min(axis=0)
            keep |= hit
            _report(raw, log, "repair", check, np.flatnonzero(hit))
        else:
            _report(raw, log, "drop", check, np.flatnonzero(hit))
    return keep


def _order_error(raw: RawBars, idx: np.ndarray, t: np.ndarray, rec: int) -> DataError:
    """The DataError for record ``rec``, a duplicate or out-of-order stamp in processing order ``idx``."""
    pos = int(np.flatnonzero(idx == rec)[0])
    earlier = t[:pos]
    if (earlier == t[pos]).any():
        other = int(idx[int(np.flatnonzero(earlier == t[pos])[0])])
        reason = f"duplicate timestamp {_fmt_ts(t[pos])} (also on line {raw.line(other)})"
    else:
        j = int(np.argmax(earlier))
        reason = (f"timestamp {_fmt_ts(t[pos])} out of order: earlier than {_fmt_ts(earlier[j])} "
                  f"on line {raw.line(int(idx[j]))}")
    return DataError(raw.path, raw.line(rec), raw.names["ts"], reason)


def validate_series(series: BarSeries, path: str | None = None) -> None:
    """Check a BarSeries built in code (or read from a catalog); raise DataError naming row index + 1 as the line.

    ``path`` names the file in the error (default: the series' source, else its symbol).
    """
    cols = {f: np.asarray(getattr(series, f), dtype=np.float64) for f in BAR_FIELDS}
    extra = {k: np.asarray(v) for k, v in series.extra.items()}
    names = {k: k for k in ("ts", "time", *BAR_FIELDS, *extra)}
    raw = RawBars(path or series.source or series.symbol, np.asarray(series.ts, dtype=np.int64),
                  np.ones(len(series), dtype=bool), cols, names,
                  cell=lambda k, r: str(series.column(k)[r]), line=lambda r: r + 1, extra=extra)
    clean(raw, "raise", reverse=False)
