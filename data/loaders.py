"""Bar files -> BarSeries: CSV (also .csv.gz, .txt), Parquet and freqtrade JSON, checked by data.validate.

CSV is read as strings and cast whole columns at once (non-strict); only when a cast leaves a
null where the text was not null do the checks go looking for the bad cell, so a clean
million-row file costs one polars read plus a few vectorised casts.
"""
from __future__ import annotations

import csv
import gzip
from datetime import datetime
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tradeloop.data.errors import DataError, check_file
from tradeloop.data.schema import BAR_FIELDS, BarSeries
from tradeloop.data.validate import OnBad, RawBars, clean

# Header aliases, matched case-insensitively on stripped names; earlier entries win.
ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("datetime", "date time", "date_time", "timestamp", "timestamps", "ts", "trade_date", "tradedate",
           "date", "日期", "calendardate", "trading_date"),
    "time": ("time", "时间", "mdentrytime", "trade_time"),
    "open": ("open", "开盘价", "开盘", "openingpx", "open_price"),
    "high": ("high", "最高价", "最高", "highpx", "high_price"),
    "low": ("low", "最低价", "最低", "lowpx", "low_price"),
    "close": ("close", "收盘价", "收盘", "closingpx", "close_price"),
    "volume": ("volume", "vol", "成交量", "totalvolumetraded"),
    "pre_close": ("pre_close", "preclose", "前收盘"),
    "amount": ("amount", "成交金额", "totalturnover", "turnover"),
    # corporate actions (data.actions): cash dividend per share paid at the ex-date's open to the shares
    # held at the previous close; split ratio new/old shares at the ex-date's open (1 = none).
    # zipline: dividend,split; Quandl WIKI: Ex-Dividend, Split Ratio (its raw Open..Volume are used,
    # never the Adj. columns, so its actions apply to the raw prices)
    "dividend": ("dividend", "ex-dividend", "ex_dividend", "dividends"),
    "split": ("split", "split ratio", "split_ratio", "splits"),
    # per-bar daily price limits (futures, A-shares): no buy fills at limit_up, no sell at limit_down
    # (brokers/sim.py); rqalpha: HighLimitPx/LowLimitPx
    "limit_up": ("limit_up", "highlimitpx", "high_limit", "up_limit", "涨停价"),
    "limit_down": ("limit_down", "lowlimitpx", "low_limit", "down_limit", "跌停价"),
    # open interest (futures): rolls by open interest (engine/loop/rolls.py)
    "open_interest": ("open_interest", "openinterest", "oi", "持仓量"),
}
EXTRAS = ("pre_close", "amount", "dividend", "split", "limit_up", "limit_down", "open_interest")
# Column layouts of header-less files, by column count (Date,Time,... when the 2nd cell is a time).
NO_HEADER = {5: ("Date", "Open", "High", "Low", "Close"),
             6: ("Date", "Open", "High", "Low", "Close", "Volume"),
             7: ("Date", "Open", "High", "Low", "Close", "AdjClose", "Volume"),
             8: ("Date", "Time", "Open", "High", "Low", "Close", "Volume", "Amount")}
STD_KEY = {"Date": "ts", "Time": "time", "Open": "open", "High": "high", "Low": "low", "Close": "close",
           "Volume": "volume", "Amount": "amount"}
