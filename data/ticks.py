"""Tick files -> TickSeries: trades, level-1 quotes or snapshots of both, checked like bars.

Layouts detected (the header, or the field count of a header-less file, says which):

- vn.py snapshots ``symbol,date,time,lastPrice,lastVolume,bidPrice1,askPrice1,bidVolume1,askVolume1``
  (date and time in two columns; the symbol column names the series);
- backtrader ``ticksample.csv``: ``Datetime,Open,High,Low,Close,Volume,OpenInterest`` with O=H=L=C
  (price = Close, size = Volume; a row whose open/high/low differ from close is a bar: refused);
- backtrader ``bidask.csv`` ``TIMESTAMP,BID,ASK`` (quotes) and ``bidask2.csv`` (a header one name
  short of the rows: its first field is split into date and time; rows with status ``D``, dealt,
  are trades at the quote given, like backtrader reads them);
- pyalgotrade bitstamp trades without a header ``unix_s,price,amount`` and Mt.Gox trades
  ``id,price,amount,type`` (``id`` is the stamp in microseconds, ``type`` ask/bid);
- exchange trade exports: ``timestamp,...,side,price,amount`` with a header, or header-less
  ``ts,price,size`` / ``ts,price,size,side``; unix stamps in s, ms, us or ns by magnitude (UTC).

Anything else is stated with ``columns={"ts": ..., "price": ..., ...}`` (names or 0-based positions).
Stamps are int64 ns like bars (naive text keeps wall time; ``tz=`` converts it to UTC; unix stamps
are UTC). Ticks keep file order among equal stamps (``seq`` = data record number in the file).
"""
from __future__ import annotations

import csv
import gzip
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from tradeloop.data.errors import DataError, check_file
from tradeloop.data.loaders import (HEAD_BYTES, _VALUE, _column_index, _decode, _ragged, _sniff_encoding, _timestamps,
                                     symbol_of)
from tradeloop.data.schema import TICK_FIELDS, TickSeries
from tradeloop.data.validate import LOG, MAX_PRICE, MAX_VOLUME, EXAMPLE_LINES, _fmt_ts, _rising

TickOnBad = Literal["raise", "drop"]

# Header aliases, matched case-insensitively on stripped names; earlier entries win.
TICK_ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("datetime", "timestamp", "ts", "date time", "date_time", "time_stamp", "transact_time"),
    "date": ("date", "trade_date", "tradingday", "actionday"),
    "time": ("time", "updatetime", "update_time"),
    "symbol": ("symbol", "vtsymbol", "instrument", "instrumentid", "code"),
    "price": ("price", "lastprice", "last_price", "last", "trade_price"),
    "size": ("size", "amount", "qty", "quantity", "lastvolume", "last_volume", "last_size"),
    "bid": ("bid", "bidprice1", "bid_price", "bidprice", "bid1", "bid_price1"),
    "ask": ("ask", "askprice1", "offer", "ask_price", "askprice", "ask1", "ask_price1"),
    "bid_size": ("bid_size", "bidvolume1", "bidsize", "vol bid", "bid_volume", "bid_volume1", "bidvol1"),
    "ask_size": ("ask_size", "askvolume1", "asksize", "vol offer", "ask_volume", "ask_volume1", "askvol1"),
    "side": ("side", "taker_side", "aggressor", "type"),
    "status": ("status",),
    # bar-shaped tick files (backtrader ticksample.csv): price = close, size = volume, O=H=L=C checked
    "close": ("close",), "volume": ("volume", "vol"), "open": ("open",), "high": ("high",), "low": ("low",),
}
NO_HEADER = {3: ("ts", "price", "size"), 4: ("ts", "price", "size", "side")}
SIDES = {"buy": 1, "b": 1, "bid": 1, "1": 1, "+1": 1, "sell": -1, "s": -1, "ask": -1, "-1": -1, "0": 0, "": 0}
PRICES = ("price", "bid", "ask")
SIZES = ("size", "bid_size", "ask_size")


