"""A Parquet bar catalog, one folder per symbol: ``root/symbol=<SYM>/bars.parquet`` plus its metadata.

Files are written to a temp file in the same folder and moved into place with ``os.replace``, so
a reader (or a crash) never sees half a file; reads give back the exact arrays that were written.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tradeloop.data.errors import DataError
from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import BAR_FIELDS, BarSeries

META_KEY = b"tradeloop"
FILE = "bars.parquet"


def _to_ns(t: int | str | np.datetime64 | None) -> int | None:
    """A bound as int ns: ints pass through, text/datetime64 are read as naive (or UTC) wall time."""
    if t is None or isinstance(t, (int, np.integer)):
        return None if t is None else int(t)
    return int(np.datetime64(t, "ns").astype(np.int64))


def _column(a: pa.ChunkedArray) -> np.ndarray:
    """One Parquet column as a contiguous numpy array (timestamps as int64 ns)."""
    if pa.types.is_timestamp(a.type):
        a = a.cast(pa.int64())
    return np.ascontiguousarray(a.to_numpy())


class Catalog:
    """Bars of many symbols under one root folder, partitioned by symbol."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, symbol: str) -> Path:
        """Where ``symbol``'s bars live (refuses names that would leave the folder)."""
        if not symbol or "/" in symbol or "\\" in symbol or symbol in (".", "..") or "\0" in symbol:
            raise ValueError(f"bad symbol name for a catalog folder: {symbol!r}")
        return self.root / f"symbol={symbol}" / FILE

    def write(self, series: BarSeries, *, source_sha256: str | None = None) -> Path:
        """Store a series atomically (temp file + os.replace), replacing what the symbol had."""
        dest = self.path(series.symbol)
        dest.parent.mkdir(parents=True, exist_ok=True)
        cols: dict[str, pa.Array] = {"ts": pa.array(np.asarray(series.ts, dtype=np.int64), pa.timestamp("ns", series.tz))}
        for f in BAR_FIELDS:
            cols[f] = pa.array(np.asarray(getattr(series, f), dtype=np.float64))
        for k, v in series.extra.items():
            cols[k] = pa.array(np.asarray(v))
        meta = {"symbol": series.symbol, "source": series.source, "source_sha256": source_sha256, "tz": series.tz,
                "rows": len(series), "start": int(series.ts[0]) if len(series) else None,
                "end": int(series.ts[-1]) if len(series) else None, "extra": list(series.extra)}
        table = pa.table(cols).replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
        fd, tmp = tempfile.mkstemp(prefix=".bars-", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        try:
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return dest

    def read(self, symbol: str, start: int | str | None = None, end: int | str | None = None) -> BarSeries:
        """The stored bars of ``symbol`` with ``start <= ts < end`` (ns ints or ISO text), no re-parsing."""
        path = self.path(symbol)
        if not path.exists():
            raise DataError(str(self.root), 0, "symbol", f"no symbol {symbol!r} in the catalog (have: {', '.join(self.symbols())})")
        table = pq.read_table(path, memory_map=True)
        meta = self._meta_of(table.schema)
        ts = _column(table.column("ts"))
        data = {f: _column(table.column(f)) for f in BAR_FIELDS}
        extra = {k: _column(table.column(k)) for k in meta.get("extra", [])}
        s = BarSeries(meta.get("symbol", symbol), ts, data["open"], data["high"], data["low"], data["close"],
                      data["volume"], extra, meta.get("tz"), meta.get("source"))
        return s if start is None and end is None else s.between(_to_ns(start), _to_ns(end))

    def meta(self, symbol: str) -> dict[str, Any]:
        """The stored metadata of ``symbol``: source, source_sha256, tz, rows, start, end, extra."""
        path = self.path(symbol)
        if not path.exists():
            raise DataError(str(self.root), 0, "symbol", f"no symbol {symbol!r} in the catalog")
        return self._meta_of(pq.read_schema(path))

    @staticmethod
    def _meta_of(schema: pa.Schema) -> dict[str, Any]:
        """Our JSON metadata from a Parquet schema (empty dict if the file was written elsewhere)."""
        raw = (schema.metadata or {}).get(META_KEY)
        return json.loads(raw) if raw else {}

    def symbols(self) -> list[str]:
        """Every symbol stored, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(d.name[len("symbol="):] for d in self.root.iterdir()
                      if d.name.startswith("symbol=") and (d / FILE).is_file())

    def __contains__(self, symbol: object) -> bool:
        """Whether ``symbol`` has stored bars."""
        try:
            return isinstance(symbol, str) and self.path(symbol).is_file()
        except ValueError:
            return False


def import_files(paths: Iterable[str | Path], root: str | Path, **load_kwargs: Any) -> list[str]:
    """Load and check every file first (any DataError leaves the catalog untouched), then write them all."""
    paths = [Path(p) for p in paths]
    loaded = [load_bars(p, **load_kwargs) for p in paths]
    seen: dict[str, Path] = {}
    for p, s in zip(paths, loaded):
        if s.symbol in seen:
            raise DataError(str(p), 0, "symbol", f"symbol {s.symbol!r} also comes from {seen[s.symbol]}")
        seen[s.symbol] = p
    cat = Catalog(root)
    for p, s in zip(paths, loaded):
        cat.write(s, source_sha256=file_sha256(p))
    return [s.symbol for s in loaded]
