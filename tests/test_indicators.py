"""Specification of data.indicators: batch == streaming bit for bit, no look-ahead, SMA is
exactly math.fsum(window) / n, agreement with backtrader on a real price file, edge cases."""
from __future__ import annotations

import dataclasses
import importlib.util
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeloop.data import indicators as ind
from tradeloop.data.indicators import INDICATORS, IndicatorSpec
from tests.conftest import ORCL, SHARED, need

SAMPLE = ORCL  # backtrader's ORCL daily bars in ../shared/data; need(SAMPLE) skips where absent
BT_COMMON = SHARED / "bench" / "common.py"
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fsum_sma(x, n: int) -> np.ndarray:
    """Reference SMA: math.fsum of each full window / n, NaN before."""
    v = [float(a) for a in x]
    return np.array([math.fsum(v[t - n + 1:t + 1]) / n if t >= n - 1 else math.nan
                     for t in range(len(v))], dtype=float)


def outputs(result) -> tuple[np.ndarray, ...]:
    """A batch result as a tuple of arrays (single-output indicators return one array)."""
    return result if isinstance(result, tuple) else (result,)


def run_stream(spec: IndicatorSpec, cols: dict, params: dict) -> tuple[np.ndarray, ...]:
    """Feed the columns bar by bar to a fresh streaming instance; outputs as arrays."""
    s = spec.new_stream(**params)
    n_bars = len(cols[spec.inputs[0]])
    rows = [outputs(s.update(*(float(cols[f][t]) for f in spec.inputs))) for t in range(n_bars)]
    return tuple(np.array([r[k] for r in rows], dtype=float) for k in range(spec.n_outputs))


def same(a, b) -> bool:
    """Bit-level agreement up to NaN payloads (and the sign of zero, which no test relies on)."""
    return all(np.array_equal(x, y, equal_nan=True) for x, y in zip(outputs(a), outputs(b)))


# ---------------------------------------------------------------------------------------
# Data strategies
# ---------------------------------------------------------------------------------------


@st.composite
def prices(draw, max_len: int = 300) -> np.ndarray:
    """Price-like series: a cent random walk with constant runs (exact ties), sometimes scaled
    by an odd factor so that mantissas are full."""
    steps = draw(st.lists(st.tuples(st.integers(-40, 40), st.integers(1, 8)), max_size=max_len))
    cents = draw(st.integers(1, 50_000))
    out = []
    for delta, run in steps:
        cents = max(1, cents + delta)
        out += [cents] * run
    x = np.array(out[:draw(st.integers(0, max_len))], dtype=float) / 100.0
    return x * draw(st.sampled_from([1.0, 1.0, 0.37, 3.0, 1 / 3]))


@st.composite
def bars(draw, max_len: int = 300) -> dict[str, np.ndarray]:
    """Columns for every registry input: OHLC around a price walk, and crossover inputs a/b
    as two SMAs of the walk (leading NaNs, and ties on flat stretches)."""
    c = draw(prices(max_len))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    wick = np.round(rng.uniform(0, 0.5, (2, len(c))), 2)
    f, s = draw(st.integers(1, 12)), draw(st.integers(1, 30))
    return {"close": c, "high": c + wick[0], "low": np.maximum(c - wick[1], 0.01),
            "a": ind.sma(c, f), "b": ind.sma(c, s)}