def load_ticks(path: str | Path, symbol: str | None = None, *, columns: Mapping[str, str | int] | None = None,
               tz: str | None = None, date_format: str | None = None, encoding: str | None = None,
               separator: str | None = None, has_header: bool | None = None, on_bad: TickOnBad = "raise",
               log: list | None = None, compact: bool = False) -> TickSeries:
    """Load one tick file (CSV, .csv.gz, .txt, or Parquet: :func:`load_ticks_parquet`) into a checked
    TickSeries in (ts, seq) order.

    A bad row (unparseable stamp, garbage or non-finite value, non-positive price, negative size,
    crossed quote, a value past the bounds, a stamp earlier than one before it) is a DataError naming
    file, line and field; ``on_bad="drop"`` drops just those rows (out of order: the fewest rows that
    leave the stamps never decreasing) and logs them. Equal stamps are fine and keep file order.
    """
    if on_bad not in ("raise", "drop"):
        raise DataError(str(path), 0, "", f"on_bad={on_bad!r} is not for ticks: use 'raise' or 'drop'")
    src = str(path)
    p = Path(path)
    if check_file(p).st_size == 0:
        raise DataError(src, 0, "", "empty file")
    if p.name.lower().endswith(".parquet"):
        return load_ticks_parquet(p, symbol, tz=tz, compact=compact)
    try:
        df, names, line, layout, hint = _read_csv(p, src, encoding, separator, has_header)
    except DataError:
        raise
    except (OSError, EOFError, zlib.error, UnicodeError, ValueError, pl.exceptions.PolarsError,
            pl.exceptions.PanicException) as e:
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise DataError(src, 0, "", f"cannot read it as tick CSV: {text}") from None
    if df.height == 0:
        raise DataError(src, 0, "", "no data rows (the file holds a header only)")
    mapping = _map(names, layout, columns, src)
    raw = _Raw(src, df, names, mapping, line, tz, date_format or hint)
    keep = _check(raw, on_bad, log)
    if len(keep) == 0:
        raise DataError(src, 0, "", f"no ticks left: all {df.height} rows were dropped as bad (on_bad={on_bad!r})")
    sym = symbol or raw.symbol(keep) or symbol_of(p)
    c = raw.cols
    return TickSeries(sym, raw.ts[keep], keep.astype(np.int64), *(c[f][keep] for f in TICK_FIELDS),
                      raw.side[keep], "UTC" if raw.utc else None, src)


# ---------------------------------------------------------------- reading

def _read_csv(p: Path, src: str, encoding: str | None, separator: str | None, has_header: bool | None):
    """(all-string frame, column names, record -> physical line, header-less layout or None)."""
    data = p.read_bytes()
    if p.name.lower().endswith(".gz"):
        data = gzip.decompress(data)
    head = data[:HEAD_BYTES]
    if encoding is None and b"\0" in head:
        nul = head.index(b"\0")
        raise DataError(src, head[:nul].count(b"\n") + 1, "", f"binary data, not CSV text (a NUL byte at offset {nul})")
    enc = encoding or _sniff_encoding(head)
    if enc.replace("-", "").replace("_", "").lower() not in ("utf8", "ascii"):
        data = _decode(data, enc, src).encode("utf-8")
    else:
        _decode(data, "utf-8", src)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n", 2)
    first = lines[0].decode().rstrip("\r")
    if not first.strip():
        raise DataError(src, 1, "", "empty first line: not a tick file")
    sep = separator or max((",", ";", "\t"), key=first.count)
    cells = next(csv.reader([first], delimiter=sep))
    header = has_header if has_header is not None else not any(_VALUE.match(c.strip()) for c in cells if c.strip())
    nhead = int(header)
    body = [ln.decode().rstrip("\r") for ln in lines[nhead:nhead + 1]]
    width = len(next(csv.reader(body, delimiter=sep), cells)) if body and body[0].strip() else len(cells)
    layout, hint = None, None
    if header:
        names = [c.strip() for c in cells]
        row = next(csv.reader(body, delimiter=sep))
        if width == len(names) + 1 and ":" in row[1]:  # bidask2.csv: "TimeStamp" holds date and time fields
            names = ["date", "time", *names[1:]]
            if re.fullmatch(r"\d\d/\d\d/\d\d", row[0].strip()):
                hint = "%d/%m/%y"  # backtrader reads bidask2.csv's 01/03/16 as 1 March 2016 (dd/mm/yy)
        names += [f"column_{i + 1}" for i in range(len(names), width)]
    else:
        layout = NO_HEADER.get(width)
        names = [f"column_{i + 1}" for i in range(width)]
    df = pl.read_csv(data, has_header=False, skip_rows=nhead, infer_schema=False, truncate_ragged_lines=True,
                     new_columns=[f"c{i}" for i in range(width)], separator=sep, quote_char='"', encoding="utf8")
    if df.width < width:
        names = names[:df.width]
    ragged = _ragged(data, sep, df.width, nhead)
    short = _short(data, sep, df.width, nhead)
    if short is not None:
        raise DataError(src, short[0], "", f"{short[1]} field(s) where the rows have {df.width}: a truncated line")
    blank = df.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    rows = np.arange(df.height)
    if blank.any():
        rows = np.flatnonzero(~blank)
        df = df.filter(~pl.Series(blank))
    if ragged:
        first_bad = min(ragged)
        raise DataError(src, first_bad + 1 + nhead, "", ragged[first_bad])

    def line(rec: int) -> int:
        return int(rows[rec]) + 1 + nhead

    return df, names, line, layout, hint


