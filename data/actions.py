"""Corporate actions of equities: cash dividends and splits, from the bar files' own columns or a CSV.

Columns, as the loaders keep them in ``BarSeries.extra`` (aliases in ``data.loaders.ALIASES``):

* ``dividend``: cash paid per share to holders of the shares held at the previous close, on the
  ex-date (the bar carrying it), at that bar's open; 0 = none. zipline's ``dividend``, Quandl's
  ``Ex-Dividend``.
* ``split``: the split ratio, new shares per old share (2 = 2-for-1, 0.1 = 1-for-10 reverse), effective
  at the ex-date's open; 1 (or 0/missing) = none. zipline's ``split``, Quandl's ``Split Ratio``.

A separate actions file is a CSV ``date,symbol,dividend,split`` (header required; either of
dividend/split may be empty = none). Its rows are merged with the file's own columns (the file wins on
a date both give). An action dated on a day without a bar of its symbol takes effect at the symbol's
next bar; one after its last bar is ignored.

Adjusted prices: a price series already adjusted for its actions must not have them applied again.
:func:`split_adjusted` detects the common trap (a file that lists a split whose prices show no jump
there, e.g. zipline's AAPL sample): at each listed split date it compares ``close[t-1] / open[t]`` with
the ratio. :func:`resolve` turns a series, its settings and an optional actions file into what the
engine applies (:class:`ActionTable`) plus notes for the manifest.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tradeloop.data.errors import DataError, check_file
from tradeloop.data.schema import BarSeries

ACTION_COLUMNS = ("date", "symbol", "dividend", "split")


@dataclass
class ActionTable:
    """One symbol's actions to apply, by the int64 ns stamp of the bar they take effect at."""

    symbol: str
    by_ts: dict[int, tuple[float, float]] = field(default_factory=dict)   # ts -> (dividend, split ratio)

    def __len__(self) -> int:
        return len(self.by_ts)


def series_actions(s: BarSeries) -> dict[int, tuple[float, float]]:
    """The actions in a series' own ``dividend`` / ``split`` columns: ts -> (dividend, ratio), non-trivial rows only."""
    div = s.extra.get("dividend")
    spl = s.extra.get("split")
    if div is None and spl is None:
        return {}
    n = len(s)
    d = np.nan_to_num(div, nan=0.0) if div is not None else np.zeros(n)
    r = spl if spl is not None else np.ones(n)
    r = np.where(np.isfinite(r) & (r > 0), r, 1.0)
    idx = np.flatnonzero((d != 0) | (r != 1))
    return {int(s.ts[i]): (float(d[i]), float(r[i])) for i in idx}


def load_actions(path: str | Path) -> dict[str, dict[int, tuple[float, float]]]:
    """An actions CSV ``date,symbol,dividend,split`` as symbol -> {ts ns: (dividend, ratio)}.

    Anything malformed is a DataError naming the file, the line and the field.
    """
    src = str(path)
    check_file(path)
    out: dict[str, dict[int, tuple[float, float]]] = {}
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header is None:
            raise DataError(src, 0, "", "empty actions file (expected a header date,symbol,dividend,split)")
        names = [h.strip().lower() for h in header]
        for need in ("date", "symbol"):
            if need not in names:
                raise DataError(src, 1, need, f"actions file has no {need} column (header: {','.join(header)})")
        if "dividend" not in names and "split" not in names:
            raise DataError(src, 1, "dividend", "actions file needs a dividend or split column")
        col = {k: names.index(k) for k in ACTION_COLUMNS if k in names}
        for line, row in enumerate(rows, start=2):
            if not any(c.strip() for c in row):
                continue
            if len(row) < len(header):
                raise DataError(src, line, header[len(row)].strip(), f"{len(row)} fields, the header has {len(header)}")

            def cell(key: str) -> str:
                return row[col[key]].strip() if key in col else ""

            try:
                stamp = np.datetime64(cell("date") or "NaT", "ns")
                if np.isnat(stamp):
                    raise ValueError
                ts = int(stamp.astype(np.int64))
            except (ValueError, TypeError, OverflowError):
                raise DataError(src, line, "date", f"not a date: {cell('date')!r}") from None
            symbol = cell("symbol")
            if not symbol:
                raise DataError(src, line, "symbol", "empty symbol")
            values = []
            for key, none in (("dividend", 0.0), ("split", 1.0)):
                text = cell(key)
                if not text:
                    values.append(none)
                    continue
                try:
                    v = float(text)
                except ValueError:
                    raise DataError(src, line, key, f"not a number: {text!r}") from None
                if not math.isfinite(v) or (key == "split" and v <= 0) or (key == "dividend" and v < 0):
                    want = "a ratio > 0 (new shares per old share)" if key == "split" else "a cash amount >= 0"
                    raise DataError(src, line, key, f"{text!r}: must be {want}")
                values.append(v)
            if values[0] or values[1] != 1.0:
                out.setdefault(symbol, {})[ts] = (values[0], values[1])
    return out


