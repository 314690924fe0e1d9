"""load_bars and the bar checks, against the real files in ../shared/data and small files written here."""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import structlog

from tradeloop.data.errors import DataError
from tradeloop.data.loaders import load_bars, symbol_of
from tradeloop.data.schema import BarSeries
from tradeloop.data.validate import validate_series



def ns(text: str) -> int:
    """ISO text as int ns (naive wall time, or UTC)."""
    return int(np.datetime64(text, "ns").astype(np.int64))


def days(s: BarSeries) -> list[str]:
    """The bars' dates as YYYY-MM-DD text."""
    return s.ts.astype("datetime64[ns]").astype("datetime64[D]").astype(str).tolist()


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    """A small input file under tmp_path."""
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


H = "Date,Open,High,Low,Close,Volume\n"
GOOD = "2010-01-04,10,11,9,10.5,100\n"


# ---------------------------------------------------------------- every bar file of the overview table

# (file, load options, rows, first, last): README.md overview; bad rows dropped where the README lists them.
REAL = [
    ("backtesting_py/BTCUSD.csv", {}, 156, "2012-01-31", "2024-12-31"),
    ("backtesting_py/EURUSD.csv", {}, 5000, "2017-04-19T09:00", "2018-02-07T15:00"),
    ("backtesting_py/GOOG.csv", {}, 2148, "2004-08-19", "2013-03-01"),
    ("freqtrade/UNITTEST_BTC-1m.json", {}, 13681, "2017-11-04T23:02", "2017-11-14T22:59"),
    ("kronos/XSHG_5min_600977.csv", {}, 2500, "2024-06-18T11:15", "2024-08-29T11:30"),
    ("pyalgotrade/30min-bitstampUSD-2.csv", {}, 1968, "2014-06-23T22:00", "2014-08-03T23:00"),
    ("pyalgotrade/DIA-2012-yahoofinance.csv", {}, 250, "2012-01-03", "2012-12-31"),
    ("pyalgotrade/IEF-2012-yahoofinance.csv", {}, 250, "2012-01-03", "2012-12-31"),
    ("pyalgotrade/SPY-2012-yahoofinance.csv", {}, 250, "2012-01-03", "2012-12-31"),
    ("pyalgotrade/SPY-2013-yahoofinance.csv", {}, 252, "2013-01-02", "2013-12-31"),
    ("pyalgotrade/WIKI-AAPL-2011-quandl.csv", {}, 252, "2011-01-03", "2011-12-30"),
    ("pyalgotrade/WIKI-ORCL-2000-quandl.csv", {}, 252, "2000-01-03", "2000-12-29"),
    ("pyalgotrade/goog-2011-yahoofinance.csv", {}, 252, "2011-01-03", "2011-12-30"),
    ("pyalgotrade/nikkei-2010-yahoofinance.csv", {}, 245, "2010-01-04", "2010-12-30"),
    ("pyalgotrade/nt-spy-minute-2011.csv", {}, 14180, "2011-01-03T09:01", "2011-02-01T01:00"),
    ("pyalgotrade/orcl-2000-yahoofinance.csv", {}, 252, "2000-01-03", "2000-12-29"),
    ("pyalgotrade/orcl-2010-googlefinance-malformed.csv", {"on_bad": "drop"}, 251, "2010-01-04", "2010-12-31"),
    ("pyalgotrade/orcl-2010-googlefinance.csv", {}, 252, "2010-01-04", "2010-12-31"),
    ("pyalgotrade/sharpe-ratio-test-ige.csv", {}, 1504, "2001-11-26", "2007-11-14"),
    ("pyalgotrade/sharpe-ratio-test-spy.csv", {}, 1504, "2001-11-26", "2007-11-14"),
    ("pyalgotrade/spy-2010-yahoofinance.csv", {}, 252, "2010-01-04", "2010-12-31"),
    ("pyalgotrade/spy-2011-yahoofinance.csv", {}, 252, "2011-01-03", "2011-12-30"),
    ("qbot/000002.SZ.csv", {}, 2442, "2010-01-04", "2020-09-07"),
    ("qbot/000651.SZ.csv", {}, 2429, "2010-01-04", "2020-09-07"),
    ("qbot/000858.SZ.csv", {}, 2533, "2010-01-04", "2020-09-07"),
    ("qbot/300059.SZ.csv", {}, 2483, "2010-03-19", "2020-09-07"),
    ("qbot/399986.SZ.csv", {}, 3951, "2005-01-04", "2022-09-23"),
    ("qbot/600036.SH.csv", {}, 2576, "2010-01-04", "2020-09-07"),
    ("qbot/600519.SH.csv", {}, 2591, "2010-01-04", "2020-09-07"),
    ("qbot/600519_unadjusted.csv", {}, 2490, "2010-01-04", "2020-04-10"),
    ("qbot/601318.SH.csv", {}, 2543, "2010-01-04", "2020-09-07"),
    ("qbot/601398.SH.csv", {}, 2584, "2010-01-04", "2020-09-07"),
    ("qbot/sz.csv", {"on_bad": "drop"}, 4977, "2000-01-03", "2020-01-15"),  # 4980 rows, 3 all-null
    ("rqalpha/IF1706_20161108.csv", {}, 240, "2016-11-08T09:31", "2016-11-08T15:00"),
    ("stockhistorydata/000300.csv", {}, 4556, "2002-01-04", "2020-10-16"),
    ("stockstats/002032.csv", {}, 2813, "2004-08-17", "2016-08-17"),
    ("stockstats/987654.csv", {}, 3659, "1999-11-10", "2015-04-30"),
    ("vnpy/000001.SZ.csv", {}, 1488, "2014-01-02", "2020-02-13"),
    ("vnpy/000300.csv", {}, 1423, "2013-01-04", "2018-11-09"),
    ("vnpy/600000.SH.csv", {}, 1456, "2014-01-02", "2020-02-13"),
    ("zipline/AAPL.csv.gz", {}, 754, "2012-01-03", "2014-12-31"),
    ("zipline/MSFT.csv.gz", {}, 754, "2012-01-03", "2014-12-31"),
    ("zsh_a_etf/399006.csv", {"on_bad": "repair"}, 23568, "2021-04-22T09:35", "2023-04-28T15:00"),
    ("zsh_a_etf/510050.csv", {}, 23568, "2021-04-22T09:35", "2023-04-28T15:00"),
    ("zsh_a_etf/999999.SH.csv", {}, 24000, "2022-12-16T09:31", "2023-05-18T15:00"),
]