def _short(data: bytes, sep: str, width: int, nhead: int) -> tuple[int, int] | None:
    """(physical line, fields) of the first non-blank data line with fewer fields than ``width``, or None."""
    buf = np.frombuffer(data, np.uint8)
    nl = np.flatnonzero(buf == 10)
    count = np.bincount(np.searchsorted(nl, np.flatnonzero(buf == ord(sep))), minlength=len(nl) + 1)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    length = ends - starts - (buf[np.maximum(ends - 1, 0)] == 13)
    bad = np.flatnonzero((count < width - 1) & (length > 0))
    bad = bad[bad >= nhead]
    if len(bad) == 0 or '"' in sep:
        return None
    i = int(bad[0])
    line = bytes(data[starts[i]:ends[i]]).decode("utf-8", "replace")
    if '"' in line:  # quoted separators: let the CSV reader decide
        return None
    return i + 1, int(count[i]) + 1


def _map(names: list[str], layout: tuple[str, ...] | None, columns: Mapping[str, str | int] | None,
         src: str) -> dict[str, int]:
    """Field -> column position from the aliases (or the header-less layout), overridden by ``columns``."""
    low = [n.strip().lower() for n in names]
    found: dict[str, int] = {}
    if layout is not None:
        found = {k: i for i, k in enumerate(layout)}
    else:
        for key, aliases in TICK_ALIASES.items():
            for a in aliases:
                hit = next((i for i, n in enumerate(low) if n == a or n.startswith(a + " (")), None)
                if hit is not None and hit not in found.values():
                    found[key] = hit
                    break
        if "ts" not in found and "date" not in found and "time" not in found and "id" in low:
            found["ts"] = low.index("id")  # Mt.Gox / pyalgotrade trades: id is the stamp in microseconds
    for key, ref in (columns or {}).items():
        if key not in (*TICK_FIELDS, "ts", "date", "time", "side", "symbol", "status"):
            raise DataError(src, 1, str(ref), f"unknown tick field {key!r} in columns")
        found[key] = _column_index(src, names, low, key, ref)
    if "ts" not in found:
        if "date" in found:
            found["ts"] = found.pop("date")
        elif "time" in found:
            found["ts"] = found.pop("time")
        else:
            raise DataError(src, 1, "ts", f"no timestamp column found (header: {', '.join(names)})")
    if "price" not in found and "close" in found:
        found["price"] = found.pop("close")
        if "size" not in found and "volume" in found:
            found["size"] = found.pop("volume")
    if not any(k in found for k in PRICES):
        raise DataError(src, 1, "price", f"no price, bid or ask column found (header: {', '.join(names)}); "
                        "name them with columns={'ts': ..., 'price': ...}")
    return found


