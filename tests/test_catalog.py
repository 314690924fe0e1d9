"""The Parquet catalog: exact round trips, metadata, atomic writes and all-or-nothing imports."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tradeloop.data import catalog as catalog_mod
from tradeloop.data.catalog import Catalog, file_sha256, import_files
from tradeloop.data.errors import DataError
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import BAR_FIELDS, BarSeries

ROUND_TRIP = ["stockhistorydata/000300.csv", "freqtrade/UNITTEST_BTC-1m.json", "zsh_a_etf/999999.SH.csv",
              "zipline/AAPL.csv.gz", "qbot/000002.SZ.csv"]


def same_bits(a: BarSeries, b: BarSeries) -> bool:
    """Every array byte-for-byte equal (NaN included), same extras, tz, symbol and source."""
    arrays = all(a.column(f).tobytes() == b.column(f).tobytes() and a.column(f).dtype == b.column(f).dtype
                 for f in ("ts", *BAR_FIELDS))
    extras = a.extra.keys() == b.extra.keys() and all(a.extra[k].tobytes() == b.extra[k].tobytes() for k in a.extra)
    return arrays and extras and (a.symbol, a.tz, a.source) == (b.symbol, b.tz, b.source)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("rel", ROUND_TRIP)
def test_round_trip_is_bit_identical(shared_data, tmp_path, rel):
    s = load_bars(shared_data / rel)
    cat = Catalog(tmp_path)
    dest = cat.write(s)
    assert dest == tmp_path / f"symbol={s.symbol}" / "bars.parquet"
    back = cat.read(s.symbol)
    assert same_bits(s, back)
    assert back.ts.dtype == np.int64 and back.close.dtype == np.float64


def test_ts_column_is_datetime_ns_naive_or_utc(shared_data, tmp_path):
    cat = Catalog(tmp_path)
    naive = cat.write(load_bars(shared_data / "zipline/AAPL.csv.gz"))
    utc = cat.write(load_bars(shared_data / "freqtrade/UNITTEST_BTC-1m.json"))
    assert str(pq.read_schema(naive).field("ts").type) == "timestamp[ns]"
    assert str(pq.read_schema(utc).field("ts").type) == "timestamp[ns, tz=UTC]"
    assert cat.read("UNITTEST_BTC-1m").tz == "UTC" and cat.read("AAPL").tz is None


def test_read_with_start_and_end(shared_data, tmp_path):
    s = load_bars(shared_data / "zipline/AAPL.csv.gz")
    cat = Catalog(tmp_path)
    cat.write(s)
    part = cat.read("AAPL", "2013-01-01", "2014-01-01")
    assert same_bits(part, s.between(int(np.datetime64("2013-01-01", "ns").astype(np.int64)),
                                     int(np.datetime64("2014-01-01", "ns").astype(np.int64))))
    assert len(part) == 252
    assert len(cat.read("AAPL", start=int(s.ts[-1]))) == 1


def test_meta_symbols_and_contains(shared_data, tmp_path):
    path = shared_data / "qbot/000002.SZ.csv"
    symbols = import_files([path, shared_data / "zipline/MSFT.csv.gz"], tmp_path)
    cat = Catalog(tmp_path)
    assert symbols == ["000002.SZ", "MSFT"] and cat.symbols() == ["000002.SZ", "MSFT"]
    assert "MSFT" in cat and "AAPL" not in cat and "../x" not in cat
    m = cat.meta("000002.SZ")
    assert m["source"] == str(path) and m["source_sha256"] == file_sha256(path)
    assert (m["rows"], m["tz"], m["extra"]) == (2442, None, ["pre_close", "amount"])
    assert m["start"] == int(np.datetime64("2010-01-04", "ns").astype(np.int64))


def test_missing_symbol_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no symbol 'NOPE'"):
        Catalog(tmp_path).read("NOPE")
    assert Catalog(tmp_path / "absent").symbols() == []


def test_rewrite_replaces_and_failed_write_keeps_old_data(shared_data, tmp_path, monkeypatch):
    cat = Catalog(tmp_path)
    full = load_bars(shared_data / "zipline/AAPL.csv.gz")
    cat.write(full.between(None, int(full.ts[10])))
    cat.write(full)
    assert len(cat.read("AAPL")) == 754
    before = snapshot(tmp_path)

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(catalog_mod.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        cat.write(full.between(None, int(full.ts[5])))
    assert snapshot(tmp_path) == before, "old file intact, no temp file left behind"
    monkeypatch.undo()
    assert same_bits(cat.read("AAPL"), full)


def test_import_is_all_or_nothing(shared_data, tmp_path):
    good = [shared_data / "zipline/AAPL.csv.gz", shared_data / "vnpy/000300.csv"]
    bad = shared_data / "pyalgotrade/orcl-2010-googlefinance-malformed.csv"
    with pytest.raises(DataError) as e:
        import_files([*good, bad], tmp_path / "fresh")
    assert (e.value.line, e.value.field) == (3, "Open")
    assert not (tmp_path / "fresh").exists() or snapshot(tmp_path / "fresh") == {}

    root = tmp_path / "cat"
    import_files([good[0]], root)
    before = snapshot(root)
    with pytest.raises(DataError):
        import_files([good[1], bad], root)
    assert snapshot(root) == before and Catalog(root).symbols() == ["AAPL"]
    assert import_files([bad], root, on_bad="drop") == ["orcl-2010-googlefinance-malformed"]
    assert len(Catalog(root).read("orcl-2010-googlefinance-malformed")) == 251


def test_import_refuses_two_files_with_one_symbol(shared_data, tmp_path):
    with pytest.raises(DataError, match="also comes from"):
        import_files([shared_data / "zipline/AAPL.csv.gz", shared_data / "zipline/AAPL.csv.gz"], tmp_path)
    assert Catalog(tmp_path).symbols() == []


def test_catalog_file_loads_back_through_load_bars(shared_data, tmp_path):
    s = load_bars(shared_data / "freqtrade/UNITTEST_BTC-1m.json")
    path = Catalog(tmp_path).write(s)
    again = load_bars(path, s.symbol)
    assert again.tz == "UTC" and again.ts.tobytes() == s.ts.tobytes() and again.close.tobytes() == s.close.tobytes()


def test_file_sha256_and_bad_symbol_names(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"x" * 3_000_000)
    assert file_sha256(p) == hashlib.sha256(b"x" * 3_000_000).hexdigest()
    with pytest.raises(ValueError):
        Catalog(tmp_path).path("../escape")


def test_an_import_that_cannot_write_its_last_file_replaces_none_of_the_others(shared_data, tmp_path, monkeypatch):
    """Every file is written aside before any stored file is replaced: a disk that fills up on the last
    symbol leaves the catalog exactly as it was (no partial import, no temp files)."""
    files = [shared_data / "zipline/AAPL.csv.gz", shared_data / "vnpy/000300.csv"]
    root = tmp_path / "cat"
    stored = load_bars(files[0])
    Catalog(root).write(stored.between(None, int(stored.ts[10])))   # 10 bars stored; the import brings all 754
    before = snapshot(root)
    real = catalog_mod.pq.write_table
    calls = []

    def full_on_second(table, where, **kw):
        calls.append(where)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(table, where, **kw)

    monkeypatch.setattr(catalog_mod.pq, "write_table", full_on_second)
    with pytest.raises(DataError, match="No space left on device") as e:
        import_files(files, root, replace=True)
    assert len(calls) == 2 and snapshot(root) == before and Catalog(root).symbols() == ["AAPL"]
    assert len(Catalog(root).read("AAPL")) == 10
    assert "nothing of this import was written" in str(e.value)