@pytest.mark.parametrize(("rel", "kw", "rows", "first", "last"), REAL, ids=[r[0] for r in REAL])
def test_every_bar_file_loads_with_readme_rows_and_range(shared_data, rel, kw, rows, first, last):
    s = load_bars(shared_data / rel, **kw)
    assert isinstance(s, BarSeries)
    assert len(s) == rows
    assert (int(s.ts[0]), int(s.ts[-1])) == (ns(first), ns(last))
    assert (np.diff(s.ts) > 0).all(), "strictly ascending"
    for name in ("ts", "open", "high", "low", "close", "volume"):
        assert len(s.column(name)) == rows
    assert s.open.dtype == s.volume.dtype == np.float64 and s.ts.dtype == np.int64
    assert np.isfinite(s.close).all() and (s.low <= np.minimum(s.open, s.close)).all()
    assert s.source == str(shared_data / rel)
    assert s.tz == ("UTC" if rel.endswith(".json") else None)  # every file is naive except epoch stamps
    validate_series(s)


def test_symbol_defaults_to_the_file_stem_without_data_suffixes(tmp_path):
    assert symbol_of("backtrader/orcl-1995-2014.txt") == "orcl-1995-2014"
    assert symbol_of("zipline/AAPL.csv.gz") == "AAPL"
    assert symbol_of("qbot/000002.SZ.csv") == "000002.SZ"
    assert symbol_of("freqtrade/UNITTEST_BTC-1m.json") == "UNITTEST_BTC-1m"
    f = write(tmp_path, "orcl-1995-2014.txt", "Date,Open,High,Low,Close,Volume\n1995-01-03,2,3,1,2,10\n")
    assert load_bars(f).symbol == "orcl-1995-2014"