class _Raw:
    """Parsed columns of one tick file in file order, before checks (NaN = empty cell)."""

    def __init__(self, src: str, df: pl.DataFrame, names: list[str], mapping: dict[str, int], line, tz, fmt):
        self.src, self.df, self.mapping, self.line = src, df, mapping, line
        self.shown = {k: (names[i] or k) for k, i in mapping.items()}
        n = df.height
        col = {k: df.to_series(i) for k, i in mapping.items()}
        self.text = col
        stamps = col["ts"]
        digits = None
        if stamps.dtype == pl.String and "time" not in col and fmt is None:  # unix stamps with a garbage cell:
            digits = stamps.str.contains(r"^\s*\d+(\.0*)?\s*$").fill_null(False)  # parse the rest as numbers
            if 0.5 < digits.mean() < 1:
                stamps = stamps.zip_with(digits, pl.Series([None] * n, dtype=pl.String))
            else:
                digits = None
        self.ts, self.ts_ok, self.time_ok, self.utc = _timestamps(stamps, col.get("time"), fmt, tz)
        if digits is not None:
            self.ts_ok = self.ts_ok & digits.to_numpy()
        self.cols: dict[str, np.ndarray] = {}
        self.garbage: dict[str, np.ndarray] = {}   # a cell that holds text but not a number
        self.empty: dict[str, np.ndarray] = {}
        for f in (*TICK_FIELDS, "open", "high", "low"):
            if f not in col:
                if f in TICK_FIELDS:
                    self.cols[f] = np.full(n, np.nan) if f in PRICES else np.zeros(n)
                continue
            s = col[f]
            v = s.str.strip_chars().cast(pl.Float64, strict=False)
            empty = (s.is_null() | (s.str.strip_chars() == "")).to_numpy()
            vals = v.to_numpy().astype(np.float64)
            self.garbage[f] = np.isnan(vals) & ~empty
            self.empty[f] = empty
            self.cols[f] = np.where(empty, 0.0, vals) if f in SIZES else vals
        self.side = np.zeros(n, np.int8)
        self.side_bad = np.zeros(n, bool)
        if "side" in col:
            low = col["side"].str.strip_chars().str.to_lowercase().fill_null("").to_numpy()
            uniq = {u: SIDES.get(u) for u in set(low.tolist())}
            self.side_bad = np.array([uniq[u] is None for u in low], bool) if None in uniq.values() else self.side_bad
            self.side = np.array([uniq[u] or 0 for u in low], np.int8)
        if "status" in col:  # bidask2.csv: a dealt row (D) traded at the one quote it gives
            dealt = (col["status"].str.strip_chars().str.to_uppercase() == "D").fill_null(False).to_numpy()
            c = self.cols
            at_ask = dealt & np.isnan(c["price"]) & (c["ask"] > 0) & np.isnan(c["bid"])
            at_bid = dealt & np.isnan(c["price"]) & (c["bid"] > 0) & np.isnan(c["ask"])
            for hit, q, sz, sd in ((at_ask, "ask", "ask_size", 1), (at_bid, "bid", "bid_size", -1)):
                c["price"] = np.where(hit, c[q], c["price"])
                c["size"] = np.where(hit, c[sz], c["size"])
                self.side = np.where(hit & (self.side == 0), sd, self.side).astype(np.int8)

    def cell(self, key: str, rec: int) -> object:
        if key == "ts" and "time" in self.text and (self.time_ok is None or self.time_ok[rec]):
            return f"{self.text['ts'][rec]} {self.text['time'][rec]}"
        return self.text[key][rec]

    def symbol(self, keep: np.ndarray) -> str | None:
        """The one value of a symbol column (a DataError naming the first row with another)."""
        if "symbol" not in self.text:
            return None
        s = self.text["symbol"].str.strip_chars().to_numpy()[keep]
        first = s[0]
        other = np.flatnonzero(s != first)
        if len(other):
            rec = int(keep[other[0]])
            raise DataError(self.src, self.line(rec), self.shown["symbol"],
                            f"symbol {s[other[0]]!r} differs from {first!r} on line {self.line(int(keep[0]))}: "
                            "one tick file holds one symbol")
        return str(first) if first else None