DATE_FORMATS = (  # plain %S before %.f: polars parses the former on a fast path (~6x quicker)
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M:%S%.f", "%Y/%m/%d %H:%M", "%Y/%m/%d",
    "%Y%m%d %H%M%S", "%Y%m%d %H:%M:%S", "%Y%m%d %H:%M:%S%.f", "%Y%m%d %H%M", "%Y%m%d",
    "%d-%b-%y", "%d-%b-%Y", "%d %b %Y", "%b %d, %Y",
    "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%m/%d/%Y", "%d/%m/%Y", "%m/%d/%y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y",
)
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M%z")
TIME_FORMATS = ("%H:%M:%S%.f", "%H:%M")
SAMPLE = 200
HEAD_BYTES = 1 << 16
_INTLIKE = re.compile(r"^\d+(\.0*)?$")
_VALUE = re.compile(r"^[\d\s:/.\-T+Z]*\d[\d\s:/.\-T+Z]*$|^\d{1,2}-[A-Za-z]{3}-\d{2,4}$|^(null|none|nan)$", re.IGNORECASE)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (for manifests and catalog metadata)."""
    check_file(path)  # never open a FIFO or a device: it would block or never end
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def symbol_of(path: str | Path) -> str:
    """Default symbol: the file name without its data suffixes (``AAPL.csv.gz`` -> ``AAPL``, ``000002.SZ.csv`` kept)."""
    name = Path(path).name
    for suffix in (".gz", ".bz2", ".zst"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    for suffix in (".csv", ".txt", ".tsv", ".json", ".parquet", ".pq"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def load_bars(path: str | Path, symbol: str | None = None, *, columns: Mapping[str, str | int] | None = None,
              encoding: str | None = None, tz: str | None = None, date_format: str | None = None,
              separator: str | None = None, has_header: bool | None = None, on_bad: OnBad = "raise",
              log: list | None = None) -> BarSeries:
    """Load one bar file (CSV/.gz/.txt, Parquet, freqtrade JSON) into a checked, ascending BarSeries.

    Anything wrong with the file (not a regular file, empty, binary, damaged gzip or Parquet, no
    data rows, a bad cell) is a DataError naming the file, and the line and field where there is one.
    """
    src = str(path)
    p = Path(path)
    if check_file(p).st_size == 0:  # a directory, FIFO or device is refused before anything opens it
        raise DataError(src, 0, "", "empty file")
    kind = _kind(p)
    try:
        if kind == "json":
            raw, extra = _json_raw(p, src)
            utc = True
        else:
            if kind == "parquet":
                df = _read_parquet(p, src)
                names, rows, header, layout, ragged = df.columns, None, 0, None, None
            else:
                df, names, rows, header, layout, ragged = _csv_frame(p, src, encoding, separator, has_header, columns)
            mapping = _map_columns(names, layout, columns, src)
            if kind == "parquet":
                _check_dtypes(df, names, mapping, src)
            raw, extra, utc = _frame_raw(df, names, mapping, rows, header, src, tz, date_format,
                                         fill_ohl=columns is not None, ragged=ragged)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, UnicodeError, ValueError, OverflowError, pl.exceptions.PolarsError,
            pl.exceptions.PanicException) as e:  # a damaged file: one line naming it, never a traceback
        raise DataError(src, 0, "", _unreadable(kind, p, e)) from None
    if len(raw.ts) == 0:
        raise DataError(src, 0, "", "no data rows (the file holds a header only)" if kind == "csv" else "no rows")
    idx = clean(raw, on_bad, log)
    if len(idx) == 0:
        raise DataError(src, 0, "", f"no bars left: all {len(raw.ts)} rows were dropped as bad (on_bad={on_bad!r})")
    same = len(idx) == len(raw.ts) and bool((idx[:-1] < idx[1:]).all())  # strictly rising n of n: identity

    def take(a: np.ndarray) -> np.ndarray:
        return a if same else a[idx]

    c = raw.cols
    return BarSeries(symbol or symbol_of(p), take(raw.ts), take(c["open"]), take(c["high"]), take(c["low"]),
                     take(c["close"]), take(c["volume"]), {k: take(v) for k, v in extra.items()},
                     "UTC" if utc else None, src)


def _unreadable(kind: str, p: Path, e: BaseException) -> str:
    """Why a file could not be read, on one line."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > 300:
        text = text[:300] + "..."
    if p.name.lower().endswith(".gz") and isinstance(e, (EOFError, zlib.error, gzip.BadGzipFile)):
        return f"truncated or damaged gzip file: {text}"
    what = {"parquet": "Parquet", "json": "freqtrade JSON"}.get(kind, "CSV")
    return f"cannot read it as {what}: {text}"


