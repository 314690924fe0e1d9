"""Hostile files: every file a user can hand over is refused cleanly, and stored data is never lost.

The rule of the house, for ``backtest --data``, ``backtest --benchmark``, ``data import``,
``replay --data``, ``--catalog`` and ``--config``: a file that cannot be used gives exit status 2
and exactly one line on stderr naming the file (and the line and field where there is one),
never a traceback, never a hang (FIFOs and devices are refused from their type, before any open),
never a silently different result; and nothing is written (no run folder, no catalog change).

The hostile files are real files of ../shared/data corrupted here, in the test's own folder.
"""
from __future__ import annotations

import gzip
import os
import random
import shutil
import threading
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pytest

from tests.conftest import ORCL, SHARED_DATA, need
from tradeloop.data import catalog as catalog_mod
from tradeloop.data.catalog import Catalog
from tradeloop.data.loaders import load_bars
from tradeloop.data.validate import MAX_PRICE, MAX_VOLUME
from tradeloop.engine.cli.main import main

AAPL_GZ = SHARED_DATA / "zipline" / "AAPL.csv.gz"
BTC_JSON = SHARED_DATA / "freqtrade" / "UNITTEST_BTC-1m.json"
ORCL_2014 = SHARED_DATA / "backtrader" / "orcl-2014.txt"


# ---------------------------------------------------------------- making hostile files

def orcl_lines() -> list[str]:
    """backtrader's ORCL daily file as lines: ``Date,Open,High,Low,Close,Adj Close,Volume`` then 5036 rows."""
    return need(ORCL).read_text().splitlines()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def with_cell(tmp: Path, row: int, col: int, value: str, name: str = "orcl.csv") -> Path:
    """ORCL with data row ``row`` (1-based, so physical line row + 1) having ``value`` in column ``col``."""
    lines = orcl_lines()
    cells = lines[row].split(",")
    cells[col] = value
    lines[row] = ",".join(cells)
    return write_lines(tmp / name, lines)


def big_price(tmp: Path) -> Path:
    lines = orcl_lines()
    d, o, h, lo, c, a, v = lines[10].split(",")
    lines[10] = ",".join([d, o, "1e308", lo, "1e308", a, v])  # high and close: consistent, but absurd
    return write_lines(tmp / "orcl.csv", lines)


def just_over_price(tmp: Path) -> Path:
    lines = orcl_lines()
    d, o, h, lo, c, a, v = lines[10].split(",")
    lines[10] = ",".join([d, o, repr(MAX_PRICE * 2), lo, c, a, v])
    return write_lines(tmp / "orcl.csv", lines)


def truncated_mid_row(tmp: Path) -> Path:
    data = need(ORCL).read_bytes()
    cut = data.index(b"\n", 30_000) - 12  # inside the Volume cell of a row: its line ends early
    return (tmp / "orcl.csv").write_bytes(data[:cut]) and tmp / "orcl.csv"


def flipped_bytes(offset: int) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        data = bytearray(need(ORCL).read_bytes())
        data[offset:offset + 2] = b"\xff\xfe"  # not UTF-8, not GBK
        (tmp / "orcl.csv").write_bytes(bytes(data))
        return tmp / "orcl.csv"
    return make


def binary_garbage(tmp: Path) -> Path:
    (tmp / "bars.csv").write_bytes(random.Random(7).randbytes(20_000))
    return tmp / "bars.csv"


def binary_without_nul(tmp: Path) -> Path:
    rng = random.Random(8)
    (tmp / "bars.csv").write_bytes(bytes(rng.randrange(128, 256) for _ in range(20_000)))
    return tmp / "bars.csv"


def utf16(tmp: Path) -> Path:
    (tmp / "orcl.csv").write_bytes(need(ORCL).read_text().encode("utf-16"))
    return tmp / "orcl.csv"


def header_only(tmp: Path) -> Path:
    return write_lines(tmp / "orcl.csv", orcl_lines()[:1])