# ---------------------------------------------------------------- checks

def _row_checks(raw: _Raw) -> list[tuple[str, str, np.ndarray]]:
    """(check, field key, mask) in priority order: the first that a row fails names its problem."""
    c = raw.cols
    quotes = any(k in raw.mapping for k in ("bid", "ask"))
    out = [("bad_timestamp", "time" if raw.time_ok is not None else "ts", ~raw.ts_ok)]
    if raw.time_ok is not None:
        out = [("bad_timestamp", "time", ~raw.time_ok), ("bad_timestamp", "ts", ~raw.ts_ok)]
    for f in raw.garbage:
        out.append(("not_a_number", f, raw.garbage[f]))
    for f in ("price", "size"):  # a trade file needs both on every row; a quote or snapshot file may lack them
        if f in raw.mapping and not quotes:
            out.append(("missing", f, raw.empty[f]))
    for f in ("bid", "ask"):
        if f in raw.mapping and "price" not in raw.mapping:  # a quote-only row needs a bid or an ask
            other = "ask" if f == "bid" else "bid"
            out.append(("missing", f, raw.empty[f] & raw.empty.get(other, np.ones(len(c[f]), bool))))
    nothing = np.isnan(c["price"]) & np.isnan(c["bid"]) & np.isnan(c["ask"])
    key = next(k for k in PRICES if k in raw.mapping)
    out.append(("missing", key, nothing & ~raw.garbage[key]))
    out.append(("bad_side", "side", raw.side_bad))
    for f in (*TICK_FIELDS, "open", "high", "low"):
        if f in c:
            out.append(("non_finite", f, np.isinf(c[f])))
    for f in PRICES:
        out.append(("non_positive_price", f, c[f] <= 0))
    for f in SIZES:
        out.append(("negative_size", f, c[f] < 0))
    for f in PRICES:
        out.append(("out_of_bounds", f, np.isfinite(c[f]) & (c[f] > MAX_PRICE)))
    for f in SIZES:
        out.append(("out_of_bounds", f, np.isfinite(c[f]) & (c[f] > MAX_VOLUME)))
    out.append(("crossed_quote", "bid", c["bid"] > c["ask"]))
    for f in ("open", "high", "low"):  # a bar-shaped tick file: every row O=H=L=C
        if f in c:
            out.append(("not_a_tick", f, np.isfinite(c[f]) & (c[f] != c["price"])))
    return out


def _reason(raw: _Raw, check: str, key: str, rec: int) -> tuple[str, str]:
    """(field as written, reason) for row ``rec`` failing ``check`` on ``key``."""
    c = raw.cols
    field = raw.shown.get(key, key)
    if check == "bad_timestamp":
        text = raw.cell(key, rec)
        return field, "missing timestamp" if text in (None, "") else f"unparseable timestamp: {text!r}"
    if check == "not_a_number":
        return field, f"not a number: {raw.cell(key, rec)!r}"
    if check == "missing":
        return field, "missing value"
    if check == "bad_side":
        return field, f"unknown side {raw.cell(key, rec)!r} (want buy/sell, b/s, bid/ask or 1/-1)"
    v = float(c[key][rec])
    if check == "non_finite":
        return field, f"non-finite value: {raw.cell(key, rec)!r}"
    if check == "non_positive_price":
        return field, f"non-positive price: {v!r}"
    if check == "negative_size":
        return field, f"negative size: {v!r}"
    if check == "out_of_bounds":
        bound = MAX_VOLUME if key in SIZES else MAX_PRICE
        return field, f"{v!r} is out of bounds: |{key}| must be at most {bound:.0e} (beyond it money arithmetic overflows)"
    if check == "crossed_quote":
        return field, f"crossed quote: bid {v!r} > ask {float(c['ask'][rec])!r}"
    return field, (f"{field} {v!r} differs from close {float(c['price'][rec])!r}: a bar, not a tick "
                   "(load the file with load_bars)")


