"""A Parquet bar catalog, one folder per symbol: ``root/symbol=<SYM>/bars.parquet`` plus its metadata.

Files are written to a temp file in the same folder, flushed to disk (fsync) and moved into place
with ``os.replace`` (the folder fsynced after), so a reader (or a crash) never sees half a file;
reads give back the exact arrays that were written, after the same checks a loaded file passes.

An import never loses stored bars by accident: a file that lacks a stamp the symbol already holds
(fewer rows, a header only, another period) is refused unless ``replace=True`` (``--replace``).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tradeloop.data.errors import DataError, check_file
from tradeloop.data.loaders import file_sha256, load_bars
from tradeloop.data.schema import BAR_FIELDS, BarSeries
from tradeloop.data.validate import validate_series

META_KEY = b"tradeloop"
FILE = "bars.parquet"


def _to_ns(t: int | str | np.datetime64 | None) -> int | None:
    """A bound as int ns: ints pass through, text/datetime64 are read as naive (or UTC) wall time."""
    if t is None or isinstance(t, (int, np.integer)):
        return None if t is None else int(t)
    return int(np.datetime64(t, "ns").astype(np.int64))


def _iso(ns: int) -> str:
    return str(np.datetime64(int(ns), "ns")).replace("T00:00:00.000000000", "").replace(".000000000", "")


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _column(a: pa.ChunkedArray) -> np.ndarray:
    """One Parquet column as a contiguous numpy array (timestamps as int64 ns)."""
    if pa.types.is_timestamp(a.type):
        a = a.cast(pa.int64())
    return np.ascontiguousarray(a.to_numpy())


def check_symbol(root: Path, symbol: str) -> str:
    """``symbol`` when it is safe as a folder name under ``root`` (bars and ticks alike), else a DataError."""
    if not symbol or "/" in symbol or "\\" in symbol or symbol in (".", "..") or "\0" in symbol:
        raise DataError(str(root), 0, "symbol", f"bad symbol name for a catalog folder: {symbol!r}")
    return symbol


@dataclass
class Staged:
    """A partition file written aside (``tmp``), waiting to replace ``dest``."""

    tmp: Path
    dest: Path
    new_folder: bool   # the partition folder was made for it (removed again on discard)

    def commit(self) -> Path:
        """Replace ``dest`` with the staged file (one rename) and sync the folder."""
        try:
            os.replace(self.tmp, self.dest)
        except BaseException:
            self.discard()
            raise
        _fsync_dir(self.dest.parent)
        return self.dest

    def discard(self) -> None:
        """Remove the staged file (and the folder made for it); the stored file, if any, stays."""
        self.tmp.unlink(missing_ok=True)
        if self.new_folder:
            with contextlib.suppress(OSError):
                self.dest.parent.rmdir()


class Catalog:
    """Bars of many symbols under one root folder, partitioned by symbol."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, symbol: str) -> Path:
        """Where ``symbol``'s bars live (refuses names that would leave the folder)."""
        return self.root / f"symbol={check_symbol(self.root, symbol)}" / FILE

    def write(self, series: BarSeries, *, source_sha256: str | None = None) -> Path:
        """Store a series atomically (temp file + os.replace), replacing what the symbol had."""
        return self.stage(series, source_sha256=source_sha256).commit()

    def stage(self, series: BarSeries, *, source_sha256: str | None = None) -> "Staged":
        """Write ``series`` to a temporary file beside its partition, synced; nothing is replaced until
        :meth:`Staged.commit` (``discard`` removes it). Lets several files be written before any replaces."""
        dest = self.path(series.symbol)
        self._check_root(create=True)
        new_folder = not dest.parent.exists()
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
        staged = Staged(Path(tmp), dest, new_folder)
        try:
            pq.write_table(table, tmp, compression="zstd")
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the bytes on disk before the name points at them
            finally:
                os.close(fd)
        except BaseException:
            staged.discard()
            raise
        return staged

    def _check_root(self, create: bool = False) -> None:
        """The catalog root must be a folder (or, when ``create``, not exist yet)."""
        if self.root.is_dir() or (create and not self.root.exists() and not self.root.is_symlink()):
            return
        if not self.root.exists():
            raise DataError(str(self.root), 0, "", "catalog folder not found")
        raise DataError(str(self.root), 0, "", "is not a folder (a catalog is a folder of symbol=<SYM>/ partitions)")

    def _open(self, symbol: str, columns: list[str] | None = None) -> tuple[Path, pa.Table]:
        """The stored table of ``symbol`` (a DataError naming the partition file if it is missing or damaged)."""
        path = self.path(symbol)
        self._check_root()
        if not path.exists() and not path.parent.exists():
            raise DataError(str(self.root), 0, "symbol",
                            f"no symbol {symbol!r} in the catalog (have: {', '.join(self.symbols())})")
        check_file(path, "catalog file")
        try:
            return path, pq.read_table(path, columns=columns, memory_map=True)
        except (OSError, pa.ArrowException, ValueError) as e:
            text = " ".join(str(e).split())[:300]
            raise DataError(str(path), 0, "", f"cannot read the catalog file as Parquet: {text}") from None

    def stored_ts(self, symbol: str) -> np.ndarray | None:
        """The stamps ``symbol`` holds (int64 ns), None if it holds none; a DataError if its file is damaged."""
        if not self.path(symbol).parent.exists():
            return None
        path, table = self._open(symbol, ["ts"])
        try:
            return _column(table.column("ts")).astype(np.int64)
        except (KeyError, pa.ArrowException, ValueError, TypeError) as e:
            raise DataError(str(path), 0, "ts", f"catalog file has no usable ts column: {e}") from None

    def read(self, symbol: str, start: int | str | None = None, end: int | str | None = None) -> BarSeries:
        """The stored bars of ``symbol`` with ``start <= ts < end`` (ns ints or ISO text), no re-parsing."""
        path, table = self._open(symbol)
        try:
            meta = self._meta_of(table.schema)
        except ValueError as e:
            raise DataError(str(path), 0, "", f"damaged catalog metadata: {e}") from None
        for name in ("ts", *BAR_FIELDS, *meta.get("extra", [])):
            if name not in table.column_names:
                raise DataError(str(path), 0, name, "column missing from the catalog file")
            typ = table.schema.field(name).type
            ok = (pa.types.is_timestamp(typ) or pa.types.is_integer(typ)) if name == "ts" else \
                (pa.types.is_floating(typ) or pa.types.is_integer(typ))
            if not ok:
                raise DataError(str(path), 0, name, f"catalog column type {typ} cannot hold "
                                f"{'timestamps' if name == 'ts' else 'numbers'}")
        ts = _column(table.column("ts")).astype(np.int64, copy=False)
        data = {f: _column(table.column(f)).astype(np.float64, copy=False) for f in BAR_FIELDS}
        extra = {k: _column(table.column(k)) for k in meta.get("extra", [])}
        s = BarSeries(meta.get("symbol", symbol), ts, data["open"], data["high"], data["low"], data["close"],
                      data["volume"], extra, meta.get("tz"), meta.get("source"))
        if len(s) == 0:
            raise DataError(str(path), 0, "", f"symbol {symbol!r} holds no bars")
        validate_series(s, str(path))  # a file put there by hand passes the checks a loaded file passes
        return s if start is None and end is None else s.between(_to_ns(start), _to_ns(end))

    def meta(self, symbol: str) -> dict[str, Any]:
        """The stored metadata of ``symbol``: source, source_sha256, tz, rows, start, end, extra."""
        path = self.path(symbol)
        self._check_root()
        if not path.exists():
            raise DataError(str(self.root), 0, "symbol", f"no symbol {symbol!r} in the catalog")
        check_file(path, "catalog file")
        try:
            return self._meta_of(pq.read_schema(path))
        except (OSError, pa.ArrowException, ValueError) as e:
            raise DataError(str(path), 0, "", f"cannot read the catalog file's metadata: {' '.join(str(e).split())[:300]}") from None

    @staticmethod
    def _meta_of(schema: pa.Schema) -> dict[str, Any]:
        """Our JSON metadata from a Parquet schema (empty dict if the file was written elsewhere)."""
        raw = (schema.metadata or {}).get(META_KEY)
        value = json.loads(raw) if raw else {}
        if not isinstance(value, dict) or not isinstance(value.get("extra", []), list):
            raise ValueError("tradeloop metadata is not a JSON object with a list of extra columns")
        return value

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