def test_an_unnamed_index_column_of_dates_is_the_date(tmp_path):
    # pandas' DataFrame.to_csv layout (the backtesting package's GOOG.csv, EURUSD.csv, BTCUSD.csv)
    f = write(tmp_path, "GOOG.csv", ",Open,High,Low,Close,Volume\n2004-08-19,100,104.06,95.96,100.34,22351900\n"
                                    "2004-08-20,101.01,109.08,100.5,108.31,11428600\n")
    s = load_bars(f)
    assert s.symbol == "GOOG" and days(s) == ["2004-08-19", "2004-08-20"]
    assert s.open.tolist() == [100.0, 101.01] and s.volume.tolist() == [22351900.0, 11428600.0]
    h = write(tmp_path, "EURUSD.csv", ",Open,High,Low,Close,Volume\n2017-04-19 09:00:00,1.0716,1.0722,1.07083,1.07219,1413\n")
    assert load_bars(h).ts.tolist() == [ns("2017-04-19T09:00:00")]


def test_symbol_argument_wins(shared_data):
    assert load_bars(shared_data / "zipline/AAPL.csv.gz", "aapl-us").symbol == "aapl-us"


# ---------------------------------------------------------------- formats and layouts of the real files

def test_gbk_file_with_chinese_headers_descending(shared_data):
    s = load_bars(shared_data / "stockhistorydata/000300.csv")
    # newest line of the file: 2020-10-16,'000300,沪深300,收盘价 4791.676,最高价 4825.5518,最低价 4765.967,开盘价 4798.9162,...
    assert int(s.ts[-1]) == ns("2020-10-16")
    assert (s.close[-1], s.high[-1], s.low[-1], s.open[-1]) == (4791.676, 4825.5518, 4765.967, 4798.9162)
    assert s.volume[-1] == 116716102 and s.extra["amount"][-1] == 2.04175130718e11
    assert s.extra["pre_close"][-1] == 4798.7361
    assert np.isnan(s.extra["pre_close"][0])  # the oldest row says None: extras are not checked
    assert load_bars(shared_data / "stockhistorydata/000300.csv", encoding="gbk").close.tobytes() == s.close.tobytes()


def test_descending_file_is_reversed_row_by_row(shared_data):
    s = load_bars(shared_data / "pyalgotrade/orcl-2000-yahoofinance.csv")
    # first data line is 2000-12-29,30.87,31.31,28.69,29.06,31655500,28.41 -> last bar
    assert int(s.ts[-1]) == ns("2000-12-29")
    assert (s.open[-1], s.high[-1], s.low[-1], s.close[-1], s.volume[-1]) == (30.87, 31.31, 28.69, 29.06, 31655500)
    assert s.close[-1] != 28.41, "Adj Close is not the close"


def test_no_header_file_seven_columns_uses_close_not_adj_close(shared_data):
    s = load_bars(shared_data / "qbot/sz.csv", on_bad="drop")
    # line 2: 2000-01-04,1368.692993,1407.517944,1361.213989,1406.370972,1406.370972,0
    assert (s.open[1], s.high[1], s.low[1], s.close[1], s.volume[1]) == (1368.692993, 1407.517944, 1361.213989,
                                                                         1406.370972, 0.0)
    assert ns("2007-05-03") not in s.ts and ns("2007-04-30") in s.ts


def test_no_header_file_with_date_and_hhmm_time_columns(shared_data):
    s = load_bars(shared_data / "zsh_a_etf/999999.SH.csv")
    # 2022/12/16,0931,3156.14,3162.95,3155.24,3160.51,929327,9293277184.00
    assert int(s.ts[0]) == ns("2022-12-16T09:31")
    assert (s.open[0], s.high[0], s.low[0], s.close[0], s.volume[0]) == (3156.14, 3162.95, 3155.24, 3160.51, 929327)
    assert s.extra["amount"][0] == 9293277184.0
    assert int(s.ts[1]) - int(s.ts[0]) == 60 * 10**9


def test_no_header_semicolon_file_with_compact_stamps(shared_data):
    s = load_bars(shared_data / "pyalgotrade/nt-spy-minute-2011.csv")
    # 20110103 090100;126.35;126.39;126.35;126.39;1579 (CRLF line ends)
    assert int(s.ts[0]) == ns("2011-01-03T09:01")
    assert (s.open[0], s.high[0], s.low[0], s.close[0], s.volume[0]) == (126.35, 126.39, 126.35, 126.39, 1579)