def _read_parquet(p: Path, src: str) -> pl.DataFrame:
    """A Parquet file as a frame; a DataError naming the file when it is not Parquet or is damaged."""
    try:
        return pl.read_parquet(p)
    except (OSError, pl.exceptions.PolarsError, pl.exceptions.PanicException, ValueError) as e:
        raise DataError(src, 0, "", _unreadable("parquet", p, e)) from None


def _check_dtypes(df: pl.DataFrame, names: list[str], mapping: dict[str, int], src: str) -> None:
    """Parquet columns must hold numbers (prices, volume) or stamps (ts): a column of another type is refused."""
    for key, i in mapping.items():
        dt = df.dtypes[i]
        if dt in (pl.String, pl.Null):  # text is parsed and checked cell by cell; all-null is a missing value
            continue
        if key in ("ts", "time"):
            ok = dt.is_numeric() or dt == pl.Date or isinstance(dt, pl.Datetime) or (key == "time" and dt == pl.Time)
        else:
            ok = dt.is_numeric()
        if not ok:
            want = "timestamps" if key in ("ts", "time") else "numbers"
            raise DataError(src, 0, names[i] or key, f"Parquet column type {dt} cannot hold {want}")


def _kind(p: Path) -> str:
    """'csv', 'parquet' or 'json' from the file name."""
    name = p.name.lower().removesuffix(".gz")
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "json" if name.endswith(".json") else "csv"


# ---------------------------------------------------------------- CSV

def _csv_frame(p: Path, src: str, encoding: str | None, separator: str | None, has_header: bool | None,
               columns: Mapping[str, str | int] | None = None):
    """Read a CSV as all-string columns: (frame, names as written, data-row -> frame-row map, header lines, layout)."""
    gz = p.name.lower().endswith(".gz")
    with (gzip.open(p, "rb") if gz else open(p, "rb")) as fh:
        head = fh.read(HEAD_BYTES)
    if encoding is None and b"\0" in head:  # text in UTF-8 or GBK holds no NUL byte
        nul = head.index(b"\0")
        utf16 = head.startswith((b"\xff\xfe", b"\xfe\xff"))
        raise DataError(src, head[:nul].count(b"\n") + 1, "",
                        "UTF-16 text: save the file as UTF-8 (or give its encoding)" if utf16 else
                        f"binary data, not CSV text (a NUL byte at offset {nul})")
    enc = encoding or _sniff_encoding(head)
    text = head.decode(enc, errors="replace").lstrip("\ufeff")
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if not first:
        raise DataError(src, 1, "", "empty file")
    sep = separator or max((",", ";", "\t"), key=first.count)
    cells = next(csv.reader([first], delimiter=sep))
    header = has_header if has_header is not None else not all(_VALUE.match(c.strip()) for c in cells if c.strip())
    utf8 = enc.replace("-", "").replace("_", "").lower() in ("utf8", "utf8sig", "ascii")
    source: Any = p if (utf8 and not gz) else None
    if source is None:
        data = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
        source = data if utf8 else _decode(data, enc, src, None if encoding else "UTF-8 or GBK").encode("utf-8")
    read: dict[str, Any] = {"separator": sep, "has_header": header, "infer_schema": False,
                            "truncate_ragged_lines": True, "quote_char": '"', "encoding": "utf8"}
    fast = _read_typed(source, read, cells, header, columns)
    if fast is not None:
        return fast, (fast.columns if header else _no_header_names(fast.width, cells)), None, int(header), \
            (None if header else _no_header_names(fast.width, cells)), None
    try:
        df = pl.read_csv(source, **read)
    except pl.exceptions.ComputeError as e:  # invalid UTF-8 after the sniffed head: fall back to GBK
        if encoding is not None or "utf" not in str(e).lower():
            raise DataError(src, 0, "", f"cannot read it as CSV: {' '.join(str(e).split())[:300]}") from None
        data = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
        source = _decode(data, "gbk", src, "UTF-8 or GBK").encode("utf-8")
        df = pl.read_csv(source, **read)
    ragged = _ragged(source, sep, df.width, int(header))
    blank = df.select(pl.all_horizontal(pl.all().is_null())).to_series() if df.width else None
    rows = None
    if blank is not None and blank.any():
        rows = np.flatnonzero(~blank.to_numpy())
        df = df.filter(~blank)
    if ragged:  # physical line -> frame row -> record (blank rows were filtered out)
        ragged = {(int(np.searchsorted(rows, r)) if rows is not None else r): v for r, v in ragged.items()}
    if header:
        return df, df.columns, rows, 1, None, ragged
    names = _no_header_names(df.width, cells)
    return df, names, rows, 0, names, ragged


