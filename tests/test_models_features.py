"""Specification of models.features: 16 features per bar from a hashed spec; the batch form, the
one-symbol stream and the many-symbol bank agree bit for bit; row t never reads bar t+1; the
indicator columns are data.indicators' values exactly; bad bars and bad specs are clear errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tradeloop.data import indicators as ind
from tradeloop.data.loaders import load_bars
from tradeloop.data.schema import BarSeries
from tradeloop.models.errors import FeatureError
from tradeloop.models.features import (
    N_FEATURES,
    FeatureBank,
    FeatureSpec,
    FeatureStream,
    compute_features,
    window_ends,
    windows_at,
)
from tests.test_models_support import qbot, random_bars

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SPECS = st.builds(
    FeatureSpec, lookback=st.integers(2, 20),
    horizons=st.sampled_from([(1, 5, 20), (1, 2, 3), (2, 4, 9)]),
    ema_fast=st.integers(1, 6), ema_slow=st.integers(7, 15), macd_signal=st.integers(1, 6),
    rsi=st.integers(1, 10), atr=st.integers(1, 10), window=st.integers(2, 12))


def same(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(a, b, equal_nan=True)


def stream(series: BarSeries, spec: FeatureSpec) -> np.ndarray:
    fs = FeatureStream(spec)
    amt = series.extra.get("amount", np.full(len(series), np.nan))
    return np.array([fs.update(series.open[i], series.high[i], series.low[i], series.close[i], series.volume[i],
                               amt[i], int(series.ts[i])) for i in range(len(series))]).reshape(-1, N_FEATURES)


@st.composite
def bar_series(draw, max_len: int = 120) -> BarSeries:
    return random_bars(draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, max_len)),
                       intraday=draw(st.booleans()), amount=draw(st.sampled_from(["yes", "no", "gaps"])),
                       zero_volume=draw(st.sampled_from([0.0, 0.1, 0.6])))


# -- the spec ------------------------------------------------------------------------------------

def test_default_spec_is_16_named_features_over_64_bars():
    spec = FeatureSpec()
    assert spec.n_features == N_FEATURES == len(spec.names) == 16
    assert spec.lookback == 64
    assert spec.names[:3] == ("ret_1", "ret_5", "ret_20") and spec.names[-1] == "day_position"
    assert spec.warmup == 34  # the MACD signal of EMA(26) is the last to start: 25 + 8 + 1
    assert spec.min_bars == 34 + 63


def test_spec_hash_is_stable_and_changes_with_any_parameter():
    assert FeatureSpec().hash == FeatureSpec().hash == FeatureSpec.from_dict(FeatureSpec().to_dict()).hash
    assert len(FeatureSpec().hash) == 16
    changed = [FeatureSpec(lookback=32), FeatureSpec(window=10), FeatureSpec(rsi=7), FeatureSpec(horizons=(1, 5, 10))]
    assert len({FeatureSpec().hash, *(s.hash for s in changed)}) == 5


@pytest.mark.parametrize("kwargs, words", [
    ({"lookback": 1}, "lookback"), ({"window": 0}, "window"), ({"horizons": (5, 1, 20)}, "horizons"),
    ({"ema_fast": 26, "ema_slow": 12}, "ema_fast"), ({"rsi": 2.5}, "rsi"), ({"version": 99}, "version"),
])
def test_bad_spec_is_a_clear_error(kwargs, words):
    with pytest.raises(FeatureError, match=words):
        FeatureSpec(**kwargs)


def test_spec_from_dict_names_unknown_keys():
    with pytest.raises(FeatureError, match="unknown key.*colour"):
        FeatureSpec.from_dict({"lookback": 64, "colour": "red"})


# -- batch == streaming, no look-ahead -----------------------------------------------------------

@FAST
@given(series=bar_series(), spec=SPECS)
def test_batch_equals_streaming_bit_for_bit(series, spec):
    assert same(compute_features(series, spec), stream(series, spec))


@FAST
@given(data=st.data(), spec=SPECS)
def test_bank_of_many_symbols_equals_batch_per_symbol(data, spec):
    """Symbols advance in any interleaving, some skipping timestamps: rows and windows still equal batch."""
    k = data.draw(st.integers(1, 4))
    series = [random_bars(data.draw(st.integers(0, 2**31)), data.draw(st.integers(0, 80)), symbol=f"S{i}",
                          amount=data.draw(st.sampled_from(["yes", "no"]))) for i in range(k)]
    bank = FeatureBank([s.symbol for s in series], spec)
    pos = [0] * k
    while any(p < len(s) for p, s in zip(pos, series)):
        live = [i for i in range(k) if pos[i] < len(series[i])]
        chosen = data.draw(st.lists(st.sampled_from(live), min_size=1, unique=True))
        rows = []
        for i in chosen:
            s, t = series[i], pos[i]
            rows.append([s.open[t], s.high[t], s.low[t], s.close[t], s.volume[t],
                         s.extra["amount"][t] if "amount" in s.extra else math.nan])
        bank.update([series[i].symbol for i in chosen], np.array(rows), [int(series[i].ts[pos[i]]) for i in chosen])
        for i in chosen:
            pos[i] += 1
    for s in series:
        feats = compute_features(s, spec)
        assert bank.ready(s.symbol) == (len(s) >= spec.min_bars)
        if bank.ready(s.symbol):
            assert same(bank.windows([s.symbol])[0], windows_at(feats, [len(s) - 1], spec.lookback)[0])


WILD = st.floats(0.01, 1e6)


@FAST
@given(series=bar_series(), spec=SPECS, data=st.data())
def test_no_row_reads_a_later_bar(series, spec, data):
    """Replacing every bar after t (by any other valid bars) leaves rows 0..t unchanged."""
    n = len(series)
    t = data.draw(st.integers(-1, max(n - 1, -1)))
    other = random_bars(data.draw(st.integers(0, 2**31)), n, amount="yes")
    k = t + 1

    def splice(a, b):
        return np.concatenate([a[:k], b[k:]])
    amount = series.extra.get("amount", np.full(n, np.nan))
    changed = BarSeries(series.symbol, series.ts, splice(series.open, other.open), splice(series.high, other.high),
                        splice(series.low, other.low), splice(series.close, other.close),
                        splice(series.volume, other.volume), {"amount": splice(amount, other.extra["amount"])})
    assert same(compute_features(series, spec)[:k], compute_features(changed, spec)[:k])


def test_streaming_continues_from_a_batch_state():
    """A bank seeded from a batch run over a prefix continues exactly as the full batch run."""
    spec = FeatureSpec(lookback=8)
    s = random_bars(3, 200)
    cut = 120
    head = s.between(None, int(s.ts[cut]))
    feats, state = compute_features(head, spec, return_state=True)
    bank = FeatureBank(["X"], spec)
    bank.seed("X", feats, state)
    for t in range(cut, len(s)):
        bank.update(["X"], np.array([[s.open[t], s.high[t], s.low[t], s.close[t], s.volume[t], s.extra["amount"][t]]]),
                    [int(s.ts[t])])
    full = compute_features(s, spec)
    assert same(bank.windows(["X"])[0], windows_at(full, [len(s) - 1], 8)[0])


# -- what the columns are ----------------------------------------------------------------------

def test_indicator_columns_are_data_indicators_values_exactly():
    s = load_bars(qbot("600519.SH"))
    spec = FeatureSpec()
    f = compute_features(s, spec)
    c = s.close
    w = spec.warmup - 1
    macd, _, hist = ind.macd(c, 12, 26, 9)
    expect = {7: c / ind.ema(c, 12) - 1.0, 8: c / ind.ema(c, 26) - 1.0, 9: macd / c, 10: hist / c,
              11: (ind.rsi(c, 14) - 50.0) / 50.0, 12: ind.atr(s.high, s.low, c, 14) / c}
    for col, values in expect.items():
        assert np.array_equal(f[w:, col], values[w:]), spec.names[col]


def test_simple_columns_by_their_definitions():
    s = load_bars(qbot("600519.SH"))
    spec = FeatureSpec()
    f = compute_features(s, spec)
    c, h, l, v = s.close, s.high, s.low, s.volume
    t = np.arange(spec.warmup - 1, len(s))
    np.testing.assert_allclose(f[t, 0], np.log(c[t] / c[t - 1]), rtol=1e-12)
    np.testing.assert_allclose(f[t, 2], np.log(c[t] / c[t - 20]), rtol=1e-12)
    np.testing.assert_allclose(f[t, 3], (h[t] - l[t]) / c[t], rtol=1e-12)
    np.testing.assert_allclose(f[t, 6], np.log1p(v[t]) - np.log1p(v[t - 1]), rtol=1e-9, atol=1e-12)
    r1 = np.log(c[1:] / c[:-1])
    vol = np.array([r1[i - 20:i].std() for i in t])  # ret_1 of bars i-19..i
    np.testing.assert_allclose(f[t, 13], vol, rtol=1e-9)
    lv = np.log1p(v)
    z = np.array([(lv[i] - lv[i - 19:i + 1].mean()) / lv[i - 19:i + 1].std() for i in t])
    np.testing.assert_allclose(f[t, 5], z, rtol=1e-9, atol=1e-12)
    assert np.all(np.abs(f[t, 15]) <= 1.0) and np.all(np.abs(f[t, 11]) <= 1.0)


def test_warmup_rows_are_nan_and_later_rows_finite():
    spec = FeatureSpec()
    f = compute_features(load_bars(qbot("000858.SZ")), spec)
    assert np.isnan(f[:spec.warmup - 1]).all()
    assert np.isfinite(f[spec.warmup - 1:]).all()


def test_vwap_distance_ignores_amount_and_volume_units():
    """Amount in thousands, volume in lots, adjusted prices: the window's c*v/a factor converts."""
    s = random_bars(5, 300)
    f = compute_features(s, FeatureSpec())
    scaled = BarSeries("X", s.ts, s.open, s.high, s.low, s.close, s.volume / 100.0, {"amount": s.extra["amount"] * 7.3})
    g = compute_features(scaled, FeatureSpec())
    np.testing.assert_allclose(f[40:, 14], g[40:, 14], atol=1e-12)
    assert np.abs(f[40:, 14]).max() < 0.2