def import_files(paths: Iterable[str | Path], root: str | Path, *, replace: bool = False,
                 progress: Callable[..., Any] | None = None, **load_kwargs: Any) -> list[str]:
    """Load and check every file first (any DataError leaves the catalog untouched), then write them all.

    ``progress(done, total, info)``, when given, is called before and after each file is read and
    each symbol is written (``total`` = twice the number of files): the command line passes its
    LazyProgress, which shows one line per file on a pipe.

    A file lacking a stamp its symbol already holds in the catalog (fewer rows, another period) is
    refused, naming the file and what would be lost, unless ``replace``: stored bars are never
    dropped by accident. Otherwise each symbol's stored file is replaced by the new one, as before.
    """
    paths = [Path(p) for p in paths]
    cat = Catalog(root)
    cat._check_root(create=True)
    total = 2 * len(paths)
    report = progress or (lambda done, total, info=None: None)
    loaded = []
    for i, p in enumerate(paths):
        report(i, total, f"reading {p.name}")
        loaded.append(load_bars(p, **load_kwargs))
        report(i + 1, total, f"read {p.name}: {len(loaded[-1]):,} bars of {loaded[-1].symbol}")
    seen: dict[str, Path] = {}
    for p, s in zip(paths, loaded):
        if s.symbol in seen:
            raise DataError(str(p), 0, "symbol", f"symbol {s.symbol!r} also comes from {seen[s.symbol]}")
        seen[s.symbol] = p
        cat.path(s.symbol)  # a bad symbol name is refused before anything is written
    if not replace:
        for p, s in zip(paths, loaded):
            _check_keeps(cat, p, s)
    digests = [file_sha256(p) for p in paths]
    staged: list[Staged] = []   # every file is written aside first: a failure (disk full) replaces none
    try:
        for i, (p, s, h) in enumerate(zip(paths, loaded, digests)):
            report(len(paths) + i, total, f"writing {s.symbol}")
            try:
                staged.append(cat.stage(s, source_sha256=h))
            except OSError as e:
                raise DataError(str(cat.path(s.symbol)), 0, "", f"cannot write the catalog file (every stored "
                                f"file is kept, nothing of this import was written): {e.strerror or e}") from None
            report(len(paths) + i + 1, total, f"wrote {s.symbol}")
    except BaseException:
        for st in staged:
            st.discard()
        raise
    for st in staged:   # renames only: the narrowest window a crash could split the import in
        st.commit()
    return [s.symbol for s in loaded]


def _check_keeps(cat: Catalog, path: Path, s: BarSeries) -> None:
    """A DataError when writing ``s`` would drop bars its symbol holds in ``cat`` (see import_files)."""
    stored = cat.stored_ts(s.symbol)
    if stored is None or len(stored) == 0:
        return
    lost = np.setdiff1d(stored, np.asarray(s.ts, dtype=np.int64), assume_unique=False)
    if len(lost):
        raise DataError(str(path), 0, "", f"would replace the {len(stored)} stored bars of {s.symbol!r} in "
                        f"{cat.root} with {len(s)}, losing {len(lost)} (first {_iso(lost[0])}); "
                        "give --replace to replace them")