def _decode(data: bytes, enc: str, src: str, what: str | None = None) -> str:
    """``data`` decoded; a DataError naming the line of the first byte that is not ``enc`` text."""
    try:
        return data.decode(enc)
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(src, line, "", f"not {what or enc} text (byte 0x{data[e.start]:02x} at offset {e.start}): "
                        "a binary or damaged file, or another encoding") from None


def _ragged(source: Any, sep: str, width: int, header: int) -> dict[int, str]:
    """Frame row -> why, for each row holding more non-empty fields than the ``width`` columns of the first line.

    polars drops such fields silently (truncate_ragged_lines); a value past the last column means
    the row is not what the header says it is. Lines are counted by their separators first (numpy),
    and only lines with too many are split as CSV (quotes respected).
    """
    data = source.read_bytes() if isinstance(source, Path) else source
    if not data or len(sep) != 1:
        return {}
    buf = np.frombuffer(data, np.uint8)
    out: dict[int, str] = {}
    line0, start = 0, 0
    while start < len(buf):  # in chunks of whole lines: the index arrays stay small on big files
        stop = min(start + RAGGED_CHUNK, len(buf))
        a = buf[start:stop]
        nl = np.flatnonzero(a == 10)
        if stop < len(buf):
            if len(nl) == 0:  # one line longer than a chunk: take it whole
                more = data.find(b"\n", stop)
                stop = len(buf) if more < 0 else more + 1
                a = buf[start:stop]
                nl = np.flatnonzero(a == 10)
            else:
                stop = start + int(nl[-1]) + 1
                a = buf[start:stop]
        count = np.bincount(np.searchsorted(nl, np.flatnonzero(a == ord(sep))), minlength=len(nl) + 1)
        for i in np.flatnonzero(count >= width):
            lo = start + (int(nl[i - 1]) + 1 if i > 0 else 0)
            hi = start + int(nl[i]) if i < len(nl) else stop
            text = bytes(data[lo:hi]).decode("utf-8", errors="replace").rstrip("\r").lstrip("\ufeff")
            cells = next(csv.reader([text], delimiter=sep, quotechar='"'), [])
            extra = [c for c in cells[width:] if c.strip()]
            line = line0 + int(i)
            if extra and line >= header:
                shown = ", ".join(repr(c) for c in extra[:3]) + (", ..." if len(extra) > 3 else "")
                out[line - header] = (f"{len(cells) - width} field(s) more than the {width} columns of the "
                                      f"{'header' if header else 'first line'} (column {width + 1} on: {shown})")
        line0 += len(nl)
        start = stop
    return out


STREAM_BYTES = 16 << 20  # files above this are parsed by polars' streaming engine
RAGGED_CHUNK = 16 << 20  # bytes scanned at once for rows with too many fields


