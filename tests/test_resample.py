"""Bars from ticks, resampling, sessions and multi-timeframe subscriptions (data/resample.py, data/sessions.py,
engine/loop/timeframes.py), checked against polars ``group_by_dynamic`` and the real files' own bars."""
from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import polars as pl
import pytest

from tests.conftest import SHARED_DATA, need
from tradeloop.data.resample import BarBuilder, Resampler, bars_from_ticks, resample, stream_ticks, timeframe_ns
from tradeloop.data.schema import Bar, BarSeries, TickSeries
from tradeloop.data.sessions import PRESETS, Sessions

MIN = 60_000_000_000
DAY = 86_400_000_000_000


def ns(text: str) -> int:
    return int(np.datetime64(text, "ns").astype(np.int64))


def hhmm(t: int) -> str:
    return str(np.datetime64(int(t), "ns"))[11:16]


def rows(s: BarSeries) -> list[Bar]:
    return [s.bar(i) for i in range(len(s))]


def vnpy_ticks() -> TickSeries:
    path = need(SHARED_DATA / "vnpy" / "RM705-2017-03-20.csv")
    df = pl.read_csv(path)
    ts = df.select(pl.concat_str([pl.col("date").cast(pl.Utf8), pl.col("time")], separator=" ")
                   .str.strptime(pl.Datetime("ns"), "%Y%m%d %H:%M:%S%.f").cast(pl.Int64)).to_series().to_numpy()
    n = len(ts)
    f = lambda c: df[c].to_numpy().astype(np.float64)  # noqa: E731
    return TickSeries("RM705", ts, np.arange(n, dtype=np.int64), f("lastPrice"), f("lastVolume"), f("bidPrice1"),
                      f("askPrice1"), f("bidVolume1"), f("askVolume1"), np.zeros(n, np.int8), source=str(path))


def sse_minutes(days: int | None = None) -> BarSeries:
    """The SSE Composite 1m file (END-labelled, 09:31..11:30, 13:01..15:00)."""
    path = need(SHARED_DATA / "zsh_a_etf" / "999999.SH.csv")
    df = pl.read_csv(path, has_header=False, new_columns=[
        "d", "t", "open", "high", "low", "close", "volume", "amount"])
    df = df.with_columns(pl.concat_str(["d", pl.col("t").cast(pl.Utf8).str.zfill(4)], separator=" ").str.strptime(pl.Datetime("ns"), "%Y/%m/%d %H%M")
                         .cast(pl.Int64).alias("ts"))
    if days is not None:
        keep = df["d"].unique(maintain_order=True)[:days]
        df = df.filter(pl.col("d").is_in(keep.to_list()))
    g = lambda c: df[c].to_numpy().astype(np.float64)  # noqa: E731
    return BarSeries("999999.SH", df["ts"].to_numpy(), g("open"), g("high"), g("low"), g("close"), g("volume"),
                     {"amount": g("amount")}, None, str(path))


def polars_bars(ts: np.ndarray, o, h, lo, c, v, every_min: int, closed: str, segments) -> list[tuple]:
    """Independent bars: polars group_by_dynamic over each session segment (open_ns, close_ns), the grid
    anchored at the segment's open, a bucket cut by the close labelled with the close (END) time."""
    out = []
    df = pl.DataFrame({"ts": ts, "o": o, "h": h, "l": lo, "c": c, "v": v})
    for a, b in segments:
        inside = (pl.col("ts") >= a) & (pl.col("ts") <= b) if closed == "right" else (pl.col("ts") >= a) & (pl.col("ts") < b)
        part = df.filter(inside).with_columns(pl.col("ts").cast(pl.Datetime("ns")))
        if part.is_empty():
            continue
        offset = f"{(a // MIN) % every_min}m"
        g = (part.group_by_dynamic("ts", every=f"{every_min}m", closed=closed, label="right" if closed == "right" else "left",
                                   offset=offset, start_by="window")
             .agg(pl.col("o").first(), pl.col("h").max(), pl.col("l").min(), pl.col("c").last(), pl.col("v").sum()))
        for t, *vals in g.iter_rows():
            stamp = int(np.datetime64(t, "ns").astype(np.int64))
            if closed == "right":
                stamp = min(stamp, b)
                if stamp == a:    # a point exactly at the open: the first bucket, as resample does
                    stamp = min(a + every_min * MIN, b)
            out.append((stamp, *vals))
    merged: dict[int, list] = {}
    for stamp, o_, h_, l_, c_, v_ in out:   # the at-open point may make a second group for the first bucket
        if stamp in merged:
            m = merged[stamp]
            merged[stamp] = [m[0], max(m[1], h_), min(m[2], l_), c_, m[4] + v_]
        else:
            merged[stamp] = [o_, h_, l_, c_, v_]
    return [(k, *v) for k, v in sorted(merged.items())]


