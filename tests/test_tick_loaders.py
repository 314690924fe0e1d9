"""Tick files: every real layout loads with the right values, bad rows are one exact DataError, the catalog keeps days."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SHARED_DATA, need
from tradeloop.data.errors import DataError
from tradeloop.data.tick_catalog import TickCatalog, import_tick_files
from tradeloop.data.ticks import load_ticks
from tradeloop.engine.cli.main import main

VNPY = SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv"
TICKSAMPLE = SHARED_DATA / "backtrader" / "ticksample.csv"
BIDASK = SHARED_DATA / "backtrader" / "bidask.csv"
BIDASK2 = SHARED_DATA / "backtrader" / "bidask2.csv"
BITSTAMP = SHARED_DATA / "pyalgotrade" / "bitstampUSD.csv"
MGTOX = SHARED_DATA / "pyalgotrade" / "trades-mgtox-usd-2013-01-01.csv"


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


def lines_of(path: Path) -> list[str]:
    return path.read_text().split("\n")


def export_ms(tmp_path: Path, header: bool) -> Path:
    """An exchange trade export made from the real bitstamp trades: unix ms stamps and a side column."""
    rows = [ln.split(",") for ln in lines_of(need(BITSTAMP))[:200] if ln]
    out = ["timestamp,id,type,side,price,amount,cost"] if header else []
    for i, (t, px, qty) in enumerate(rows):
        side = "buy" if i % 2 == 0 else "sell"
        ms = int(t) * 1000 + i % 1000
        out.append(f"{ms},{i},limit,{side},{px},{qty},{float(px) * float(qty)}" if header else f"{ms},{px},{qty},{side}")
    p = tmp_path / ("export-h.csv" if header else "export.csv")
    p.write_text("\n".join(out) + "\n")
    return p


# ---------------------------------------------------------------- layouts

def test_vnpy_snapshots():
    t = load_ticks(need(VNPY))
    assert (t.symbol, len(t), t.tz) == ("RM705", 16979, None)
    # RM705,20170320,09:00:00.5,2374.0,0.0,2372.0,2374.0,264.0,65.0
    assert t.ts[0] == ns("2017-03-20T09:00:00.5")
    assert (t.price[0], t.size[0], t.bid[0], t.ask[0], t.bid_size[0], t.ask_size[0]) == (2374, 0, 2372, 2374, 264, 65)
    # last row RM705,20170320,14:24:27.5,2412.0,0.0,2412.0,2413.0,174.0,88.0
    assert t.ts[-1] == ns("2017-03-20T14:24:27.5") and (t.bid[-1], t.ask[-1], t.bid_size[-1]) == (2412, 2413, 174)
    assert t.has_trades and t.has_quotes and (t.side == 0).all()
    assert (np.diff(t.seq) > 0).all() and (np.diff(t.ts) >= 0).all()


def test_vnpy_tz_converts_wall_time_to_utc():
    t = load_ticks(need(VNPY), tz="Asia/Shanghai")
    assert t.tz == "UTC" and t.ts[0] == ns("2017-03-20T01:00:00.5")


def test_backtrader_ticksample_equal_stamps_keep_file_order():
    t = load_ticks(need(TICKSAMPLE))
    assert (t.symbol, len(t), t.tz) == ("ticksample", 135, None)
    assert t.ts[0] == ns("2015-09-23T20:57:42.146") and (t.price[0], t.size[0]) == (3067, 180)
    assert np.isnan(t.bid).all() and not t.has_quotes
    # lines 23-24 share 20:58:22.316: both kept, in file order
    raw = lines_of(TICKSAMPLE)
    assert raw[22].split(",")[0] == raw[23].split(",")[0] == "2015-09-23T20:58:22.316"
    assert t.ts[21] == t.ts[22] == ns("2015-09-23T20:58:22.316") and t.seq[21] + 1 == t.seq[22]
    assert (t.price[21], t.size[21]) == (float(raw[22].split(",")[4]), float(raw[22].split(",")[5]))
    assert (t.price[22], t.size[22]) == (float(raw[23].split(",")[4]), float(raw[23].split(",")[5]))


def test_backtrader_bidask_quotes():
    t = load_ticks(need(BIDASK))
    assert len(t) == 10 and not t.has_trades and t.has_quotes
    assert t.ts[0] == ns("2010-02-03T16:53:50") and (t.bid[0], t.ask[0]) == (0.5346, 0.5347)  # %m/%d/%Y like backtrader
    assert t.ts[5] == t.ts[4] and t.seq[5] == 5  # duplicate 16:53:54 (lines 6-7) kept in order


def test_backtrader_bidask2_split_stamp_and_dealt_rows():
    t = load_ticks(need(BIDASK2))
    assert len(t) == 10
    # 01/03/16,23:43:11,EUR/JPY,D,,130.520,,1000000  (dd/mm/yy; dealt at the offer)
    assert t.ts[0] == ns("2016-03-01T23:43:11")
    assert (t.price[0], t.size[0], t.ask[0], t.ask_size[0], t.side[0]) == (130.52, 1e6, 130.52, 1e6, 1)
    assert np.isnan(t.bid).all()
    assert t.ts[-1] == ns("2016-03-01T23:54:27") and t.size[-1] == 900000  # last line, no trailing newline


def test_pyalgotrade_bitstamp_trades_unix_seconds():
    t = load_ticks(need(BITSTAMP))
    assert (len(t), t.tz) == (9999, "UTC")
    assert t.ts[0] == 1315922016 * 10**9 and (t.price[0], t.size[0]) == (5.8, 1.0)
    same = np.flatnonzero(np.diff(t.ts) == 0)
    assert len(same) == 4243 and (t.seq[same + 1] == t.seq[same] + 1).all()
    assert t.size[t.ts == 1337596081 * 10**9].min() == 0  # a zero-size trade is allowed


def test_mtgox_trades_microsecond_ids_and_side():
    t = load_ticks(need(MGTOX))
    assert (len(t), t.tz) == (2331, "UTC")
    # 1356998659486096,13.51001,36.87430786,ask
    assert t.ts[0] == 1356998659486096 * 1000 and (t.price[0], t.size[0], t.side[0]) == (13.51001, 36.87430786, -1)
    assert t.side[1] == 1  # bid


@pytest.mark.parametrize("header", [True, False])
def test_exchange_export_unix_ms_with_side(tmp_path, header):
    p = export_ms(tmp_path, header)
    t = load_ticks(p)
    assert (len(t), t.tz) == (200, "UTC")
    assert t.ts[0] == 1315922016 * 10**9 and t.ts[1] == 1315922024 * 10**9 + 10**6
    assert (t.price[0], t.size[0], t.side[0], t.side[1]) == (5.8, 1.0, 1, -1)


def test_column_mapping_for_other_layouts(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("when;px;qty;b;a\n2020-01-02 09:30:00;10.5;3;10.4;10.6\n2020-01-02 09:30:01;10.6;1;10.5;10.7\n")
    t = load_ticks(p, "XYZ", columns={"ts": "when", "price": "px", "size": 2, "bid": "b", "ask": "a"})
    assert t.symbol == "XYZ" and t.ts[1] == ns("2020-01-02T09:30:01") and (t.bid[1], t.ask[1], t.size[0]) == (10.5, 10.7, 3)


# ---------------------------------------------------------------- bad input

def corrupt(src: Path, tmp_path: Path, line: int, text: str | None) -> Path:
    """A copy of ``src`` with physical line ``line`` (1-based) replaced by ``text`` (or cut short to it)."""
    rows = lines_of(need(src))
    rows[line - 1] = text
    out = tmp_path / src.name
    out.write_text("\n".join(rows))
    return out


BAD = [
    # (file, line, new text, field, reason)
    (VNPY, 3, "RM705,20170320,09:00:01.0,2376.0,0.0,2377.0,2376.0,117.0,55.0", "bidPrice1",
     "crossed quote: bid 2377.0 > ask 2376.0"),
    (VNPY, 2, "RM705,20170320,09:00:00.5,-2374.0,0.0,2372.0,2374.0,264.0,65.0", "lastPrice",
     "non-positive price: -2374.0"),
    (VNPY, 4, "RM705,20170320,08:59:00.0,2377.0,0.0,2376.0,2378.0,20.0,83.0", "time",
     "timestamp 2017-03-20T08:59:00 out of order: earlier than 2017-03-20T09:00:01 on line 3"),
    (VNPY, 5, "RM705,20170320,09:00:02.0,2377.0,0.0,2376.0,2378.0,abc,83.0", "bidVolume1", "not a number: 'abc'"),
    (VNPY, 5, "RM705,20170320,09:00:02.0,2377.0,0.0,2376.0,2378.0,-5,83.0", "bidVolume1", "negative size: -5.0"),
    (VNPY, 5, "RM705,20170320,09:00:02.0,inf,0.0,2376.0,2378.0,5,83.0", "lastPrice", "non-finite value: 'inf'"),
    (VNPY, 5, "RM705,20170320,09:00:02.0,2e13,0.0,2376.0,2378.0,5,83.0", "lastPrice", "20000000000000.0 is out of bounds: |price| must be at most 1e+12"),
    (VNPY, 6, "RM705,20170320,09:00:02.0,2377.0", "", "4 field(s) where the rows have 9: a truncated line"),
    (VNPY, 6, "RM705,20170320,9h,2377.0,0.0,2376.0,2378.0,20.0,83.0", "time", "unparseable timestamp: '9h'"),
    (TICKSAMPLE, 2, "2015-09-23T20:57:42.146,3067.00,3067.00,3067.00,-3067.00,180,0", "Close",
     "non-positive price: -3067.0"),
    (TICKSAMPLE, 4, "2015-09-23T20:57:40.000,3066.00,3066.00,3066.00,3066.00,1,0", "Datetime",
     "timestamp 2015-09-23T20:57:40 out of order: earlier than 2015-09-23T20:57:46.151000000 on line 3"),
    (TICKSAMPLE, 3, "2015-09-23T20:57:46.151,3066.00,3066.00,3066.00,3066.00,x,0", "Volume", "not a number: 'x'"),
    (TICKSAMPLE, 3, "2015-09-23T20:57:46.151,3066.00", "", "2 field(s) where the rows have 7: a truncated line"),
    (TICKSAMPLE, 3, "2015-09-23T20:57:46.151,3066.00,3070.00,3066.00,3066.00,2,0", "High",
     "High 3070.0 differs from close 3066.0: a bar, not a tick"),
    (BIDASK, 2, "02/03/2010 16:53:50,0.5350,0.5347", "BID", "crossed quote: bid 0.535 > ask 0.5347"),
    (BIDASK, 3, "02/03/2010 16:53:51,0.5343,-0.5347", "ASK", "non-positive price: -0.5347"),
    (BIDASK, 4, "02/03/2010 16:53:40,0.5543,0.5545", "TIMESTAMP", "out of order"),
    (BIDASK, 4, "02/03/2010 16:53:52,0.5543,zz", "ASK", "not a number: 'zz'"),
    (BIDASK, 4, "02/03/2010 16:53:52", "", "1 field(s) where the rows have 3: a truncated line"),
    (BIDASK2, 2, "01/03/16,23:43:11,EUR/JPY,D,130.600,130.520,,1000000", "bid", "crossed quote: bid 130.6 > ask 130.52"),
    (BIDASK2, 3, "01/03/16,23:43:27,EUR/JPY,D,,-130.520,,2000000", "offer", "non-positive price: -130.52"),
    (BIDASK2, 4, "01/03/16,23:40:19,EUR/JPY,D,,130.510,,500000", "time", "out of order"),
    (BIDASK2, 4, "01/03/16,23:49:19,EUR/JPY,D,,130.510,,5OO", "vol offer", "not a number: '5OO'"),
    (BIDASK2, 11, "01/03/16,23:54:27,EUR/JPY,D,,130.4", "", "6 field(s) where the rows have 8: a truncated line"),
    (BITSTAMP, 2, "1315922024,-5.83,3.0", "column_2", "non-positive price: -5.83"),
    (BITSTAMP, 3, "1315922000,5.9,1.0", "column_1",
     "timestamp 2011-09-13T13:53:20 out of order: earlier than 2011-09-13T13:53:44 on line 2"),
    (BITSTAMP, 3, "1315922029,five,1.0", "column_2", "not a number: 'five'"),
    (BITSTAMP, 3, "1315922029,5.9,-1.0", "column_3", "negative size: -1.0"),
    (BITSTAMP, 3, "1315922029,5.9", "", "2 field(s) where the rows have 3: a truncated line"),
    (BITSTAMP, 3, "13159x2029,5.9,1.0", "column_1", "unparseable timestamp: '13159x2029'"),
    (MGTOX, 2, "1356998659486096,0,36.87430786,ask", "price", "non-positive price: 0.0"),
    (MGTOX, 3, "1356998600000000,13.55999,11.68264135,bid", "id", "out of order"),
    (MGTOX, 3, "1356998738639088,13.55999,11.68264135,xyz", "type", "unknown side 'xyz'"),
    (MGTOX, 3, "1356998738639088,13.55999,,bid", "amount", "missing value"),
    (MGTOX, 3, "1356998738639088,13.55999", "", "2 field(s) where the rows have 4: a truncated line"),
]


@pytest.mark.parametrize("src,line,text,field,reason", BAD,
                         ids=[f"{b[0].name}-{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_row_is_one_exact_error(tmp_path, capsys, src, line, text, field, reason):
    bad = corrupt(src, tmp_path, line, text)
    with pytest.raises(DataError) as e:
        load_ticks(bad)
    assert (e.value.path, e.value.line, e.value.field) == (str(bad), line, field)
    assert reason in e.value.reason
    head = f"{bad}:{line}:" + (f" field {field!r}:" if field else "")
    assert str(e.value).startswith(head)
    cat = tmp_path / "cat"
    assert main(["data", "import", "--ticks", str(bad), "--catalog", str(cat)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"tradeloop: error: {head}") and reason in err[0]
    assert not (cat / "ticks").exists()


@pytest.mark.parametrize("header", [True, False])
def test_bad_rows_in_exchange_exports(tmp_path, header):
    p = export_ms(tmp_path, header)
    rows = lines_of(p)
    n = 1 + int(header)  # first data line
    cells = rows[n].split(",")
    cells[3 if header else 3] = "sideways"
    rows[n] = ",".join(cells)
    p.write_text("\n".join(rows))
    with pytest.raises(DataError) as e:
        load_ticks(p)
    assert (e.value.line, e.value.field) == (n + 1, "side" if header else "column_4")
    assert "unknown side 'sideways'" in e.value.reason


def test_drop_removes_only_the_bad_rows(tmp_path):
    rows = lines_of(need(BITSTAMP))
    rows[5] = "1315922000,5.9,1.0"          # out of order (line 6)
    rows[8] = rows[8].replace(",", ",-", 1)  # negative price (line 9)
    p = tmp_path / "b.csv"
    p.write_text("\n".join(rows))
    log: list = []
    t = load_ticks(p, on_bad="drop", log=log)
    assert len(t) == 9999 - 2 and 5 not in t.seq and 8 not in t.seq
    assert {(e["check"], tuple(e["lines"])) for e in log} == {("non_positive_price", (9,)), ("out_of_order", (6,))}
    assert (np.diff(t.ts) >= 0).all() and (t.ts == load_ticks(BITSTAMP).ts[np.r_[0:5, 6:8, 9:9999]]).all()


def test_repair_is_refused_for_ticks():
    with pytest.raises(DataError, match="not for ticks"):
        load_ticks(need(BITSTAMP), on_bad="repair")


# ---------------------------------------------------------------- catalog

def test_catalog_round_trip_by_day(tmp_path):
    src = load_ticks(need(BITSTAMP))
    import_tick_files([BITSTAMP], tmp_path)
    cat = TickCatalog(tmp_path)
    days = cat.days("bitstampUSD")
    assert cat.symbols() == ["bitstampUSD"] and days[0] == "2011-09-13" and days[-1] == "2012-05-31"
    assert (tmp_path / "ticks" / "bitstampUSD" / "2011-09-13.parquet").is_file()
    back = cat.read("bitstampUSD")
    for f in ("ts", "seq", "price", "size", "bid", "ask", "bid_size", "ask_size", "side"):
        assert np.array_equal(getattr(back, f), getattr(src, f), equal_nan=True), f
    assert back.tz == "UTC"
    one = cat.read("bitstampUSD", "2011-09-14", "2011-09-15")
    assert len(one) and (one.ts >= ns("2011-09-14")).all() and (one.ts < ns("2011-09-15")).all()
    assert np.array_equal(one.price, src.between(ns("2011-09-14"), ns("2011-09-15")).price)


def test_catalog_snapshot_round_trip_and_cli(tmp_path, capsys):
    assert main(["data", "import", "--ticks", str(need(VNPY)), "--catalog", str(tmp_path)]) == 0
    assert "RM705 (16,979 ticks)" in capsys.readouterr().out
    back, src = TickCatalog(tmp_path).read("RM705"), load_ticks(VNPY)
    assert back.tz is None and np.array_equal(back.ts, src.ts) and np.array_equal(back.ask_size, src.ask_size)


def test_import_refuses_to_shrink_a_stored_day(tmp_path, capsys):
    cat = tmp_path / "cat"
    assert main(["data", "import", "--ticks", str(need(MGTOX)), "--catalog", str(cat)]) == 0
    part = tmp_path / "half" / MGTOX.name
    part.parent.mkdir()
    part.write_text("\n".join(lines_of(MGTOX)[:1001]) + "\n")
    capsys.readouterr()
    assert main(["data", "import", "--ticks", str(part), "--catalog", str(cat)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "would replace the 2331 stored ticks" in err[0] and "losing 1331" in err[0]
    assert len(TickCatalog(cat).read(part.stem)) == 2331  # untouched
    # the same file again is fine; --replace replaces the day
    assert main(["data", "import", "--ticks", str(MGTOX), "--catalog", str(cat)]) == 0
    assert main(["data", "import", "--ticks", str(part), "--catalog", str(cat), "--replace"]) == 0
    assert len(TickCatalog(cat).read(part.stem)) == 1000


def test_import_of_another_day_keeps_stored_days(tmp_path):
    rows = lines_of(need(BITSTAMP))
    first = tmp_path / "a" / "BTC.csv"
    later = tmp_path / "b" / "BTC.csv"
    first.parent.mkdir(), later.parent.mkdir()
    first.write_text("\n".join(r for r in rows if r and int(r.split(",")[0]) < 1316044800) + "\n")  # 09-13, 09-14
    cut = next(i for i, r in enumerate(rows) if r and int(r.split(",")[0]) >= 1316131200)  # 2011-09-16
    later.write_text("\n".join(rows[cut:cut + 100]) + "\n")
    import_tick_files([first], tmp_path / "cat")
    before = TickCatalog(tmp_path / "cat").read("BTC")
    import_tick_files([later], tmp_path / "cat")
    after = TickCatalog(tmp_path / "cat").read("BTC")
    assert len(after) == len(before) + 100 and np.array_equal(after.ts[:len(before)], before.ts)
    assert (np.diff(after.seq) > 0).all()  # seq shifted to keep rising across imports