def _read_typed(source: Any, read: dict[str, Any], cells: list[str], header: bool,
                columns: Mapping[str, str | int] | None) -> pl.DataFrame | None:
    """Fast path for clean files: parse the price/volume columns straight to Float64.

    Skips the all-string frame (half the memory, twice the speed on large files). Returns None
    whenever anything is unusual (a cell that is not a number, a missing cell, ragged rows), and
    the caller re-reads the file as strings so the error can name the exact line and field.
    """
    names = cells if header else _no_header_names(len(cells), cells)
    try:
        mapping = _map_columns(names, None if header else names, columns, "")
    except DataError:
        return None
    numeric = {i for key, i in mapping.items() if key not in ("ts", "time")}
    dtypes = [pl.Float64 if i in numeric else pl.String for i in range(len(cells))]
    opts = {k: v for k, v in read.items() if k != "infer_schema"}
    try:
        if isinstance(source, Path) and source.stat().st_size > STREAM_BYTES:  # stream big files: less memory
            names_in = cells if header else [f"column_{i + 1}" for i in range(len(cells))]
            df = pl.scan_csv(source, **{**opts, "truncate_ragged_lines": False},
                             schema_overrides=dict(zip(names_in, dtypes))).collect(engine="streaming")
        else:
            df = pl.read_csv(source, **{**opts, "truncate_ragged_lines": False}, schema_overrides=dtypes)
    except (pl.exceptions.PolarsError, ValueError):
        return None
    if df.width != len(cells) or any(c.null_count() for c in df.get_columns()):
        return None
    return df


def _sniff_encoding(head: bytes) -> str:
    """UTF-8 (BOM or not) if the head decodes as UTF-8, else GBK."""
    if head.startswith(b"\xef\xbb\xbf"):
        return "utf-8-sig"
    cut = head[: head.rfind(b"\n") + 1] if len(head) == HEAD_BYTES else head
    try:
        cut.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        return "gbk"


def _no_header_names(width: int, cells: list[str]) -> list[str]:
    """Standard column names of a header-less file with ``width`` columns."""
    if width >= 7 and len(cells) > 1 and ":" in cells[1] or width == 8:
        std = NO_HEADER[8]
    else:
        std = NO_HEADER.get(width, NO_HEADER[6] if width > 6 else NO_HEADER[5])
    return [std[i] if i < len(std) else f"column_{i + 1}" for i in range(width)]


# ---------------------------------------------------------------- columns

def _column_index(src: str, names: list[str], low: list[str], key: str, ref: int | str) -> int:
    """The column a user's ``columns`` mapping names for ``key``: a 0-based position or a header name."""
    if isinstance(ref, int):
        if not 0 <= ref < len(names):
            raise DataError(src, 1, str(ref), f"column {ref} out of range (file has {len(names)} columns)")
        return ref
    if ref.strip().lower() in low:
        return low.index(ref.strip().lower())
    raise DataError(src, 1, ref, f"no such column for {key} (have {', '.join(names)})")


def _map_columns(names: list[str], layout: list[str] | None, columns: Mapping[str, str | int] | None,
                 src: str) -> dict[str, int]:
    """Field -> column position, from aliases (or the header-less layout) overridden by ``columns``."""
    low = [n.strip().lower() for n in names]
    found: dict[str, int] = {}
    if layout is not None and not (columns and all(isinstance(v, int) for v in columns.values())):
        found = {STD_KEY[n]: i for i, n in enumerate(layout) if n in STD_KEY}
    elif layout is None:
        for key, aliases in ALIASES.items():
            for a in aliases:
                if a in low:
                    found[key] = low.index(a)
                    break
    for key, ref in (columns or {}).items():
        key = "ts" if key == "date" else key
        found[key] = _column_index(src, names, low, key, ref)
    if "ts" not in found and "time" in found:
        found["ts"] = found.pop("time")
    if "ts" not in found and layout is None and low and low[0] == "":  # unnamed pandas index holding the dates
        found["ts"] = 0
    need = ("ts", "close") if columns is not None else ("ts", "open", "high", "low", "close")
    for key in need:
        if key not in found:
            raise DataError(src, 1, key, f"no column found for {key} (header: {', '.join(names)})")
    return found