def as_tuples(s: BarSeries) -> list[tuple]:
    return [(int(s.ts[i]), float(s.open[i]), float(s.high[i]), float(s.low[i]), float(s.close[i]), float(s.volume[i]))
            for i in range(len(s))]


def segments_of(ts: np.ndarray, sessions: Sessions) -> list[tuple[int, int]]:
    days = sorted(set((ts // DAY).tolist()))
    return [(d * DAY + o * MIN, d * DAY + c * MIN) for d in days for o, c, _ in sessions.windows]


# -- ticks -> bars ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tf", ["1m", "5m", "30m", "1h"])
@pytest.mark.parametrize("label", ["end", "start"])
def test_tick_bars_streaming_equals_batch(tf, label):
    ticks = vnpy_ticks()
    batch = bars_from_ticks(ticks, tf, "cn-commodity", label=label)
    streamed = stream_ticks(BarBuilder("RM705", tf, "cn-commodity", label=label), map(ticks.tick, range(len(ticks))))
    assert len(batch) > 0 and rows(batch) == streamed


def test_tick_bars_mid_and_daily_streaming_equals_batch():
    ticks = vnpy_ticks().between(None, ns("2017-03-20T10:00"))
    for kw in ({"timeframe": "1m", "price": "mid"}, {"timeframe": "1d"}):
        b = bars_from_ticks(ticks, sessions="cn-commodity", **kw)
        s = stream_ticks(BarBuilder("RM705", kw["timeframe"], "cn-commodity", price=kw.get("price", "auto")),
                         map(ticks.tick, range(len(ticks))))
        assert rows(b) == s
    assert bars_from_ticks(ticks, "1d", "cn-commodity").ts.tolist() == [ns("2017-03-20")]


@pytest.mark.parametrize("every", [1, 5, 15, 30])
@pytest.mark.parametrize("label", ["end", "start"])
def test_tick_bars_equal_polars_per_session_segment(every, label):
    ticks = vnpy_ticks()
    sess = PRESETS["cn-commodity-day"]
    ours = bars_from_ticks(ticks, f"{every}m", sess, label=label)
    closed = "right" if label == "end" else "left"
    p = ticks.price
    theirs = polars_bars(ticks.ts, p, p, p, p, ticks.size, every, closed, segments_of(ticks.ts, sess))
    assert as_tuples(ours) == theirs


def test_tick_bars_never_span_a_break():
    ticks = vnpy_ticks()
    bars = bars_from_ticks(ticks, "30m", "cn-commodity")
    assert [hhmm(t) for t in bars.ts] == ["09:30", "10:00", "10:15", "11:00", "11:30", "14:00", "14:30"]
    breaks = [(ns("2017-03-20T10:15"), ns("2017-03-20T10:30")), (ns("2017-03-20T11:30"), ns("2017-03-20T13:30"))]
    for label in bars.ts:   # an END-labelled 30m bar covers (label - 30m, label]: never both sides of a break
        lo, hi = label - 30 * MIN, label
        assert not any(lo < a and hi > b for a, b in breaks), hhmm(label)
    h = bars_from_ticks(ticks, "1h", "cn-commodity")
    assert [hhmm(t) for t in h.ts] == ["10:00", "10:15", "11:30", "14:30"]   # 14:30: the file stops at 14:24
    # every tick but the two pre-open snapshots in the breaks (10:29:59.5, 13:29:59.5): outside windows, dropped
    assert int(h.extra["ticks"].sum()) == len(ticks) - 2


def test_tick_count_and_volume_bars_restart_at_sessions():
    ticks = vnpy_ticks()
    c = bars_from_ticks(ticks, every=1000, sessions="cn-commodity")
    assert int(c.extra["ticks"].sum()) == len(ticks) - 2 and c.extra["ticks"].max() == 1000   # 2 in the breaks
    assert (c.extra["ticks"] < 1000).sum() == 3     # the last bar of each of the 3 windows is short
    t0 = ns("2024-01-02T09:30")
    ts = np.array([t0 + i * 1_000_000_000 for i in range(6)], np.int64)
    z = np.zeros(6)
    size = np.array([4.0, 4.0, 4.0, 10.0, 1.0, 1.0])
    t = TickSeries("X", ts, np.arange(6), np.arange(1.0, 7.0), size, z * np.nan, z * np.nan, z, z, z.astype(np.int8))
    v = bars_from_ticks(t, volume=10, sessions=None, label="end")
    assert v.volume.tolist() == [12.0, 10.0, 2.0] and v.ts.tolist() == [ts[2], ts[3], ts[5]]


def test_night_session_belongs_to_the_next_trading_day():
    fri_night = [ns("2024-03-08T21:05"), ns("2024-03-08T22:59")]
    mon = [ns("2024-03-11T09:05"), ns("2024-03-11T14:59"), ns("2024-03-11T21:01")]
    ts = np.array(fri_night + mon, np.int64)
    z = np.zeros(len(ts))
    t = TickSeries("RM", ts, np.arange(len(ts)), np.arange(1.0, 6.0), z + 1, z * np.nan, z * np.nan, z, z,
                   z.astype(np.int8))
    d = bars_from_ticks(t, "1d", "cn-commodity")
    assert d.ts.tolist() == [ns("2024-03-11"), ns("2024-03-12")]     # Friday night -> Monday; Monday night -> Tuesday
    assert d.open.tolist() == [1.0, 5.0] and d.close.tolist() == [4.0, 5.0] and d.volume.tolist() == [4.0, 1.0]
    assert [hhmm(x) for x in bars_from_ticks(t, "1h", "cn-commodity").ts] == ["22:00", "23:00", "10:00", "15:00", "22:00"]


def test_utc_data_uses_the_sessions_local_time():
    local = vnpy_ticks().between(None, ns("2017-03-20T09:20"))
    utc = TickSeries(local.symbol, local.ts - 8 * 3600 * 10**9, local.seq, local.price, local.size, local.bid,
                     local.ask, local.bid_size, local.ask_size, local.side, tz="UTC")
    a, b = bars_from_ticks(local, "5m", "cn-commodity"), bars_from_ticks(utc, "5m", "cn-commodity")
    assert (b.ts + 8 * 3600 * 10**9).tolist() == a.ts.tolist() and b.close.tolist() == a.close.tolist()


# -- bars -> higher timeframes --------------------------------------------------------------------
@pytest.mark.parametrize("every", [5, 15, 30, 60, 120])
def test_a_share_minutes_resample_equal_polars_per_segment(every):
    m1 = sse_minutes(days=20)
    sess = PRESETS["cn-a"]
    ours = resample(m1, f"{every}m", "cn-a")
    theirs = polars_bars(m1.ts, m1.open, m1.high, m1.low, m1.close, m1.volume, every, "right", segments_of(m1.ts, sess))
    assert as_tuples(ours) == theirs
    assert np.allclose(ours.extra["amount"].sum(), m1.extra["amount"].sum())


def test_a_share_5m_from_1m_has_the_labels_of_the_real_5m_file():
    m1 = sse_minutes()
    five = resample(m1, "5m", "cn-a")
    path = need(SHARED_DATA / "zsh_a_etf" / "510050.csv")
    real = pl.read_csv(path).with_columns(pl.col("datetime").str.strptime(pl.Datetime("ns"), "%Y-%m-%d %H:%M")
                                          .cast(pl.Int64).alias("ts"))["ts"].to_numpy()
    days = np.intersect1d(np.unique(five.ts // DAY), np.unique(real // DAY))
    assert len(days) > 80
    ours = five.ts[np.isin(five.ts // DAY, days)]
    theirs = real[np.isin(real // DAY, days)]
    assert ours.tolist() == theirs.tolist()                       # 09:35..11:30, 13:05..15:00: 48 a day
    tod = (ours % DAY) // MIN
    assert not ((tod > 11 * 60 + 30) & (tod <= 13 * 60)).any()     # nothing in the lunch break
    hours = resample(m1, "1h", "cn-a")
    assert sorted({hhmm(t) for t in hours.ts}) == ["10:30", "11:30", "14:00", "15:00"]


def test_resample_chain_and_daily():
    m1 = sse_minutes(days=10)
    m5 = resample(m1, "5m", "cn-a")
    m30 = resample(m1, "30m", "cn-a")
    assert as_tuples(resample(m5, "30m", "cn-a")) == as_tuples(m30)            # 1m -> 5m -> 30m == 1m -> 30m
    d = resample(m30, "1d", "cn-a")
    assert as_tuples(d) == as_tuples(resample(m1, "1d", "cn-a"))
    day = m1.ts // DAY
    assert d.ts.tolist() == (np.unique(day) * DAY).tolist()
    first = np.flatnonzero(np.r_[True, day[1:] != day[:-1]])
    assert d.open.tolist() == m1.open[first].tolist() and d.high.max() == m1.high.max()


@pytest.mark.parametrize("tf", ["5m", "30m", "1h", "1d"])
def test_resampler_streaming_equals_batch(tf):
    m1 = sse_minutes(days=8)
    r = Resampler(m1.symbol, tf, "cn-a", base="1m")
    out = []
    for i in range(len(m1)):
        out += r.update(m1.bar(i))
    out += r.flush()
    assert out == rows(resample(m1, tf, "cn-a"))


def test_crypto_start_labelled_minutes_equal_polars():
    path = need(SHARED_DATA / "freqtrade" / "UNITTEST_BTC-1m.json")
    a = np.array(json.loads(path.read_text()), dtype=np.float64)
    ts = a[:, 0].astype(np.int64) * 1_000_000
    s = BarSeries("UNITTEST/BTC", ts, a[:, 1], a[:, 2], a[:, 3], a[:, 4], a[:, 5], tz="UTC")
    for every in (5, 60):
        ours = resample(s, f"{every}m", "crypto")
        df = pl.DataFrame({"ts": ts, "o": s.open, "h": s.high, "l": s.low, "c": s.close, "v": s.volume}).with_columns(
            pl.col("ts").cast(pl.Datetime("ns")))
        g = df.group_by_dynamic("ts", every=f"{every}m", closed="left", label="left").agg(
            pl.col("o").first(), pl.col("h").max(), pl.col("l").min(), pl.col("c").last(), pl.col("v").sum())
        theirs = [(int(np.datetime64(t, "ns").astype(np.int64)), *v) for t, *v in g.iter_rows()]
        assert [x[:5] for x in as_tuples(ours)] == [x[:5] for x in theirs]
        assert np.allclose([x[5] for x in as_tuples(ours)], [x[5] for x in theirs], rtol=1e-12)


def test_sessions_parse_and_timeframes():
    s = Sessions.parse("21:00-02:30,09:00-10:15,10:30-11:30,13:30-15:00", "Asia/Shanghai")
    assert s.windows[0] == (21 * 60, 26 * 60 + 30, True) and s.windows[1][2] is False
    assert timeframe_ns("5m") == 5 * MIN and timeframe_ns("1h") == 60 * MIN and timeframe_ns("1d") is None
    with pytest.raises(ValueError):
        timeframe_ns("2d")
    with pytest.raises(ValueError):
        Sessions.parse("09:30-11:30", label="middle")


# -- several timeframes in a strategy -------------------------------------------------------------
def _run_recording(series: BarSeries) -> list[tuple]:
    from tradeloop.engine.drivers.backtest import run_backtest
    from tradeloop.engine.loop.strategy import Strategy

    seen: list[tuple] = []

    class MultiTF(Strategy):
        timeframes = {"30m": {"sessions": "cn-a"}}

        def on_start(self, ctx):
            self.m5 = ctx.subscribe(series.symbol, "5m", "cn-a")
            self.d1 = ctx.subscribe(series.symbol, "1d", "cn-a")

        def on_bar(self, ctx, bar):
            m5 = ctx.timeframe(bar.symbol, "5m")
            seen.append((ctx.now, "base", bar, tuple(m5.history("close", 3)), len(self.d1)))

        def on_timeframe_bar(self, ctx, timeframe, bar):
            assert bar.ts <= ctx.now                     # END labels: closed by now, never ahead of it
            seen.append((ctx.now, timeframe, bar))
            if timeframe == "30m" and not ctx.position(bar.symbol):
                ctx.buy(bar.symbol, 1)

    res = run_backtest(MultiTF(), [series])
    assert res.fills                                      # orders from on_timeframe_bar route and fill
    return seen


def test_higher_timeframes_reach_the_strategy_only_when_closed():
    m1 = sse_minutes(days=4)
    seen = _run_recording(m1)
    got5 = [b for now, tf, b, *_ in seen if tf == "5m"]
    # every 5m bar, each at the 1m step stamped with its end (a backtest's base Bar carries no amount)
    assert got5 == [Bar(*b.__struct_fields__ and (b.symbol, b.ts, b.open, b.high, b.low, b.close, b.volume))
                    for b in rows(resample(m1, "5m", "cn-a"))]
    assert all(now == b.ts for now, tf, b, *_ in seen if tf in ("5m", "30m"))
    days = [b for now, tf, b, *_ in seen if tf == "1d"]
    assert [b.ts for b in days] == rows_ts(resample(m1, "1d", "cn-a"))
    assert all(now % DAY == 15 * 60 * MIN for now, tf, *_ in seen if tf == "1d")   # delivered at 15:00

    t_cut = ns(str(np.datetime64(int(m1.ts[len(m1) // 2]), "ns")))
    later = m1.ts > t_cut
    bumped = BarSeries(m1.symbol, m1.ts, np.where(later, m1.open * 1.1, m1.open), np.where(later, m1.high * 1.1, m1.high),
                       np.where(later, m1.low * 0.9, m1.low), np.where(later, m1.close * 1.05, m1.close),
                       np.where(later, m1.volume + 7, m1.volume), {"amount": m1.extra["amount"]}, None, m1.source)
    seen2 = _run_recording(bumped)
    upto = lambda s: [x for x in s if x[0] <= t_cut]   # noqa: E731
    assert upto(seen) == upto(seen2) and len(upto(seen)) > 400
    assert seen != seen2                               # and the change does show after the cut


def rows_ts(s: BarSeries) -> list[int]:
    return s.ts.tolist()