def test_vwap_distance_is_zero_without_amount():
    f = compute_features(random_bars(6, 200, amount="no"), FeatureSpec())
    assert (f[40:, 14] == 0.0).all()


def test_day_position_follows_the_days_running_range_on_intraday_bars():
    s = load_bars(qbot("600519.SH").parents[1] / "kronos" / "XSHG_5min_600977.csv")
    f = compute_features(s, FeatureSpec())
    day = s.ts // (86_400 * 10**9)
    t = 300
    first = int(np.searchsorted(day, day[t]))
    hi, lo = s.high[first:t + 1].max(), s.low[first:t + 1].min()
    assert f[t, 15] == pytest.approx(2 * (s.close[t] - lo) / (hi - lo) - 1)


# -- windows and errors --------------------------------------------------------------------------

def test_windows_at_returns_float32_rows_ending_at_each_index():
    f = compute_features(random_bars(1, 150), FeatureSpec(lookback=10))
    ends = window_ends(150, FeatureSpec(lookback=10))
    w = windows_at(f, ends, 10)
    assert w.dtype == np.float32 and w.shape == (len(ends), 10, 16)
    assert np.array_equal(w[-1], f[140:150].astype(np.float32))
    assert np.isfinite(w).all()  # every window starts after the warm-up
    with pytest.raises(FeatureError, match="window ends"):
        windows_at(f, [3], 10)


@pytest.mark.parametrize("field, value", [("close", math.nan), ("low", 0.0), ("high", -1.0), ("volume", -5.0),
                                          ("open", math.inf)])
def test_a_bad_bar_is_an_error_naming_symbol_row_and_values(field, value):
    s = random_bars(2, 50, symbol="BAD")
    getattr(s, field)[17] = value
    with pytest.raises(FeatureError, match=r"BAD.*bar 17.*finite and positive"):
        compute_features(s, FeatureSpec())
    fs = FeatureStream(FeatureSpec(), "BAD")
    with pytest.raises(FeatureError, match="BAD"):
        for i in range(50):
            fs.update(s.open[i], s.high[i], s.low[i], s.close[i], s.volume[i])


def test_bank_rejects_unknown_symbols_and_bad_widths():
    bank = FeatureBank(["A", "B"])
    with pytest.raises(FeatureError, match="unknown symbol 'C'"):
        bank.update(["C"], np.ones((1, 6)))
    with pytest.raises(FeatureError, match="5 or 6 columns"):
        bank.update(["A"], np.ones((1, 4)))
    with pytest.raises(FeatureError, match="unique"):
        FeatureBank(["A", "A"])