def _check(raw: _Raw, on_bad: str, log: list | None) -> np.ndarray:
    """Record indices to keep, in file order (never-decreasing stamps); raise on the first bad row unless drop."""
    checks = _row_checks(raw)
    n = len(raw.ts)
    bad = np.zeros(n, bool)
    for _, _, m in checks:
        bad |= m
    idx = np.flatnonzero(~bad)
    t = raw.ts[idx]
    back = np.zeros(len(t), bool)
    if len(t) > 1:
        back[1:] = t[1:] < np.maximum.accumulate(t)[:-1]
    if on_bad == "raise":
        first_bad = int(np.argmax(bad)) if bad.any() else n
        first_back = int(idx[back][0]) if back.any() else n
        if first_bad < n and first_bad <= first_back:
            check, key, _ = next(ch for ch in checks if ch[2][first_bad])
            field, reason = _reason(raw, check, key, first_bad)
            raise DataError(raw.src, raw.line(first_bad), field, reason)
        if first_back < n:
            pos = int(np.flatnonzero(idx == first_back)[0])
            j = int(np.argmax(t[:pos]))
            raise DataError(raw.src, raw.line(first_back), raw.shown.get("time", raw.shown["ts"]),
                            f"timestamp {_fmt_ts(t[pos])} out of order: earlier than {_fmt_ts(t[j])} "
                            f"on line {raw.line(int(idx[j]))}")
        return idx
    left = bad.copy()
    for check, _, m in checks:
        hit = m & left
        left &= ~hit
        _report(raw, log, check, np.flatnonzero(hit))
    if back.any():  # the fewest rows to drop: a longest run of never-decreasing stamps (ties in file order)
        rank = np.empty(len(t), np.int64)
        rank[np.argsort(t, kind="stable")] = np.arange(len(t))
        keep = _rising(rank)
        _report(raw, log, "out_of_order", idx[~keep])
        idx = idx[keep]
    return idx


def _report(raw: _Raw, log: list | None, check: str, recs: np.ndarray) -> None:
    """Log one group of dropped ticks through structlog and into ``log``."""
    if len(recs) == 0:
        return
    lines = [raw.line(int(r)) for r in np.sort(recs)[:EXAMPLE_LINES]]
    entry: dict[str, Any] = {"file": raw.src, "action": "drop", "check": check, "count": len(recs), "lines": lines}
    if log is not None:
        log.append(entry)
    LOG.warning("ticks_dropped", file=raw.src, check=check, count=len(recs), lines=lines)


# ---------------------------------------------------------------- Parquet

PARQUET_NAMES = {"ts": ("ts", "datetime", "timestamp"), "seq": ("seq",), "price": ("price", "last", "last_price"),
                 "size": ("size", "last_volume", "last_size", "volume"), "bid": ("bid",), "ask": ("ask",),
                 "bid_size": ("bid_size",), "ask_size": ("ask_size",), "side": ("side",)}