def _frame_raw(df: pl.DataFrame, names: list[str], mapping: dict[str, int], rows: np.ndarray | None, header: int,
               src: str, tz: str | None, date_format: str | None, fill_ohl: bool,
               ragged: dict[int, str] | None = None):
    """Cast the mapped columns of ``df`` to numpy and wrap them as RawBars (+ extras, + whether ts is UTC)."""
    n = df.height
    col = {k: df.to_series(i) for k, i in mapping.items()}
    cols = {}
    for f in BAR_FIELDS:
        if f in col:
            cols[f] = _floats(col[f])
        elif f == "volume":
            cols[f] = np.zeros(n)
        elif fill_ohl:
            cols[f] = cols.get("close", _floats(col["close"])).copy()
    extra = {k: _floats(s) for k, s in col.items() if k not in BAR_FIELDS and k not in ("ts", "time")}
    ts, ts_ok, time_ok, utc = _timestamps(col["ts"], col.get("time"), date_format, tz)
    shown = {k: names[i] or k for k, i in mapping.items()}
    for f in BAR_FIELDS:
        shown.setdefault(f, f)

    def line(rec: int) -> int:
        return int(rows[rec] if rows is not None else rec) + 1 + header

    def cell(key: str, rec: int) -> object:
        if key == "ts" and "time" in col and (time_ok is None or time_ok[rec]):
            return f"{col['ts'][rec]} {col['time'][rec]}"
        s = col.get(key)
        return None if s is None else s[rec]

    return RawBars(src, ts, ts_ok, cols, shown, cell, line, time_ok, extra=extra, ragged=ragged or {}), extra, utc


def _floats(s: pl.Series) -> np.ndarray:
    """A column as float64, NaN where missing or not a number (strip spaces only if the plain cast fails)."""
    f = s.cast(pl.Float64, strict=False)
    if s.dtype == pl.String and f.null_count() > s.null_count():
        f = s.str.strip_chars().cast(pl.Float64, strict=False)
    return f.to_numpy()


# ---------------------------------------------------------------- timestamps