def split_adjusted(s: BarSeries, actions: dict[int, tuple[float, float]], tol: float = 0.25) -> list[str]:
    """Dates of listed splits at which the prices show no jump: the series is already split-adjusted there.

    At a split of ratio r on bar t, unadjusted prices drop by about r: ``close[t-1] / open[t] ~ r``.
    A ratio within ``tol`` (relative, in log terms) of 1 where r is not: no jump, already adjusted.
    Splits whose jump matches r, or whose day is the first bar, are not reported.
    """
    out = []
    for ts, (_, r) in sorted(actions.items()):
        if r == 1.0:
            continue
        i = int(np.searchsorted(s.ts, ts, "left"))
        if i <= 0 or i >= len(s) or not s.open[i] > 0:
            continue
        seen = float(s.close[i - 1] / s.open[i])
        if abs(math.log(seen)) < abs(math.log(r)) * tol:   # no jump, where r calls for one
            out.append(_day(ts))
    return out


def _day(ts: int) -> str:
    return str(np.datetime64(ts, "ns").astype("datetime64[D]"))


def resolve(s: BarSeries, *, adjusted: bool | None = None,
            extra: dict[int, tuple[float, float]] | None = None) -> tuple[ActionTable, dict[str, Any]]:
    """What the engine applies for series ``s`` (its own columns plus ``extra`` from an actions file), and
    a manifest note ``{symbol, listed, applied, adjusted, adjusted_by, warning?}``.

    ``adjusted``: True = the prices already include the actions: none is applied (a warning when some are
    listed: applying them would adjust twice); False = raw prices: all are applied; None = detect: a
    listed split without a price jump means the file is adjusted (as True, with a warning).
    """
    listed = {**series_actions(s), **(extra or {})}
    note: dict[str, Any] = {"symbol": s.symbol, "listed": len(listed), "applied": 0}
    by = "setting"
    if adjusted is None:
        flat = split_adjusted(s, listed)
        adjusted, by = bool(flat), "detected"
        if flat:
            note["flat_splits"] = flat
    note["adjusted"], note["adjusted_by"] = adjusted, by
    table = ActionTable(s.symbol)
    if not listed or len(s) == 0:
        return table, note
    if adjusted:
        why = (f"prices show no jump at the listed split(s) on {', '.join(note['flat_splits'])}"
               if by == "detected" else "adjusted = true")
        note["warning"] = (f"{s.symbol}: {len(listed)} corporate action(s) listed but the prices are already "
                           f"adjusted ({why}); they are NOT applied, to avoid double adjustment "
                           f"(set adjusted = false to apply them to raw prices)")
        return table, note
    last = int(s.ts[-1])
    for ts, (d, r) in sorted(listed.items()):
        if ts > last:
            continue
        at = int(s.ts[int(np.searchsorted(s.ts, ts, "left"))])   # the bar at or after the ex-date
        d0, r0 = table.by_ts.get(at, (0.0, 1.0))
        table.by_ts[at] = (d0 + d, r0 * r)
    note["applied"] = len(table)
    return table, note