def load_ticks_parquet(path: str | Path, symbol: str | None = None, *, tz: str | None = None,
                       compact: bool = False) -> TickSeries:
    """A Parquet tick file (``ts`` timestamp or int64 ns; ``bid``/``ask``/sizes, ``last``/``price`` and
    ``last_volume``/``size``; ``seq``/``side`` optional) -> TickSeries, read row group by row group into
    preallocated columns, so the peak is the columns plus one row group (Arrow's buffers are released
    after each). Naive stamps are wall time (``tz=`` converts them to UTC), like the CSV path.

    ``compact=True`` stores each float column as float32 where every value is exactly representable
    (the values are unchanged: a tick price like 2400.0 or a size like 57 is exact in float32);
    ``seq`` becomes a rising int64 range when the file has none. The checks: stamps never decrease,
    prices positive (or NaN: no quote / no trade), sizes >= 0, bid <= ask; a bad row is a DataError
    naming its row.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    src = str(path)
    try:
        pf = pq.ParquetFile(src)
    except (OSError, pa.ArrowException) as e:
        raise DataError(src, 0, "", f"cannot read it as Parquet: {' '.join(str(e).split())[:300]}") from None
    names = pf.schema_arrow.names
    lower = {n.lower(): n for n in names}
    col = {k: next((lower[a] for a in alias if a in lower), None) for k, alias in PARQUET_NAMES.items()}
    if col["ts"] is None:
        raise DataError(src, 0, "ts", f"no timestamp column (ts, datetime or timestamp) among {names}")
    if col["price"] is None and col["bid"] is None:
        raise DataError(src, 0, "", f"neither trade prices (price/last) nor quotes (bid/ask) among {names}")
    ts_type = pf.schema_arrow.field(col["ts"]).type
    utc = getattr(ts_type, "tz", None) is not None
    n = pf.metadata.num_rows
    wide = np.float32 if compact else np.float64   # compact: float32 until a value is not exact in it
    out: dict[str, np.ndarray] = {"ts": np.empty(n, np.int64)}
    for f in TICK_FIELDS:
        out[f] = np.empty(n, wide) if col[f] is not None else (
            np.full(n, np.nan, wide) if f in PRICES else np.zeros(n, wide))
    seq = np.empty(n, np.int64) if col["seq"] is not None else None
    side = np.zeros(n, np.int8)
    pool = pa.default_memory_pool()
    a = 0
    for i in range(pf.num_row_groups):
        g = pf.read_row_group(i, columns=[c for c in col.values() if c is not None])
        b = a + g.num_rows
        t = g.column(col["ts"])
        out["ts"][a:b] = (t.cast(pa.int64()) if pa.types.is_timestamp(t.type) else t).to_numpy()
        part = {}
        for f in TICK_FIELDS:
            if col[f] is not None:
                v = part[f] = g.column(col[f]).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                if out[f].dtype == np.float32 and not np.array_equal(v.astype(np.float32), v, equal_nan=True):
                    wider = np.empty(n, np.float64)   # not exact in float32: this column stays float64
                    wider[:a] = out[f][:a]
                    out[f] = wider
                out[f][a:b] = v
        if seq is not None:
            seq[a:b] = g.column(col["seq"]).to_numpy()
        if col["side"] is not None:
            side[a:b] = g.column(col["side"]).to_numpy(zero_copy_only=False)
        _check_parquet(src, a, out["ts"][max(a - 1, 0):b], part, a > 0)
        del g, t, part
        pool.release_unused()
        a = b
    ts = out["ts"]
    if tz is not None and not utc:   # naive wall time in ``tz`` -> UTC ns, as the CSV path does
        import polars as pl
        ts = (pl.Series(ts).cast(pl.Datetime("ns")).dt.replace_time_zone(tz, ambiguous="earliest")
              .dt.convert_time_zone("UTC").cast(pl.Int64).to_numpy())
    sym = symbol or symbol_of(Path(src))
    return TickSeries(sym, ts, seq if seq is not None else np.arange(n, dtype=np.int64),
                      *(out[f] for f in TICK_FIELDS), side, "UTC" if utc or tz is not None else None, src)


def _check_parquet(src: str, start: int, ts: np.ndarray, c: dict[str, np.ndarray], carry: bool) -> None:
    """DataError at the first bad row of a row group starting at row ``start`` (rows 1-based): decreasing
    stamp (``ts`` begins with the previous group's last when ``carry``), bad price or size, crossed quote."""
    def bad(mask: np.ndarray, field: str, why: str) -> None:
        if mask.any():
            row = start + int(np.argmax(mask)) + 1
            raise DataError(src, row, field, f"{why} (row {row} of the Parquet file)")
    back = ts[1:] < ts[:-1]
    bad(back if carry else np.concatenate(([False], back)), "ts", "timestamp earlier than the one before it")
    for f in PRICES:
        if f in c:
            v = c[f]
            bad(~np.isnan(v) & ~((v > 0) & (v <= MAX_PRICE)), f, f"{f} must be a positive finite price")
    for f in SIZES:
        if f in c:
            v = c[f]
            bad(~((v >= 0) & (v <= MAX_VOLUME)), f, f"{f} must be a finite size >= 0")
    if "bid" in c and "ask" in c:
        bad(c["bid"] > c["ask"], "bid", "crossed quote: bid above ask")