def _timestamps(s: pl.Series, time: pl.Series | None, fmt: str | None, tz: str | None):
    """(ns int64, ok mask, time-part ok mask or None, is_utc) for a timestamp column and an optional time column."""
    time_ok = None
    if time is not None and fmt is not None and "%H" in fmt:  # the format covers date and time: join the text
        s, time = s.cast(pl.String) + " " + time.cast(pl.String), None
    ts, ok, utc = _parse_ts(s, fmt)
    if time is not None:
        tod, time_ok = _time_of_day(time)
        ts = ts + tod
        ok = ok & time_ok
    if tz is not None and not utc:
        conv = (pl.Series(np.where(ok, ts, 0)).cast(pl.Datetime("ns"))
                .dt.replace_time_zone(tz, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC"))
        ok = ok & conv.is_not_null().to_numpy()
        ts = conv.cast(pl.Int64).fill_null(0).to_numpy()
        utc = True
    return ts, ok, time_ok, utc


def _sample(s: pl.Series) -> pl.Series:
    """Up to 2*SAMPLE non-null stripped values from the head and tail of a string column."""
    n = len(s)
    part = s if n <= 2 * SAMPLE else pl.concat([s.head(SAMPLE), s.tail(SAMPLE)])
    return part.drop_nulls().str.strip_chars()


def _parse_ts(s: pl.Series, fmt: str | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """Parse one timestamp column of any dtype to (ns, ok, is_utc); formats are detected from a sample."""
    if s.dtype == pl.Date:
        s = s.cast(pl.Datetime("ns"))
    if isinstance(s.dtype, pl.Datetime):
        utc = s.dtype.time_zone is not None
        out = s.dt.convert_time_zone("UTC") if utc else s
        return _ns(out.dt.cast_time_unit("ns"), s)[:2] + (utc,)
    if s.dtype.is_numeric():
        return _numeric_ts(s, s)
    if fmt is None and len(s) and s[0] is not None:  # an ISO column parses whole on the first try:
        first = s[0]                                  # skip the sampling (the sample would pick it too)
        for shape, guess in _COMMON_SHAPES:
            if shape.match(first):
                out = s.str.to_datetime(guess, time_unit="ns", strict=False, cache=False)
                if out.null_count() == s.null_count():
                    return _ns(out, s) + (False,)
                break
    if fmt is None:
        sample = _sample(s)
        if len(sample) and sample.str.contains(r"^\d+(\.0*)?$").all():
            return _numeric_ts(s.str.strip_chars().str.replace(r"\.0*$", ""), s)
        fmt = _best_format(sample)
        if fmt is None:
            return np.zeros(len(s), np.int64), np.zeros(len(s), bool), False
    aware = "%z" in fmt
    t = s.str.replace(r"Z$", "+00:00") if aware else s
    out = t.str.to_datetime(fmt, time_unit="ns", strict=False, cache=False)
    if out.null_count() > s.null_count():  # slow path: spaces, or date-only rows among date-time rows
        t = t.str.strip_chars()
        out = t.str.to_datetime(fmt, time_unit="ns", strict=False, cache=False)
        for alt in (AWARE_FORMATS if aware else DATE_FORMATS):
            if out.null_count() == s.null_count():
                break
            if alt != fmt and _family(alt) == _family(fmt):
                out = out.fill_null(t.str.to_datetime(alt, time_unit="ns", strict=False, cache=False))
    if aware:
        out = out.dt.convert_time_zone("UTC")
    ts, ok = _ns(out, s)
    return ts, ok, aware


def _family(fmt: str) -> str:
    """The date part of a format, so that only formats with the same date layout are mixed in one column."""
    return re.split(r"[ T]%H", fmt)[0]


def _best_format(sample: pl.Series) -> str | None:
    """The candidate strftime format that parses the most sample values (None if none parses any)."""
    best, hits = None, 0
    zsample = sample.str.replace(r"Z$", "+00:00")
    for fmt in _likely_first(DATE_FORMATS + AWARE_FORMATS, sample[0] if len(sample) else ""):
        got = len(sample) - (zsample if "%z" in fmt else sample).str.to_datetime(
            fmt, time_unit="ns", strict=False, cache=False).null_count()
        if got > hits:
            best, hits = fmt, got
            if got == len(sample):
                break
    return best


_COMMON_SHAPES = tuple((re.compile(p), f) for p, f in (
    (r"^\d{4}-\d{2}-\d{2}$", "%Y-%m-%d"),
    (r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$", "%Y-%m-%d %H:%M:%S"),
    (r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$", "%Y-%m-%d %H:%M"),
))


def _likely_first(formats: tuple[str, ...], value: str) -> list[str]:
    """``formats`` with those Python's strptime accepts for ``value`` moved to the front (order kept).

    Only a cheaper search order: the polars check over the whole sample still decides.
    """
    for shape, fmt in _COMMON_SHAPES:  # the usual ISO forms: no need to try every format
        if shape.match(value) and fmt in formats:
            return [fmt] + [f for f in formats if f != fmt]
    value = value.replace("Z", "+00:00") if value.endswith("Z") else value
    fits, rest = [], []
    for fmt in formats:
        try:
            datetime.strptime(value, fmt.replace("%.f", ".%f"))
            fits.append(fmt)
        except ValueError:
            rest.append(fmt)
    return fits + rest


def _numeric_ts(s: pl.Series, orig: pl.Series) -> tuple[np.ndarray, np.ndarray, bool]:
    """Integer stamps: YYYYMMDD[HHMM[SS]] when they read as such, else unix s/ms/us/ns by magnitude (UTC)."""
    v = s.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    sample = v.drop_nulls()
    if len(sample) == 0:
        return np.zeros(len(s), np.int64), np.zeros(len(s), bool), False
    lo, hi = int(sample.min()), int(sample.max())
    for digits, fmt in ((8, "%Y%m%d"), (12, "%Y%m%d%H%M"), (14, "%Y%m%d%H%M%S")):
        if 19 * 10 ** (digits - 2) <= lo and hi < 22 * 10 ** (digits - 2):
            out = v.cast(pl.String).str.to_datetime(fmt, time_unit="ns", strict=False, cache=False)
            if out.null_count() < len(s):
                ts, ok = _ns(out, orig)
                return ts, ok, False
    mag = max(abs(lo), abs(hi))
    mult = 10 ** 9 if mag < 10 ** 11 else 10 ** 6 if mag < 10 ** 14 else 10 ** 3 if mag < 10 ** 17 else 1
    a = v.fill_null(0).to_numpy().astype(np.int64)
    ok = v.is_not_null().to_numpy() & (np.abs(a) <= np.iinfo(np.int64).max // mult)  # no silent int64 wrap
    return np.where(ok, a, 0) * mult, ok, True


def _ns(out: pl.Series, orig: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """ns int64 values (0 where null) and the not-null mask of a parsed Datetime column."""
    i = out.cast(pl.Int64)
    if i.null_count() == 0:
        return i.to_numpy(), np.ones(len(i), dtype=bool)
    return i.fill_null(0).to_numpy(), i.is_not_null().to_numpy()


def _time_of_day(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """ns since midnight from HH:MM[:SS[.f]] text or HHMM / HHMMSS / HHMMSSmmm digits (leading zero optional)."""
    if s.dtype == pl.String and _sample(s).str.contains(":").any():
        t = s.str.strip_chars()
        best = min(TIME_FORMATS, key=lambda f: _sample(t).str.to_time(f, strict=False).null_count())
        out = t.str.to_time(best, strict=False).cast(pl.Int64)
        return out.fill_null(0).to_numpy(), out.is_not_null().to_numpy()
    v = s.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    if s.dtype == pl.String:  # width from the text, so zero-padded 0931 and unpadded 93100000 both work
        width = int(s.str.strip_chars().str.replace(r"\.0*$", "").str.len_chars().max() or 0)
    else:
        width = len(str(int(v.drop_nulls().max() or 0)))
    a = v.fill_null(-1).to_numpy()
    ms = np.zeros_like(a)
    if width > 6:  # HHMMSSmmm
        ms, a = a % 1000, a // 1000
        hh, mm, ss = a // 10000, a // 100 % 100, a % 100
    elif width > 4:  # HHMMSS
        hh, mm, ss = a // 10000, a // 100 % 100, a % 100
    else:  # HHMM
        hh, mm, ss = a // 100, a % 100, np.zeros_like(a)
    ok = (a >= 0) & (hh < 24) & (mm < 60) & (ss < 61)
    ns = ((hh * 60 + mm) * 60 + ss) * 10 ** 9 + ms * 10 ** 6
    return np.where(ok, ns, 0).astype(np.int64), ok


# ---------------------------------------------------------------- JSON

def _json_raw(p: Path, src: str) -> tuple[RawBars, dict[str, np.ndarray]]:
    """freqtrade candles ``[[unix_ms, o, h, l, c, v], ...]`` as RawBars (line = row number, UTC)."""
    data = gzip.decompress(p.read_bytes()) if p.name.lower().endswith(".gz") else p.read_bytes()
    text = _decode(data, "utf-8", src)
    try:
        rows = json.loads(text)
        arr = np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    except (ValueError, TypeError) as e:
        raise DataError(src, 1, "", f"not a freqtrade candle array [[ms, o, h, l, c, v], ...]: {e}") from None
    if arr.shape[1] < 5:
        raise DataError(src, 1, "", f"candles have {arr.shape[1]} fields, need at least 5")
    ok = np.isfinite(arr[:, 0])
    ts = np.where(ok, arr[:, 0], 0).astype(np.int64) * 1_000_000
    cols = {f: arr[:, i + 1].copy() for i, f in enumerate(BAR_FIELDS) if i + 1 < arr.shape[1]}
    cols.setdefault("volume", np.zeros(len(arr)))
    names = {k: k for k in ("ts", *BAR_FIELDS)}

    def cell(key: str, rec: int) -> object:
        v = rows[rec][0 if key == "ts" else BAR_FIELDS.index(key) + 1]
        return None if v is None else str(v)

    return RawBars(src, ts, ok, cols, names, cell, lambda r: r + 1), {}