def empty(tmp: Path) -> Path:
    (tmp / "orcl.csv").write_bytes(b"")
    return tmp / "orcl.csv"


def blank_lines(tmp: Path) -> Path:
    (tmp / "orcl.csv").write_text("\n\n  \n")
    return tmp / "orcl.csv"


def extra_fields(tmp: Path) -> Path:
    lines = orcl_lines()
    lines[7] += ",99,17"  # line 8 has two fields more than the header
    return write_lines(tmp / "orcl.csv", lines)


def truncated_gzip(tmp: Path) -> Path:
    data = need(AAPL_GZ).read_bytes()
    (tmp / "AAPL.csv.gz").write_bytes(data[: len(data) // 2])
    return tmp / "AAPL.csv.gz"


def damaged_gzip(tmp: Path) -> Path:
    data = bytearray(need(AAPL_GZ).read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0x5A
    (tmp / "AAPL.csv.gz").write_bytes(bytes(data))
    return tmp / "AAPL.csv.gz"


def not_gzip(tmp: Path) -> Path:
    shutil.copy(need(ORCL), tmp / "orcl.csv.gz")  # plain text under a .gz name
    return tmp / "orcl.csv.gz"


def orcl_frame() -> pl.DataFrame:
    s = load_bars(need(ORCL))
    return pl.DataFrame({"ts": pl.Series(s.ts).cast(pl.Datetime("ns")), "open": s.open, "high": s.high,
                         "low": s.low, "close": s.close, "volume": s.volume})


def parquet_of(df: pl.DataFrame, tmp: Path) -> Path:
    df.write_parquet(tmp / "orcl.parquet")
    return tmp / "orcl.parquet"


def fake_parquet(tmp: Path) -> Path:
    shutil.copy(need(ORCL), tmp / "orcl.parquet")
    return tmp / "orcl.parquet"


def truncated_parquet(tmp: Path) -> Path:
    path = parquet_of(orcl_frame(), tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def parquet_text_close(tmp: Path) -> Path:
    df = orcl_frame().with_columns(pl.col("close").cast(pl.String))
    df = df.with_columns(pl.when(pl.int_range(pl.len()) == 20).then(pl.lit("n/a")).otherwise(pl.col("close"))
                         .alias("close"))
    return parquet_of(df, tmp)


def parquet_bool_close(tmp: Path) -> Path:
    return parquet_of(orcl_frame().with_columns(pl.col("close") > 10), tmp)


def parquet_list_ts(tmp: Path) -> Path:
    return parquet_of(orcl_frame().with_columns(pl.concat_list("open", "high").alias("ts")), tmp)


def parquet_huge_volume(tmp: Path) -> Path:
    df = orcl_frame().with_columns(pl.when(pl.int_range(pl.len()) == 30).then(1e300).otherwise(pl.col("volume"))
                                   .alias("volume"))
    return parquet_of(df, tmp)


def parquet_no_rows(tmp: Path) -> Path:
    return parquet_of(orcl_frame().head(0), tmp)


def truncated_json(tmp: Path) -> Path:
    data = need(BTC_JSON).read_bytes()
    (tmp / "BTC.json").write_bytes(data[: len(data) // 2])
    return tmp / "BTC.json"


def directory(tmp: Path) -> Path:
    (tmp / "orcl.csv").mkdir()
    return tmp / "orcl.csv"


def dev_zero(tmp: Path) -> Path:
    return Path("/dev/zero")


def dev_urandom(tmp: Path) -> Path:
    return Path("/dev/urandom")


def link_to_dev_zero(tmp: Path) -> Path:
    (tmp / "orcl.csv").symlink_to("/dev/zero")
    return tmp / "orcl.csv"


# name -> (maker, what the one line must hold besides the file's name: its line and field where it has them)
HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_mid_row": (truncated_mid_row, "field 'Volume': missing value"),
    "flipped_bytes_in_head": (flipped_bytes(2000), "not UTF-8 or GBK text"),
    "flipped_bytes_past_head": (flipped_bytes(150_000), "not UTF-8 or GBK text"),
    "binary_garbage": (binary_garbage, "binary data"),
    "binary_without_nul": (binary_without_nul, ""),
    "utf16": (utf16, ":1: UTF-16 text"),
    "empty": (empty, "empty file"),
    "blank_lines": (blank_lines, "empty file"),
    "header_only": (header_only, "no data rows"),
    "extra_fields": (extra_fields, ":8: 2 field(s) more than the 7 columns of the header"),
    "price_1e308": (big_price, ":11: field 'High': 1e+308 is out of bounds"),
    "price_over_bound": (just_over_price, ":11: field 'High': 2000000000000.0 is out of bounds"),
    "volume_1e300": (lambda t: with_cell(t, 10, 6, "1e300"), ":11: field 'Volume': 1e+300 is out of bounds"),
    "close_nan": (lambda t: with_cell(t, 10, 4, "NaN"), ":11: field 'Close': not a number"),
    "high_inf": (lambda t: with_cell(t, 10, 2, "inf"), ":11: field 'High': not a number"),
    "low_minus_inf": (lambda t: with_cell(t, 10, 3, "-inf"), ":11: field 'Low'"),
    "truncated_gzip": (truncated_gzip, "truncated or damaged gzip file"),
    "damaged_gzip": (damaged_gzip, "gzip"),
    "not_gzip": (not_gzip, "gzip"),
    "fake_parquet": (fake_parquet, "cannot read it as Parquet"),
    "truncated_parquet": (truncated_parquet, "cannot read it as Parquet"),
    "parquet_text_close": (parquet_text_close, ":21: field 'close': not a number: 'n/a'"),
    "parquet_bool_close": (parquet_bool_close, "field 'close': Parquet column type Boolean cannot hold numbers"),
    "parquet_list_ts": (parquet_list_ts, "field 'ts': Parquet column type List"),
    "parquet_volume_1e300": (parquet_huge_volume, ":31: field 'volume': 1e+300 is out of bounds"),
    "parquet_no_rows": (parquet_no_rows, "no rows"),
    "truncated_json": (truncated_json, "not a freqtrade candle array"),
    "directory": (directory, "is a directory, not a file"),
    "dev_zero": (dev_zero, "is a character device, not a regular file"),
    "dev_urandom": (dev_urandom, "is a character device, not a regular file"),
    "link_to_dev_zero": (link_to_dev_zero, "is a character device, not a regular file"),
}


@pytest.fixture
def fifo(tmp_path):
    """A FIFO at tmp/orcl.csv, and an event set if anything opened it for reading.

    A writer thread waits on it: a reader that wrongly opens it gets EOF at once instead of
    hanging the suite, and the event says so. Teardown releases the writer.
    """
    path = tmp_path / "fifo" / "orcl.csv"
    path.parent.mkdir()
    os.mkfifo(path)
    opened = threading.Event()

    def writer() -> None:
        with open(path, "wb"):
            opened.set()

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    yield path, opened
    if not opened.is_set():
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
    t.join(5)


# ---------------------------------------------------------------- the commands

def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (folders too, as empty entries)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>") for p in sorted(root.rglob("*"))}


def stored_catalog(tmp: Path) -> Path:
    """A catalog already holding ORCL (symbol ``orcl``) and AAPL."""
    root = tmp / "catalog"
    src = tmp / "src"
    src.mkdir()
    shutil.copy(need(ORCL), src / "orcl.csv")
    assert main(["data", "import", str(src / "orcl.csv"), str(need(AAPL_GZ)), "--catalog", str(root)]) == 0
    return root


def run_command(command: str, path: Path, tmp: Path) -> tuple[int, Path]:
    """Hand ``path`` to ``command``; (exit status, the folder that must stay as it was)."""
    out = tmp / "run"
    if command == "backtest --data":
        return main(["backtest", "sma_cross", "--data", str(path), "--out", str(out), "--quiet"]), out
    if command == "backtest --benchmark":
        return main(["backtest", "sma_cross", "--data", str(need(ORCL)), "--benchmark", str(path), "--out", str(out),
                     "--quiet"]), out
    if command == "data import":
        return main(["data", "import", str(path), "--catalog", str(tmp / "catalog")]), tmp / "catalog"
    if command == "replay --data":  # the file is read and checked before any broker is contacted
        return main(["replay", "--data", f"X={path}", "--mqtt", "mqtt://127.0.0.1:9"]), out
    raise AssertionError(command)


COMMANDS = ("backtest --data", "backtest --benchmark", "data import", "replay --data")


def assert_one_line_naming(capsys, path: Path, expect: str = "") -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert str(path) in lines[0], lines[0]
    assert expect in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- every hostile file, every command

@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_file_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, case, command):
    maker, expect = HOSTILE[case]
    path = maker(tmp_path)
    catalog = stored_catalog(tmp_path) if command == "data import" else None
    before = snapshot(catalog) if catalog else None
    capsys.readouterr()
    code, kept = run_command(command, path, tmp_path)
    assert code == 2
    assert_one_line_naming(capsys, path, expect)
    if catalog:
        assert snapshot(catalog) == before, "the catalog is unchanged"
    else:
        assert not kept.exists(), "no run folder"


@pytest.mark.parametrize("command", COMMANDS)
def test_a_fifo_is_refused_without_being_opened(fifo, tmp_path, capsys, command):
    path, opened = fifo
    code, kept = run_command(command, path, tmp_path)
    assert code == 2 and not opened.is_set(), "refused from its type: nobody opened the FIFO"
    assert_one_line_naming(capsys, path, "is a FIFO (named pipe), not a regular file")
    assert not kept.exists()


def test_the_error_names_the_line_of_a_real_row(tmp_path, capsys):
    path = with_cell(tmp_path, 1234, 1, "12,5")  # a decimal comma: one more field on line 1235
    volume = orcl_lines()[1234].split(",")[6]
    assert main(["backtest", "sma_cross", "--data", str(path), "--out", str(tmp_path / "run")]) == 2
    assert assert_one_line_naming(capsys, path) == (
        f"tradeloop: error: {path}:1235: 1 field(s) more than the 7 columns of the header (column 8 on: '{volume}')")


def test_a_trailing_separator_is_not_an_extra_field(tmp_path):
    lines = orcl_lines()
    path = write_lines(tmp_path / "orcl.csv", lines[:1] + [ln + "," for ln in lines[1:]])
    s = load_bars(path)
    assert len(s) == 5036 and s.close.tobytes() == load_bars(need(ORCL)).close.tobytes()


def test_values_at_the_bounds_load_and_past_them_do_not(tmp_path):
    ok = with_cell(tmp_path, 10, 6, repr(MAX_VOLUME), "ok.csv")
    assert load_bars(ok).volume[9] == MAX_VOLUME
    with pytest.raises(ValueError, match="out of bounds"):
        load_bars(with_cell(tmp_path, 10, 6, repr(MAX_VOLUME * 1.5), "over.csv"))


@pytest.mark.parametrize("offset", [2000, 150_000])  # in the sniffed head, and past it
def test_a_flipped_byte_is_named_by_its_line(tmp_path, capsys, offset):
    path = flipped_bytes(offset)(tmp_path)
    line = path.read_bytes()[:offset].count(b"\n") + 1
    assert main(["backtest", "sma_cross", "--data", str(path), "--out", str(tmp_path / "run")]) == 2
    assert assert_one_line_naming(capsys, path).startswith(f"tradeloop: error: {path}:{line}: not UTF-8 or GBK text")


@pytest.mark.parametrize("name,data,expect", [
    ("binary", random.Random(3).randbytes(4000), "not UTF-8 text"),
    ("nul", b'[run]\nstrategy = "sma_cross"\n\0\0\0', ":3: binary data"),
    ("utf16", '[run]\nstrategy = "sma_cross"\n'.encode("utf-16"), "not UTF-8 text"),
    ("truncated_toml", b'[run]\nstrategy = "sma_cr', "not valid TOML"),
])
def test_a_hostile_config_file_is_one_line_exit_2(tmp_path, capsys, name, data, expect):
    cfg = tmp_path / "run.toml"
    cfg.write_bytes(data)
    assert main(["backtest", "--config", str(cfg), "--data", str(need(ORCL)), "--out", str(tmp_path / "run")]) == 2
    assert_one_line_naming(capsys, cfg, expect)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make", [directory, dev_zero, link_to_dev_zero])
def test_a_config_that_is_not_a_file_is_refused(tmp_path, capsys, make):
    cfg = make(tmp_path)
    assert main(["backtest", "--config", str(cfg), "--data", str(need(ORCL)), "--out", str(tmp_path / "run")]) == 2
    assert_one_line_naming(capsys, cfg)


def test_a_config_fifo_is_refused_without_being_opened(fifo, tmp_path, capsys):
    path, opened = fifo
    assert main(["backtest", "--config", str(path), "--data", str(need(ORCL)), "--out", str(tmp_path / "run")]) == 2
    assert not opened.is_set()
    assert_one_line_naming(capsys, path, "FIFO")


# ---------------------------------------------------------------- on_bad="drop" drops the rows out of place only

@pytest.mark.parametrize("swap,dropped_lines", [
    ((100, 101), [102]),         # neighbours swapped: the row that steps back in time goes
    ((100, 3000), [101, 3001]),  # far apart: both rows are out of place, and only they go
])
def test_drop_removes_only_the_swapped_rows(tmp_path, swap, dropped_lines):
    lines = orcl_lines()
    i, j = swap
    lines[i], lines[j] = lines[j], lines[i]
    path = write_lines(tmp_path / "orcl.csv", lines)
    full = load_bars(need(ORCL))
    log: list = []
    s = load_bars(path, on_bad="drop", log=log)
    assert log == [{"file": str(path), "action": "drop", "check": "out_of_order", "count": len(dropped_lines),
                    "lines": dropped_lines}]
    assert len(s) == len(full) - len(dropped_lines)
    gone = {lines[n - 1].split(",")[0] for n in dropped_lines}
    def day(t: int) -> str:
        return str(np.datetime64(int(t), "ns").astype("datetime64[D]"))

    assert {day(t) for t in s.ts} == {day(t) for t in full.ts} - gone and len(gone) == len(dropped_lines)
    assert (np.diff(s.ts) > 0).all()


def test_drop_keeps_the_first_of_a_duplicated_row_far_from_its_place(tmp_path):
    lines = orcl_lines()
    lines.insert(200, lines[4000])  # a row of 2010 copied into 1995
    path = write_lines(tmp_path / "orcl.csv", lines)
    log: list = []
    s = load_bars(path, on_bad="drop", log=log)
    assert [(e["check"], e["count"], e["lines"]) for e in log] == [("duplicate_timestamp", 1, [201])]
    assert len(s) == 5036


def test_drop_through_the_cli_import_keeps_every_good_row(tmp_path, capsys):
    lines = orcl_lines()
    lines[2000], lines[2001] = lines[2001], lines[2000]
    path = write_lines(tmp_path / "orcl.csv", lines)
    assert main(["data", "import", str(path), "--catalog", str(tmp_path / "cat"), "--on-bad", "drop"]) == 0
    assert len(Catalog(tmp_path / "cat").read("orcl")) == 5035
    assert "check=out_of_order count=1" in capsys.readouterr().err


# ---------------------------------------------------------------- the catalog keeps what it stores

def test_a_header_only_import_keeps_the_stored_rows(tmp_path, capsys):
    root = stored_catalog(tmp_path)
    before = snapshot(root)
    path = header_only(tmp_path)  # tmp/orcl.csv: the same symbol
    capsys.readouterr()
    assert main(["data", "import", str(path), "--catalog", str(root)]) == 2
    assert_one_line_naming(capsys, path, "no data rows")
    assert snapshot(root) == before and len(Catalog(root).read("orcl")) == 5036


def test_an_import_with_fewer_rows_is_refused_unless_replace(tmp_path, capsys):
    root = stored_catalog(tmp_path)
    before = snapshot(root)
    path = tmp_path / "orcl.csv"
    shutil.copy(need(ORCL_2014), path)  # 2014 only, under the stored symbol
    capsys.readouterr()
    assert main(["data", "import", str(path), "--catalog", str(root)]) == 2
    line = assert_one_line_naming(capsys, path, "would replace the 5036 stored bars of 'orcl'")
    assert "losing 4784" in line and "--replace" in line
    assert snapshot(root) == before
    assert main(["data", "import", str(path), "--catalog", str(root), "--replace"]) == 0
    assert len(Catalog(root).read("orcl")) == 252


def test_an_import_that_keeps_every_stored_bar_replaces_as_before(tmp_path):
    root = stored_catalog(tmp_path)
    lines = orcl_lines()
    path = write_lines(tmp_path / "orcl.csv", lines[:1] + [ln.replace(",36301200", ",36301201") for ln in lines[1:]])
    assert main(["data", "import", str(path), "--catalog", str(root)]) == 0
    assert Catalog(root).read("orcl").volume[0] == 36301201


@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_write_leaves_the_catalog_as_it_was(tmp_path, capsys, monkeypatch, existing):
    root = stored_catalog(tmp_path)
    before = snapshot(root)
    path = tmp_path / ("orcl.csv" if existing else "NEW.csv")
    shutil.copy(need(ORCL), path)

    def broken(table, where, **kw):
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(catalog_mod.pq, "write_table", broken)
    capsys.readouterr()
    assert main(["data", "import", str(path), "--catalog", str(root)]) == 2
    assert_one_line_naming(capsys, root, "No space left on device")
    monkeypatch.undo()
    assert snapshot(root) == before, "old partition intact, no temp file or new folder left behind"
    assert len(Catalog(root).read("orcl")) == 5036


def test_a_write_is_fsynced_before_it_is_moved_into_place(tmp_path, monkeypatch):
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(catalog_mod.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(catalog_mod.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    Catalog(tmp_path).write(load_bars(need(ORCL)))
    assert calls == ["fsync", "replace", "fsync"]  # the file, the rename, the folder


def test_import_into_a_file_or_with_a_bad_symbol_is_refused(tmp_path, capsys):
    not_a_folder = tmp_path / "catalog"
    not_a_folder.write_text("x")
    assert main(["data", "import", str(need(ORCL)), "--catalog", str(not_a_folder)]) == 2
    assert_one_line_naming(capsys, not_a_folder, "is not a folder")
    assert not_a_folder.read_text() == "x"


# ---------------------------------------------------------------- reading a damaged catalog

def catalog_with(tmp: Path, make: Callable[[Path], None]) -> tuple[Path, Path]:
    root = stored_catalog(tmp)
    part = root / "symbol=orcl" / "bars.parquet"
    make(part)
    return root, part


def rewrite(change: Callable[[pl.DataFrame], pl.DataFrame]) -> Callable[[Path], None]:
    def make(part: Path) -> None:
        df = change(pl.read_parquet(part))
        df.write_parquet(part)
    return make


def set_row(col: str, row: int, value: float) -> Callable[[pl.DataFrame], pl.DataFrame]:
    return lambda df: df.with_columns(pl.when(pl.int_range(pl.len()) == row).then(value).otherwise(pl.col(col))
                                      .alias(col))


def to_fifo(part: Path) -> None:
    part.unlink()
    os.mkfifo(part)


CATALOG_DAMAGE = {
    "fake_parquet": (lambda part: shutil.copy(need(ORCL), part), "cannot read the catalog file as Parquet"),
    "truncated": (lambda part: part.write_bytes(part.read_bytes()[:500]), "cannot read the catalog file"),
    "close_as_text": (rewrite(lambda df: df.with_columns(pl.col("close").cast(pl.String))),
                      "field 'close': catalog column type"),
    "no_volume": (rewrite(lambda df: df.drop("volume")), "field 'volume': column missing"),
    "close_1e308": (rewrite(set_row("close", 5, 1e308)), ":6: field 'close'"),
    "volume_over_bound": (rewrite(set_row("volume", 7, MAX_VOLUME * 10)), ":8: field 'volume': 1e+16 is out of bounds"),
    "close_nan": (rewrite(set_row("close", 9, float("nan"))), ":10: field 'close'"),
    "directory": (lambda part: (part.unlink(), part.mkdir()), "is a directory, not a file"),
    "fifo": (to_fifo, "FIFO"),
}


@pytest.mark.parametrize("case", list(CATALOG_DAMAGE))
def test_a_damaged_catalog_file_is_one_line_exit_2(tmp_path, capsys, case):
    make, expect = CATALOG_DAMAGE[case]
    root, part = catalog_with(tmp_path, make)
    capsys.readouterr()
    out = tmp_path / "run"
    assert main(["backtest", "sma_cross", "--catalog", str(root), "--data", "orcl", "--out", str(out), "--quiet"]) == 2
    assert_one_line_naming(capsys, part, expect)
    assert not out.exists()


@pytest.mark.parametrize("symbol,expect", [("NOPE", "no symbol 'NOPE'"), ("../x", "bad symbol name")])
def test_a_missing_or_bad_catalog_symbol_is_one_line(tmp_path, capsys, symbol, expect):
    root = stored_catalog(tmp_path)
    capsys.readouterr()
    assert main(["backtest", "sma_cross", "--catalog", str(root), "--data", symbol, "--out", str(tmp_path / "r")]) == 2
    assert_one_line_naming(capsys, root, expect)


@pytest.mark.parametrize("make,expect", [
    (lambda tmp: tmp / "absent", "catalog folder not found"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "is not a folder"),
])
def test_a_catalog_that_is_not_a_folder_is_one_line(tmp_path, capsys, make, expect):
    root = make(tmp_path)
    assert main(["backtest", "sma_cross", "--catalog", str(root), "--data", "orcl", "--out", str(tmp_path / "r")]) == 2
    assert_one_line_naming(capsys, root, expect)


# ---------------------------------------------------------------- run folders are not overwritten silently

def backtest_into(out: Path, *extra: str) -> int:
    return main(["backtest", "sma_cross", "--data", str(need(ORCL)), "--out", str(out), "--quiet", *extra])


def test_an_existing_run_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert backtest_into(out) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert backtest_into(out, "--param", "fast=5") == 2
    assert_one_line_naming(capsys, out, "already exists and is not empty")
    assert snapshot(out) == before
    assert backtest_into(out, "--param", "fast=5", "--overwrite") == 0
    assert snapshot(out)["manifest.json"] != before["manifest.json"]


def test_a_folder_holding_other_files_is_refused_and_they_stay(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert backtest_into(out) == 2
    assert_one_line_naming(capsys, out, "--overwrite")
    assert snapshot(out) == {"notes.txt": b"keep me"}


def test_an_empty_folder_is_used_and_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert backtest_into(tmp_path / "empty") == 0
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert backtest_into(tmp_path / "file", "--overwrite") == 2
    assert_one_line_naming(capsys, tmp_path / "file", "not a folder")


def test_run_out_from_the_config_is_checked_too(tmp_path, capsys):
    out = tmp_path / "run"
    assert backtest_into(out) == 0
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[run]\nstrategy = "sma_cross"\nout = "{out}"\n')
    capsys.readouterr()
    assert main(["backtest", "--config", str(cfg), "--data", str(need(ORCL)), "--quiet"]) == 2
    assert_one_line_naming(capsys, out, "already exists")
