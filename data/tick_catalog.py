"""Ticks in the Parquet catalog, one file per symbol and day: ``root/ticks/<SYM>/<YYYY-MM-DD>.parquet``.

The day is the stamp's calendar day as stored (UTC for zone-aware or unix-stamped files, the
exchange's wall time for naive ones). Files are written like bar files (temp file, fsync,
``os.replace``, folder fsync). An import never loses stored ticks by accident: a file holding
fewer ticks at some stamp of a day already stored (a shorter or other part of that day) is refused
unless ``replace=True`` (``--replace``), which replaces just the days the file holds; other days stay.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tradeloop.data.catalog import META_KEY, _column, _fsync_dir, _iso, _to_ns, check_symbol
from tradeloop.data.errors import DataError, check_file
from tradeloop.data.loaders import file_sha256
from tradeloop.data.schema import NS_PER_DAY, TICK_FIELDS, TickSeries
from tradeloop.data.ticks import load_ticks

FOLDER = "ticks"
COLUMNS = ("ts", "seq", *TICK_FIELDS, "side")


def _day(ns: int) -> str:
    return str(np.datetime64(int(ns) // NS_PER_DAY, "D"))


class TickCatalog:
    """The ticks of many symbols under one catalog root (beside its bars), partitioned by symbol and day."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, symbol: str) -> Path:
        """Where ``symbol``'s day files live (refuses names that would leave the folder)."""
        return self.root / FOLDER / check_symbol(self.root, symbol)

    def symbols(self) -> list[str]:
        """Every symbol with stored ticks, sorted."""
        base = self.root / FOLDER
        if not base.is_dir():
            return []
        return sorted(d.name for d in base.iterdir() if d.is_dir() and any(d.glob("*.parquet")))

    def days(self, symbol: str) -> list[str]:
        """The stored days of ``symbol`` (``YYYY-MM-DD``), sorted; empty if none."""
        folder = self.folder(symbol)
        if not folder.is_dir():
            return []
        return sorted(f.name[:-len(".parquet")] for f in folder.glob("*.parquet") if not f.name.startswith("."))

    def write_day(self, series: TickSeries, *, source_sha256: str | None = None) -> Path:
        """Store ticks of one day atomically, replacing that day's file (all ticks must share the day)."""
        day = _day(series.ts[0])
        if _day(series.ts[-1]) != day:
            raise ValueError(f"{series.symbol}: write_day got ticks of {day} .. {_day(series.ts[-1])}")
        dest = self.folder(series.symbol) / f"{day}.parquet"
        dest.parent.mkdir(parents=True, exist_ok=True)
        cols: dict[str, pa.Array] = {"ts": pa.array(np.asarray(series.ts, np.int64), pa.timestamp("ns", series.tz)),
                                     "seq": pa.array(np.asarray(series.seq, np.int64))}
        for f in TICK_FIELDS:
            cols[f] = pa.array(np.asarray(getattr(series, f), np.float64))
        cols["side"] = pa.array(np.asarray(series.side, np.int8))
        meta = {"symbol": series.symbol, "kind": "ticks", "day": day, "source": series.source,
                "source_sha256": source_sha256, "tz": series.tz, "rows": len(series)}
        table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        fd, tmp = tempfile.mkstemp(prefix=".ticks-", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(dest.parent)
        return dest

    def write(self, series: TickSeries, *, source_sha256: str | None = None) -> list[Path]:
        """Store a series, one file per day it covers (each replaced atomically; other days untouched)."""
        return [self.write_day(part, source_sha256=source_sha256) for part in split_days(series)]

    def _read_day(self, symbol: str, day: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self.folder(symbol) / f"{day}.parquet"
        check_file(path, "catalog file")
        try:
            table = pq.read_table(path, memory_map=True)
            meta = json.loads((table.schema.metadata or {}).get(META_KEY) or b"{}")
        except (OSError, pa.ArrowException, ValueError) as e:
            raise DataError(str(path), 0, "", f"cannot read the tick catalog file as Parquet: "
                            f"{' '.join(str(e).split())[:300]}") from None
        for name in COLUMNS:
            if name not in table.column_names:
                raise DataError(str(path), 0, name, "column missing from the tick catalog file")
        return {k: _column(table.column(k)) for k in COLUMNS}, meta if isinstance(meta, dict) else {}

    def stored_ts(self, symbol: str, day: str) -> np.ndarray | None:
        """The stamps of one stored day (int64 ns, with repeats), None if the day is not stored."""
        if not (self.folder(symbol) / f"{day}.parquet").exists():
            return None
        return self._read_day(symbol, day)[0]["ts"].astype(np.int64)

    def read(self, symbol: str, start: int | str | None = None, end: int | str | None = None) -> TickSeries:
        """The stored ticks of ``symbol`` with ``start <= ts < end`` (ns ints or ISO text) as one TickSeries.

        ``seq`` is as stored within a day; where days come from different files it is shifted up so
        that it keeps rising across the span.
        """
        lo, hi = _to_ns(start), _to_ns(end)
        days = self.days(symbol)
        if not days:
            raise DataError(str(self.root), 0, "symbol", f"no ticks of {symbol!r} in the catalog "
                            f"(have: {', '.join(self.symbols()) or 'none'})")
        pick = [d for d in days if (lo is None or d >= _day(lo)) and (hi is None or d <= _day(hi - 1))]
        parts, tz, source = [], None, None
        for d in pick:
            cols, meta = self._read_day(symbol, d)
            tz, source = meta.get("tz", tz), meta.get("source", source)
            if parts and len(cols["seq"]) and cols["seq"][0] <= parts[-1]["seq"][-1]:
                cols["seq"] = cols["seq"] + (parts[-1]["seq"][-1] + 1 - cols["seq"][0])
            parts.append(cols)
        if parts:
            out = {k: np.concatenate([p[k] for p in parts]) for k in COLUMNS}
        else:
            out = {k: np.zeros(0, np.int8 if k == "side" else np.int64 if k in ("ts", "seq") else np.float64)
                   for k in COLUMNS}
        s = TickSeries(symbol, out["ts"].astype(np.int64), out["seq"].astype(np.int64),
                       *(out[f].astype(np.float64) for f in TICK_FIELDS), out["side"].astype(np.int8),
                       tz=tz, source=source)
        return s if lo is None and hi is None else s.between(lo, hi)


def split_days(series: TickSeries) -> list[TickSeries]:
    """``series`` cut into one TickSeries per calendar day (ts is never decreasing)."""
    if len(series) == 0:
        return []
    day = np.asarray(series.ts, np.int64) // NS_PER_DAY
    cuts = np.flatnonzero(np.diff(day)) + 1
    bounds = [0, *cuts.tolist(), len(series)]
    return [TickSeries(series.symbol, *(getattr(series, f)[a:b] for f in COLUMNS), tz=series.tz, source=series.source)
            for a, b in zip(bounds[:-1], bounds[1:])]


def import_tick_files(paths: Iterable[str | Path], root: str | Path, *, replace: bool = False,
                      progress: Callable[..., Any] | None = None, **load_kwargs: Any) -> list[TickSeries]:
    """Load and check every tick file first (any DataError leaves the catalog untouched), then write them.

    A file holding fewer ticks at some stamp of a day its symbol already has stored (a part of
    that day, another period of it) is refused, naming the file, the day and what would be lost,
    unless ``replace``. Two files of one symbol may not cover the same day.
    """
    paths = [Path(p) for p in paths]
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(str(root), 0, "", "is not a folder (a catalog is a folder)")
    cat = TickCatalog(root)
    report = progress or (lambda done, total, info=None: None)
    total = 2 * len(paths)
    loaded: list[TickSeries] = []
    for i, p in enumerate(paths):
        report(i, total, f"reading {p.name}")
        loaded.append(load_ticks(p, **load_kwargs))
        report(i + 1, total, f"read {p.name}: {len(loaded[-1]):,} ticks of {loaded[-1].symbol}")
    seen: dict[tuple[str, str], Path] = {}
    plans = []
    for p, s in zip(paths, loaded):
        cat.folder(s.symbol)  # a bad symbol name is refused before anything is written
        parts = split_days(s)
        for part in parts:
            key = (s.symbol, _day(part.ts[0]))
            if key in seen:
                raise DataError(str(p), 0, "", f"ticks of {s.symbol!r} on {key[1]} also come from {seen[key]}")
            seen[key] = p
            if not replace:
                _check_keeps(cat, p, part)
        plans.append((p, parts))
    for i, (p, parts) in enumerate(plans):
        report(len(paths) + i, total, f"writing {loaded[i].symbol}")
        digest = file_sha256(p)
        for part in parts:
            try:
                cat.write_day(part, source_sha256=digest)
            except OSError as e:
                raise DataError(str(cat.folder(part.symbol)), 0, "", f"cannot write the tick catalog file "
                                f"(the stored one is kept): {e.strerror or e}") from None
        report(len(paths) + i + 1, total, f"wrote {loaded[i].symbol}")
    return loaded


def _check_keeps(cat: TickCatalog, path: Path, part: TickSeries) -> None:
    """A DataError when writing ``part`` (one day) would drop ticks its symbol holds for that day."""
    day = _day(part.ts[0])
    stored = cat.stored_ts(part.symbol, day)
    if stored is None or len(stored) == 0:
        return
    have_t, have_n = np.unique(stored, return_counts=True)
    new_t, new_n = np.unique(np.asarray(part.ts, np.int64), return_counts=True)
    pos = np.searchsorted(new_t, have_t)
    found = (pos < len(new_t)) & (new_t[np.minimum(pos, len(new_t) - 1)] == have_t)
    got = np.where(found, new_n[np.minimum(pos, len(new_t) - 1)], 0)
    short = got < have_n
    if short.any():
        lost = int((have_n - got)[short].sum())
        raise DataError(str(path), 0, "", f"would replace the {len(stored)} stored ticks of {part.symbol!r} on "
                        f"{day} in {cat.root} with {len(part)}, losing {lost} (first at "
                        f"{_iso(int(have_t[short][0]))}); give --replace to replace them")