def test_399986_column_order_code_date_close_open_high_low(shared_data):
    s = load_bars(shared_data / "qbot/399986.SZ.csv")
    # 399986.SZ,20220923,5596.9342,5561.7019,5623.048,5561.3356,19911623.0,11286001.1 (first line, newest)
    assert int(s.ts[-1]) == ns("2022-09-23")
    assert (s.close[-1], s.open[-1], s.high[-1], s.low[-1], s.volume[-1]) == (5596.9342, 5561.7019, 5623.048,
                                                                              5561.3356, 19911623.0)
    assert s.extra["amount"][-1] == 11286001.1


def test_vnpy_000300_unpadded_slash_dates_and_close_first(shared_data):
    s = load_bars(shared_data / "vnpy/000300.csv")
    # 2013/1/4,2524.409,2558.529,2498.892,2551.814,9798818200
    assert int(s.ts[0]) == ns("2013-01-04")
    assert (s.close[0], s.high[0], s.low[0], s.open[0], s.volume[0]) == (2524.409, 2558.529, 2498.892, 2551.814,
                                                                         9798818200)


def test_stockstats_float_dates_and_alphabetical_columns(shared_data):
    s = load_bars(shared_data / "stockstats/987654.csv")
    assert int(s.ts[0]) == ns("1999-11-10") and s.close[0] == 27.75  # 19991110.0,29.5,29.8,27.0,27.75,...
    t = load_bars(shared_data / "stockstats/002032.csv")
    # date,amount,close,high,low,open,volume / 20040817,90923240.0,11.2,12.21,11.03,12.21,7877900
    assert (t.close[0], t.high[0], t.low[0], t.open[0], t.volume[0]) == (11.2, 12.21, 11.03, 12.21, 7877900)
    assert t.extra["amount"][0] == 90923240.0


def test_rqalpha_mdentrytime_joined_with_calendar_date(shared_data):
    s = load_bars(shared_data / "rqalpha/IF1706_20161108.csv")
    # 93100000,20161108,3209.8,3209.8,3209.8,3209.8,537,1,962940.0,...
    assert int(s.ts[0]) == ns("2016-11-08T09:31")
    assert (s.open[0], s.close[0], s.volume[0], s.extra["amount"][0]) == (3209.8, 3209.8, 1.0, 962940.0)
    assert ns("2016-11-08T13:01") in s.ts and ns("2016-11-08T12:00") not in s.ts


def test_freqtrade_json_epoch_ms_is_utc(shared_data):
    s = load_bars(shared_data / "freqtrade/UNITTEST_BTC-1m.json")
    assert s.tz == "UTC" and s.symbol == "UNITTEST_BTC-1m"
    assert int(s.ts[0]) == 1509836520000 * 10**6
    assert (s.open[0], s.volume[0]) == (0.00162008, 108.14853839)


def test_zipline_gzip_csv(shared_data):
    s = load_bars(shared_data / "zipline/AAPL.csv.gz")
    assert s.symbol == "AAPL" and s.open[0] == 58.485714 and s.volume[0] == 75555200


def test_unnamed_first_column_holds_dates_or_is_an_ignored_index(shared_data):
    goog = load_bars(shared_data / "backtesting_py/GOOG.csv")  # ,Open,... with dates in the unnamed column
    assert int(goog.ts[0]) == ns("2004-08-19") and goog.open[0] == 100.0
    tushare = load_bars(shared_data / "vnpy/600000.SH.csv")  # ,ts_code,trade_date,... unnamed = 0,1,2 index
    assert int(tushare.ts[-1]) == ns("2020-02-13") and tushare.open[-1] == 10.82
    assert tushare.extra["pre_close"][-1] == 10.86 and tushare.volume[-1] == 226306.13


def test_adj_close_never_used_as_close(shared_data):
    spy = load_bars(shared_data / "pyalgotrade/sharpe-ratio-test-spy.csv")
    ige = load_bars(shared_data / "pyalgotrade/sharpe-ratio-test-ige.csv")
    assert spy.close.tobytes() == ige.close.tobytes()  # same Close column, different Adj Close
    assert spy.close[0] == 91.01


# ---------------------------------------------------------------- bad input: file, line, field

def test_malformed_orcl_reports_line_3_field_open(shared_data):
    path = shared_data / "pyalgotrade/orcl-2010-googlefinance-malformed.csv"
    with pytest.raises(DataError) as e:
        load_bars(path)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), 3, "Open")
    assert e.value.reason == "not a number: '-'"
    assert str(e.value) == f"{path}:3: field 'Open': not a number: '-'"
    assert isinstance(e.value, ValueError)