def with_nans(draw, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copy of cols with leading NaNs (data not yet available) and a few NaNs inside."""
    out = {}
    lead = draw(st.integers(0, 20))
    for k, v in cols.items():
        v = v.copy()
        v[:lead] = np.nan
        for i in draw(st.lists(st.integers(0, max(len(v) - 1, 0)), max_size=3)):
            if len(v):
                v[i] = np.nan
        out[k] = v
    return out


PARAMS = {
    "sma": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "ema": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "rsi": st.fixed_dictionaries({"n": st.integers(1, 30)}),
    "atr": st.fixed_dictionaries({"n": st.integers(1, 30)}),
    "macd": st.fixed_dictionaries({"fast": st.integers(1, 15), "slow": st.integers(1, 30),
                                   "signal": st.integers(1, 12)}),
    "bollinger": st.fixed_dictionaries({"n": st.integers(1, 40),
                                        "k": st.sampled_from([0.5, 1.0, 2.0, 2.5, 3.0])}),
    "rolling_std": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "highest": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "lowest": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "roc": st.fixed_dictionaries({"n": st.integers(1, 40)}),
    "crossover": st.just({}),
}


def test_every_indicator_has_a_params_strategy():
    assert set(PARAMS) == set(INDICATORS)


# ---------------------------------------------------------------------------------------
# Batch == streaming, no look-ahead
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INDICATORS))
@FAST
@given(data=st.data())
def test_batch_equals_streaming(name, data):
    spec = INDICATORS[name]
    cols = data.draw(bars())
    params = data.draw(PARAMS[name])
    assert same(spec.compute(cols, **params), run_stream(spec, cols, params))


@pytest.mark.parametrize("name", sorted(INDICATORS))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_batch_equals_streaming_with_nans(name, data):
    spec = INDICATORS[name]
    cols = with_nans(data.draw, data.draw(bars(120)))
    params = data.draw(PARAMS[name])
    assert same(spec.compute(cols, **params), run_stream(spec, cols, params))


WILD = st.one_of(st.floats(-1e300, 1e300), st.sampled_from([math.nan, math.inf, 5e-324, 0.0]))


@pytest.mark.parametrize("name", sorted(INDICATORS))
@FAST
@given(data=st.data())
def test_no_look_ahead(name, data):
    """Changing inputs after t (even to NaN, inf or huge values) leaves outputs 0..t alone."""
    spec = INDICATORS[name]
    cols = data.draw(bars(150))
    n_bars = len(cols["close"])
    params = data.draw(PARAMS[name])
    t = data.draw(st.integers(-1, n_bars - 1))
    tail = data.draw(st.lists(WILD, min_size=n_bars - t - 1, max_size=n_bars - t - 1))
    changed = {k: np.concatenate([v[:t + 1], tail]) for k, v in cols.items()}
    before = outputs(spec.compute(cols, **params))
    after = outputs(spec.compute(changed, **params))
    assert all(np.array_equal(b[:t + 1], a[:t + 1], equal_nan=True) for b, a in zip(before, after))


# ---------------------------------------------------------------------------------------
# SMA is exactly math.fsum(window) / n
# ---------------------------------------------------------------------------------------

MIXED = st.one_of(
    st.floats(-1e300, 1e300, allow_nan=False),
    st.floats(-1e-300, 1e-300, allow_nan=False),
    st.integers(-10**6, 10**6).map(lambda i: i / 100),
    st.sampled_from([0.0, -0.0, 1.0, 0.1, 2.0**-53, 2.0**-106, 1e300, -1e300, 5e-324, 2.0**53]),
)


@settings(max_examples=200, deadline=None)
@given(pool=st.lists(MIXED, min_size=1, max_size=8),
       picks=st.lists(st.integers(0, 7), max_size=300), n=st.integers(1, 40))
def test_sma_is_exactly_fsum_over_mixed_magnitudes(pool, picks, n):
    """Huge, tiny, subnormal, repeated values and exact half-way cases: every window is fsum."""
    x = np.array([pool[i % len(pool)] for i in picks], dtype=float)
    ref = fsum_sma(x, n)
    assert same(ind.sma(x, n), ref)
    assert same(ind._rolling_mean_partials(x, n), ref)  # the general path, whichever is chosen


@settings(max_examples=100, deadline=None)
@given(x=prices(), n=st.integers(1, 60))
def test_sma_is_exactly_fsum_on_prices_both_paths(x, n):
    ref = fsum_sma(x, n)
    e = ind._fixed_grid(x, n)
    assert e != ind._NO_GRID  # price data takes the fixed-point path...
    assert same(ind._rolling_mean_fixed(x, n, e), ref)
    assert same(ind._rolling_mean_partials(x, n), ref)  # ...and the partials agree


def test_sma_half_way_cases_round_like_fsum():
    """Exact ties round to even; a tiny third term breaks the tie the way fsum does."""
    for x in ([1.0, 2.0**-53, 0.0], [1.0, 2.0**-53, 2.0**-106], [1.0, 2.0**-53, -(2.0**-106)],
              [2.0**53, 1.0, 0.0], [2.0**53, 1.0, 1e-30], [-(2.0**53), -1.0, -1e-30]):
        got = ind.sma(np.array(x), 3)[2]
        assert got == math.fsum(x) / 3
        assert ind.sma(np.array(x + x[:2]), 3)[4] == math.fsum(x) / 3  # after sliding too


@pytest.fixture(scope="module")
def orcl() -> dict[str, np.ndarray]:
    raw = np.genfromtxt(need(SAMPLE), delimiter=",", names=True, dtype=None, encoding="ascii")
    return {k: raw[c].astype(float) for k, c in
            (("open", "Open"), ("high", "High"), ("low", "Low"), ("close", "Close"))}


@pytest.mark.parametrize("n", [1, 2, 10, 30, 200, 5036, 6000])
def test_sma_is_exactly_fsum_on_real_file(orcl, n):
    c = orcl["close"]
    assert same(ind.sma(c, n), fsum_sma(c, n))
    assert same(ind.sma(np.round(c, 2), n), fsum_sma(np.round(c, 2), n))


def test_sma_special_values_follow_fsum():
    nan, inf = math.nan, math.inf
    assert same(ind.sma([1.0, nan, 2.0, 3.0], 2), [nan, nan, nan, 2.5])
    assert same(ind.sma([inf, 1.0, 2.0], 2), [nan, inf, 1.5])
    assert same(ind.sma([inf, -inf, 2.0], 2), [nan, nan, -inf])  # fsum raises: NaN
    # partials overflow (fsum raises: NaN), then recovery once the window is representable
    x = [1e308, 1e308, -1e308, -1e308, 5.0]
    assert same(ind.sma(x, 2), [nan, nan, 0.0, nan, (-1e308 + 5.0) / 2])
    s = ind.SMA(2)
    assert same(np.array([s.update(v) for v in x]), ind.sma(x, 2))


# ---------------------------------------------------------------------------------------
# Agreement with backtrader
# ---------------------------------------------------------------------------------------


def run_backtrader(round_prices: bool) -> dict[str, np.ndarray]:
    """backtrader's own indicator lines on the sample file (runonce), with its input columns."""
    bt = pytest.importorskip("backtrader")

    class Probe(bt.Strategy):
        def __init__(self):
            d, c = self.data, self.data.close
            self.lines_out = out = {
                "sma10": bt.ind.SMA(c, period=10), "sma30": bt.ind.SMA(c, period=30),
                "ema": bt.ind.EMA(c, period=30), "rsi": bt.ind.RSI(c, period=14),
                "rsi_safe": bt.ind.RSI_Safe(c, period=14), "atr": bt.ind.ATR(d, period=14),
                "macd": bt.ind.MACDHisto(c), "std": bt.ind.StdDev(c, period=20),
                "bb": bt.ind.BollingerBands(c, period=20, devfactor=2.0),
                "highest": bt.ind.Highest(d.high, period=20),
                "lowest": bt.ind.Lowest(d.low, period=20), "roc": bt.ind.ROC(c, period=12),
            }
            out["cross"] = bt.ind.CrossOver(out["sma10"], out["sma30"])

    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(bt.feeds.YahooFinanceCSVData(dataname=str(need(SAMPLE)), adjclose=False,
                                                 round=round_prices))
    cerebro.addstrategy(Probe)
    strat = cerebro.run()[0]
    out = {f: np.array(getattr(strat.data, f).array) for f in ("high", "low", "close")}
    for k, i in strat.lines_out.items():
        for j, name in enumerate(i.lines.getlinealiases()):
            out[f"{k}.{name}"] = np.array(i.lines[j].array)
    return out


@pytest.fixture(scope="module", params=[False, True], ids=["raw", "rounded"])
def bt_lines(request) -> dict[str, np.ndarray]:
    return run_backtrader(request.param)


def test_backtrader_input_is_the_file(bt_lines, orcl):
    assert len(bt_lines["close"]) == len(orcl["close"]) == 5036


def test_matches_backtrader_exactly(bt_lines):
    """Same float operations in the same order (fsum windows, pow for StdDev), so every line
    is bit-identical to backtrader's, which is stricter than the 1e-9 relative asked for."""
    h, l, c = bt_lines["high"], bt_lines["low"], bt_lines["close"]
    m, sig, hist = ind.macd(c, 12, 26, 9)
    mid, top, bot = ind.bollinger(c, 20, 2.0)
    expected = {
        "sma10.sma": ind.sma(c, 10), "sma30.sma": ind.sma(c, 30), "ema.ema": ind.ema(c, 30),
        "rsi.rsi": ind.rsi(c, 14), "rsi_safe.rsi": ind.rsi(c, 14), "atr.atr": ind.atr(h, l, c, 14),
        "macd.macd": m, "macd.signal": sig, "macd.histo": hist,
        "bb.mid": mid, "bb.top": top, "bb.bot": bot, "std.stddev": ind.rolling_std(c, 20),
        "highest.highest": ind.highest(h, 20), "lowest.lowest": ind.lowest(l, 20),
        "roc.roc": ind.roc(c, 12),
    }
    for key, ours in expected.items():
        np.testing.assert_allclose(ours, bt_lines[key], rtol=1e-9, atol=0, err_msg=key)
        assert same(ours, bt_lines[key]), key
    cross = bt_lines["cross.crossover"]
    assert same(ind.crossover(ind.sma(c, 10), ind.sma(c, 30))[30:], cross[30:])
    assert np.isnan(cross[:30]).all()  # backtrader leaves the warm-up NaN; we report 0.0


def test_crossover_matches_the_bench_reference(orcl):
    """../shared/bench/common.py bt_cross is the fill-level reference of the SMA strategy."""
    if not BT_COMMON.exists():
        pytest.skip("bench reference not available")
    spec = importlib.util.spec_from_file_location("bench_common", BT_COMMON)
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    flat = np.repeat(np.round(orcl["close"][:800], 1), 3)  # long flat runs: SMA ties
    for c in (orcl["close"], np.round(orcl["close"], 2), flat):
        assert same(ind.crossover(ind.sma(c, 10), ind.sma(c, 30)), common.bt_cross(c, 10, 30))


# ---------------------------------------------------------------------------------------
# Definitions and edge cases
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_empty_and_too_short_inputs(name):
    spec = INDICATORS[name]
    for length in (0, 3):
        cols = {f: np.linspace(1.0, 2.0, length) for f in spec.inputs}
        for out in outputs(spec.compute(cols, **({"n": 5} if "n" in spec.defaults else {}))):
            assert len(out) == length
            assert (out == 0.0).all() if name == "crossover" else np.isnan(out).all()


def test_period_one():
    x = np.array([3.0, 1.5, 2.25, 2.25, 7.0])
    for f in (ind.sma, ind.ema, ind.highest, ind.lowest):
        assert same(f(x, 1), x)
    assert same(ind.rolling_std(x, 1), np.zeros(5))
    assert same(ind.roc(x, 1), [math.nan, -0.5, 0.5, 0.0, (7.0 - 2.25) / 2.25])


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_periods_are_rejected(bad):
    with pytest.raises(ValueError):
        ind.sma([1.0, 2.0], bad)
    with pytest.raises(ValueError):
        ind.SMA(bad)
    with pytest.raises(ValueError):
        ind.macd([1.0], 12, bad, 9)


def test_warm_up_lengths():
    x = np.linspace(10.0, 20.0, 60) + np.sin(np.arange(60))
    assert np.isnan(ind.ema(x, 10)[:9]).all() and not np.isnan(ind.ema(x, 10)[9:]).any()
    assert ind.ema(x, 10)[9] == math.fsum(x[:10]) / 10  # seeded with the SMA
    assert np.isnan(ind.rsi(x, 14)[:14]).all() and not np.isnan(ind.rsi(x, 14)[14:]).any()
    assert np.isnan(ind.atr(x + 1, x - 1, x, 14)[:14]).all()
    m, s, h = ind.macd(x, 12, 26, 9)
    assert np.isnan(m[:25]).all() and not np.isnan(m[25:]).any()
    assert np.isnan(s[:33]).all() and not np.isnan(s[33:]).any()
    assert same(h, m - s)


def test_leading_nans_delay_the_start():
    x = np.linspace(10.0, 20.0, 40) + np.cos(np.arange(40))
    lead = np.concatenate([[math.nan] * 5, x])
    assert same(ind.ema(lead, 10)[5:], ind.ema(x, 10))
    assert same(ind.rsi(lead, 14)[5:], ind.rsi(x, 14))
    assert same(ind.macd(lead, 3, 6, 4)[1][5:], ind.macd(x, 3, 6, 4)[1])


def test_rsi_safediv_values():
    """Where backtrader's default RSI divides by zero, we return RSI_Safe's 100 and 50."""
    assert same(ind.rsi(np.arange(1.0, 21.0), 14)[14:], np.full(6, 100.0))
    assert same(ind.rsi(np.full(20, 7.0), 14)[14:], np.full(6, 50.0))
    assert same(ind.rsi(np.arange(20.0, 0.0, -1.0), 14)[14:], np.full(6, 0.0))


def test_true_range_uses_previous_close():
    h, l, c = np.array([10.0, 12.0, 11.0]), np.array([9.0, 11.5, 8.0]), np.array([9.5, 11.8, 8.5])
    # tr[1] = max(12, 9.5) - min(11.5, 9.5) = 2.5; tr[2] = max(11, 11.8) - min(8, 11.8) = 3.8
    assert same(ind.atr(h, l, c, 1), [math.nan, 2.5, 11.8 - 8.0])
    assert ind.atr(h, l, c, 2)[2] == math.fsum([2.5, 11.8 - 8.0]) / 2


def test_crossover_definition():
    nan = math.nan
    # a - b: seed -1, then ties (0) keep the last non-zero difference: the cross fires at 3
    assert same(ind.crossover([1, 2, 2, 3], [2, 2, 2, 2]), [0, 0, 0, 1])
    assert same(ind.crossover([3, 2, 2, 1], [2, 2, 2, 2]), [0, 0, 0, -1])
    # touching and going back is no cross
    assert same(ind.crossover([1, 2, 1, 2], [2, 2, 2, 2]), [0, 0, 0, 0])
    # seeded at the first bar where both exist; a zero seed gives no signal until non-zero
    assert same(ind.crossover([nan, 1, 1, 2, 0], [nan, nan, 1, 1, 1]), [0, 0, 0, 0, -1])
    assert same(ind.crossover([nan, 1, 0, 2], [nan, 1, 1, 1]), [0, 0, 0, 1])
    s = ind.CrossOver()
    pairs = [(nan, 1), (1, 1), (1, 1), (2, 1), (0, 1)]
    assert [s.update(a, b) for a, b in pairs] == [0, 0, 0, 0, -1]


def test_highest_lowest_roc():
    x = np.array([5.0, 3.0, 8.0, 8.0, 1.0, 2.0])
    assert same(ind.highest(x, 3), [math.nan, math.nan, 8, 8, 8, 8])
    assert same(ind.lowest(x, 3), [math.nan, math.nan, 3, 3, 1, 1])
    nan = math.nan
    assert same(ind.highest([1.0, nan, 3.0, 2.0, 1.0], 2), [nan, nan, nan, 3, 2])
    assert same(ind.roc(x, 2), [nan, nan, (8 - 5) / 5, (8 - 3) / 3, (1 - 8) / 8, (2 - 8) / 8])
    assert same(ind.roc([0.0, 1.0, 0.0], 1), [math.nan, math.inf, -1.0])
    r = ind.ROC(1)
    assert same(np.array([r.update(v) for v in (0.0, 1.0, 0.0)]), ind.roc([0.0, 1.0, 0.0], 1))


def test_rolling_std_is_population_std():
    x = np.array([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert ind.rolling_std(x, 8)[-1] == 2.0
    mid, up, lo = ind.bollinger(x, 8, 1.5)
    assert (mid[-1], up[-1], lo[-1]) == (5.0, 8.0, 2.0)


# ---------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------


def test_registry_describes_each_indicator():
    assert set(INDICATORS) == {"sma", "ema", "rsi", "atr", "macd", "bollinger", "rolling_std",
                               "highest", "lowest", "roc", "crossover"}
    assert INDICATORS["atr"].inputs == ("high", "low", "close")
    assert INDICATORS["crossover"].inputs == ("a", "b")
    assert INDICATORS["macd"].outputs == ("macd", "signal", "hist")
    assert INDICATORS["bollinger"].n_outputs == 3
    assert INDICATORS["rsi"].defaults == {"n": 14}
    for name, spec in INDICATORS.items():
        assert spec.name == name and callable(spec.batch) and isinstance(spec.stream, type)
    with pytest.raises(dataclasses.FrozenInstanceError):
        INDICATORS["sma"].name = "x"  # type: ignore[misc]


def test_registry_builds_both_forms_by_name(orcl):
    spec = INDICATORS["atr"]
    cols = {k: v[:300] for k, v in orcl.items()}
    assert same(spec.compute(cols), ind.atr(cols["high"], cols["low"], cols["close"], 14))
    assert same(spec.compute(cols, n=5), run_stream(spec, cols, {"n": 5}))
    assert same(INDICATORS["macd"].compute(cols, slow=20), ind.macd(cols["close"], 12, 20, 9))