def test_sz_null_rows_report_the_2007_05_03_line(shared_data):
    with pytest.raises(DataError) as e:
        load_bars(shared_data / "qbot/sz.csv")
    lines = (shared_data / "qbot/sz.csv").read_text().splitlines()
    assert lines[e.value.line - 1].startswith("2007-05-03,null")  # no header: line 1885
    assert (e.value.line, e.value.field, e.value.reason) == (1885, "Open", "not a number: 'null'")


def test_399006_close_above_high_line_13057(shared_data):
    with pytest.raises(DataError) as e:
        load_bars(shared_data / "zsh_a_etf/399006.csv")
    assert (e.value.line, e.value.field) == (13057, "close")
    assert "2576.34" in e.value.reason and "2576.33" in e.value.reason


BAD = {  # name: (file text, line, field, words in the reason)
    "high_below_low": (H + GOOD + "2010-01-05,10,9,11,10,100\n", 3, "High", "< low"),
    "open_above_high": (H + GOOD + "2010-01-05,12,11,9,10,100\n", 3, "Open", "outside"),
    "close_below_low": (H + GOOD + "2010-01-05,10,11,9,8,100\n", 3, "Close", "outside"),
    "zero_price": (H + GOOD + "2010-01-05,10,11,0,10,100\n", 3, "Low", "non-positive"),
    "negative_price": (H + GOOD + "2010-01-05,-1,11,9,10,100\n", 3, "Open", "non-positive"),
    "negative_volume": (H + GOOD + "2010-01-05,10,11,9,10,-5\n", 3, "Volume", "negative volume"),
    "duplicate": (H + GOOD + "2010-01-05,10,11,9,10,100\n2010-01-05,10,11,9,10,100\n", 4, "Date",
                  "duplicate timestamp 2010-01-05T00:00:00 (also on line 3)"),
    "out_of_order": (H + GOOD + "2010-01-07,10,11,9,10,1\n2010-01-06,10,11,9,10,1\n2010-01-08,10,11,9,10,1\n", 4,
                     "Date", "out of order"),
    "unparseable_date": (H + GOOD + "2010-02-30,10,11,9,10,100\n2010-01-06,10,11,9,10,100\n", 3, "Date",
                         "unparseable timestamp: '2010-02-30'"),
    "empty_cell": (H + GOOD + "2010-01-05,10,,9,10,100\n", 3, "High", "missing value"),
    "short_row": (H + GOOD + "2010-01-05,10,11,9\n", 3, "Close", "missing value"),
    "text_cell": (H + GOOD + "2010-01-05,10,11,9,n/a,100\n", 3, "Close", "not a number: 'n/a'"),
    "first_of_two_bad_rows": (H + GOOD + "2010-01-05,10,11,9,x,100\n2010-01-06,10,9,11,10,100\n", 3, "Close",
                              "not a number"),
    "bad_row_after_blank_line": (H + GOOD + "\n2010-01-05,10,11,9,x,100\n", 4, "Close", "not a number"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_row_names_file_line_and_field(tmp_path, name):
    text, line, field, words = BAD[name]
    path = write(tmp_path, f"{name}.csv", text)
    with pytest.raises(DataError) as e:
        load_bars(path)
    assert (e.value.path, e.value.line, e.value.field) == (str(path), line, field)
    assert words in e.value.reason
    assert str(e.value).startswith(f"{path}:{line}: field '{field}': ")


def test_bad_row_in_descending_file_reports_its_physical_line(tmp_path):
    text = H + "2010-01-08,10,11,9,10,1\n2010-01-07,10,11,9,10,1\n2010-01-07,10,11,9,10,1\n2010-01-05,10,9,11,10,1\n"
    with pytest.raises(DataError) as e:
        load_bars(write(tmp_path, "desc.csv", text))
    assert (e.value.line, e.value.field) == (3, "Date") and "duplicate" in e.value.reason
    fixed = text.replace("2010-01-07,10,11,9,10,1\n2010-01-07", "2010-01-07,10,11,9,10,1\n2010-01-06")
    with pytest.raises(DataError) as e:
        load_bars(write(tmp_path, "desc2.csv", fixed))
    assert (e.value.line, e.value.field) == (5, "High")


def test_mixed_order_is_an_error(tmp_path):
    text = H + "2010-01-04,10,11,9,10,1\n2010-01-06,10,11,9,10,1\n2010-01-05,10,11,9,10,1\n"
    with pytest.raises(DataError, match="out of order"):
        load_bars(write(tmp_path, "mixed.csv", text))


def test_missing_required_column_is_reported_against_the_header(tmp_path):
    with pytest.raises(DataError) as e:
        load_bars(write(tmp_path, "nolow.csv", "Date,Open,High,Close\n2010-01-04,1,2,1\n"))
    assert (e.value.line, e.value.field) == (1, "low")


def test_error_pickles_with_its_attributes():
    import pickle
    e = pickle.loads(pickle.dumps(DataError("a.csv", 3, "Open", "not a number: '-'")))
    assert (e.path, e.line, e.field, e.reason, str(e)) == ("a.csv", 3, "Open", "not a number: '-'",
                                                           "a.csv:3: field 'Open': not a number: '-'")


# ---------------------------------------------------------------- drop and repair

def test_drop_sz_null_rows_logs_count_and_lines(shared_data):
    log: list = []
    with structlog.testing.capture_logs() as events:
        s = load_bars(shared_data / "qbot/sz.csv", on_bad="drop", log=log)
    assert len(s) == 4977
    assert log == [{"file": str(shared_data / "qbot/sz.csv"), "action": "drop", "check": "missing_or_non_numeric",
                    "count": 3, "lines": [1885, 1886, 4962]}]
    dropped = [e for e in events if e["event"] == "bars_dropped"]
    assert dropped and dropped[0]["count"] == 3 and dropped[0]["lines"] == [1885, 1886, 4962]


def test_repair_399006_widens_high_and_drop_removes_the_bar(shared_data):
    path = shared_data / "zsh_a_etf/399006.csv"
    log: list = []
    with structlog.testing.capture_logs() as events:
        s = load_bars(path, on_bad="repair", log=log)
    i = int(np.searchsorted(s.ts, ns("2022-06-08T15:00")))
    assert (s.open[i], s.high[i], s.low[i], s.close[i]) == (2572.23, 2576.34, 2572.15, 2576.34)
    assert log == [{"file": str(path), "action": "repair", "check": "outside_range", "count": 1, "lines": [13057]}]
    assert any(e["event"] == "bars_repaired" for e in events)
    dropped = load_bars(path, on_bad="drop")
    assert len(dropped) == 23567 and ns("2022-06-08T15:00") not in dropped.ts


def test_drop_and_repair_counts_on_a_file_with_every_problem(tmp_path):
    text = (H + GOOD                                  # line 2 ok
            + "2010-01-05,10,9,11,10,100\n"           # 3 high < low: repairable
            + "2010-01-06,10,11,9,x,100\n"            # 4 not a number
            + "2010-01-07,0,11,9,10,100\n"            # 5 non-positive
            + "2010-01-08,10,11,9,10,100\n"           # 6 ok
            + "2010-01-08,10,12,9,11,200\n"           # 7 duplicate of line 6
            + "2010-01-11,10,11,9,10,100\n"           # 8 ok
            + "2010-01-09,10,11,9,10,300\n"           # 9 out of order
            + "garbage,10,11,9,10,100\n")             # 10 unparseable date
    path = write(tmp_path, "all.csv", text)
    log: list = []
    s = load_bars(path, on_bad="drop", log=log)
    assert days(s) == ["2010-01-04", "2010-01-08", "2010-01-11"]
    assert s.close[1] == 10 and s.volume[1] == 100  # first of the duplicates kept
    assert {(e["check"], e["count"], tuple(e["lines"])) for e in log} == {
        ("bad_timestamp", 1, (10,)), ("missing_or_non_numeric", 1, (4,)), ("non_positive_price", 1, (5,)),
        ("high_below_low", 1, (3,)), ("duplicate_timestamp", 1, (7,)), ("out_of_order", 1, (9,))}
    assert all(e["action"] == "drop" for e in log)

    log = []
    r = load_bars(path, on_bad="repair", log=log)
    assert days(r) == ["2010-01-04", "2010-01-05", "2010-01-08",
                                                                 "2010-01-09", "2010-01-11"]
    assert (r.high[1], r.low[1]) == (11.0, 9.0)            # high/low widened to max/min of o,h,l,c
    assert (r.close[2], r.volume[2]) == (11.0, 200.0)       # last row of the duplicate run kept
    assert r.volume[3] == 300                               # out-of-order row moved into place
    assert {(e["action"], e["check"], e["count"]) for e in log} == {
        ("drop", "bad_timestamp", 1), ("drop", "missing_or_non_numeric", 1), ("drop", "non_positive_price", 1),
        ("repair", "high_below_low", 1), ("repair", "duplicate_timestamp", 1), ("repair", "out_of_order", 1)}


def test_on_bad_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_bad"):
        load_bars(write(tmp_path, "ok.csv", H + GOOD), on_bad="ignore")


# ---------------------------------------------------------------- timestamps

DATES = [
    ("2010-01-04", "2010-01-04"),
    ("20100104", "2010-01-04"),
    ("2010/1/4", "2010-01-04"),
    ("2013/01/04 09:35", "2013-01-04T09:35"),
    ("2010-01-04 09:35:00", "2010-01-04T09:35"),
    ("2010-01-04T09:35:00.250", "2010-01-04T09:35:00.250"),
    ("31-Dec-10", "2010-12-31"),
    ("19991110.0", "1999-11-10"),
    ("20110103 090100", "2011-01-03T09:01"),
    ("1/4/2010", "2010-01-04"),
]


@pytest.mark.parametrize(("text", "iso"), DATES)
def test_date_forms_are_detected_and_stay_naive(tmp_path, text, iso):
    s = load_bars(write(tmp_path, "d.csv", f"Date,Open,High,Low,Close\n{text},1,2,1,2\n"))
    assert int(s.ts[0]) == ns(iso) and s.tz is None


@pytest.mark.parametrize(("date", "time", "iso"), [
    ("2022/12/16", "0931", "2022-12-16T09:31"),
    ("20161108", "93100000", "2016-11-08T09:31"),
    ("20161108", "131500", "2016-11-08T13:15"),
    ("20161108", "093005", "2016-11-08T09:30:05"),
    ("20170320", "09:00:00.5", "2017-03-20T09:00:00.5"),
])
def test_separate_date_and_time_columns_are_joined(tmp_path, date, time, iso):
    s = load_bars(write(tmp_path, "dt.csv", f"date,time,open,high,low,close\n{date},{time},1,2,1,2\n"))
    assert int(s.ts[0]) == ns(iso)


@pytest.mark.parametrize(("stamp", "mult"), [(1262563200, 10**9), (1262563200000, 10**6), (1262563200000000, 10**3)])
def test_unix_epochs_are_utc(tmp_path, stamp, mult):
    s = load_bars(write(tmp_path, "e.csv", f"timestamp,open,high,low,close\n{stamp},1,2,1,2\n"))
    assert int(s.ts[0]) == stamp * mult == ns("2010-01-04") and s.tz == "UTC"


def test_naive_day_is_midnight_wall_time_and_tz_option_converts_to_utc(tmp_path):
    path = write(tmp_path, "n.csv", H + GOOD + "2010-01-05 09:30:00,10,11,9,10.5,100\n")
    naive = load_bars(path)
    assert int(naive.ts[0]) == ns("2010-01-04T00:00:00") and naive.tz is None
    sh = load_bars(path, tz="Asia/Shanghai")
    assert sh.tz == "UTC"
    assert [int(t) for t in sh.ts] == [ns("2010-01-03T16:00"), ns("2010-01-05T01:30")]
    ny = load_bars(path, tz="America/New_York")
    assert int(ny.ts[0]) == ns("2010-01-04T05:00")


def test_zone_aware_stamps_are_converted_to_utc(tmp_path):
    text = "datetime,open,high,low,close\n2010-01-04T09:30:00-05:00,1,2,1,2\n2010-01-04T14:31:00Z,1,2,1,2\n"
    s = load_bars(write(tmp_path, "z.csv", text))
    assert s.tz == "UTC" and [int(t) for t in s.ts] == [ns("2010-01-04T14:30"), ns("2010-01-04T14:31")]


def test_date_format_overrides_detection(tmp_path):
    path = write(tmp_path, "f.csv", "Date,Open,High,Low,Close\n03/04/2010,1,2,1,2\n")
    assert int(load_bars(path).ts[0]) == ns("2010-03-04")  # month first by default
    assert int(load_bars(path, date_format="%d/%m/%Y").ts[0]) == ns("2010-04-03")


# ---------------------------------------------------------------- options

def test_columns_override_by_name_and_position(tmp_path, shared_data):
    text = "When,A,B,C,MyClose,Vol,Adj Close\n2010-01-04,1,3,0.5,2,7,99\n"
    s = load_bars(write(tmp_path, "c.csv", text),
                  columns={"ts": "When", "open": "A", "high": "B", "low": "C", "close": "MyClose"})
    assert (s.open[0], s.high[0], s.low[0], s.close[0], s.volume[0]) == (1, 3, 0.5, 2, 7)
    p = load_bars(write(tmp_path, "c2.csv", text), columns={"ts": 0, "open": 1, "high": 2, "low": 3, "close": 4})
    assert (p.open[0], p.high[0], p.low[0], p.close[0], p.volume[0]) == (1, 3, 0.5, 2, 7)  # Vol found by alias
    close_only = load_bars(shared_data / "ffn/test_data.csv", "MSFT", columns={"close": "MSFT"})
    assert len(close_only) == 2517 and close_only.close[0] == close_only.open[0] == 25.37


def test_positional_columns_on_a_headerless_file(shared_data):
    s = load_bars(shared_data / "qbot/sz.csv", columns={"ts": 0, "close": 5}, on_bad="drop")
    assert s.close[1] == 1406.370972 and (s.volume == 0).all()


def test_missing_volume_column_gives_zeros(tmp_path):
    s = load_bars(write(tmp_path, "nv.csv", "date,open,high,low,close\n2010-01-04,1,2,1,2\n"))
    assert s.volume.tolist() == [0.0]


def test_separator_header_encoding_and_bom_options(tmp_path):
    tab = load_bars(write(tmp_path, "t.txt", "Date\tOpen\tHigh\tLow\tClose\n2010-01-04\t1\t2\t1\t2\n"))
    assert tab.close[0] == 2
    bom = load_bars(write(tmp_path, "b.csv", b"\xef\xbb\xbf" + (H + GOOD).encode()))
    assert bom.close[0] == 10.5
    gbk = write(tmp_path, "g.csv", "日期,开盘价,最高价,最低价,收盘价,成交量\n2010-01-04,1,2,1,2,3\n".encode("gbk"))
    assert load_bars(gbk).volume[0] == 3 and load_bars(gbk, encoding="gbk").volume[0] == 3
    noh = write(tmp_path, "nh.csv", "2010-01-04;1;2;1;2;3\n2010-01-05;1;2;1;2;3\n")
    assert len(load_bars(noh, separator=";", has_header=False)) == 2
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress((H + GOOD).encode()))
    assert load_bars(gz).symbol == "x"


def test_parquet_and_json_inputs(tmp_path):
    import polars as pl
    pq = tmp_path / "p.parquet"
    pl.DataFrame({"date": ["2010-01-04", "2010-01-05"], "open": [1.0, 2.0], "high": [2.0, 3.0], "low": [1.0, 2.0],
                  "close": [2.0, 3.0], "volume": [5, 6]}).write_parquet(pq)
    s = load_bars(pq)
    assert s.ts.tolist() == [ns("2010-01-04"), ns("2010-01-05")] and s.volume.tolist() == [5.0, 6.0]
    js = tmp_path / "j.json"
    js.write_text(json.dumps([[1262563200000, 1, 2, 1, 2, 3], [1262563260000, 1, 2, None, 2, 3]]))
    with pytest.raises(DataError) as e:
        load_bars(js)
    assert (e.value.line, e.value.field, e.value.reason) == (2, "low", "missing value")


def test_validate_series_built_in_code():
    ts = np.array([ns("2024-01-02"), ns("2024-01-03"), ns("2024-01-03")])
    one = np.ones(3)
    validate_series(BarSeries("X", ts[:2], one[:2], one[:2] * 2, one[:2], one[:2], one[:2]))
    with pytest.raises(DataError) as e:
        validate_series(BarSeries("X", ts, one, one * 2, one, one, one))
    assert (e.value.path, e.value.line, e.value.field) == ("X", 3, "ts") and "duplicate" in e.value.reason
    with pytest.raises(DataError) as e:
        validate_series(BarSeries("X", ts[:2], one[:2], np.array([2.0, 0.5]), one[:2], one[:2], one[:2]))
    assert (e.value.line, e.value.field) == (2, "high")
