"""A predictor fed per-tick features: tick feature kernel (batch == streaming, no look-ahead), a tiny
model trained on tick windows in the registry, and a tick backtest's predictions equal a LiveDriver's."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tradeloop.data.schema import TickSeries
from tradeloop.data.ticks import load_ticks
from tradeloop.models.errors import FeatureError
from tradeloop.models.features import FeatureSpec
from tradeloop.models.tick_features import (
    TICK_FEATURES,
    TickFeatureSpec,
    TickFeatureStream,
    compute_tick_features,
    spec_from_dict,
)

VNPY = Path("/work/shared/data/vnpy/RM705-2017-03-20.csv")
TINY_NET = {"kind": "conv_transformer", "sizes": {"d_model": 16, "layers": 1, "heads": 2, "ff": 32, "dropout": 0.0}}
SPEC = TickFeatureSpec(lookback=16, horizon=10, window=20)

pytestmark = pytest.mark.skipif(not VNPY.is_file(), reason="vn.py tick file not present")


@pytest.fixture(scope="module")
def ticks() -> TickSeries:
    return load_ticks(str(VNPY))


def _stream(t: TickSeries, spec: TickFeatureSpec) -> np.ndarray:
    st = TickFeatureStream(spec, t.symbol)
    return np.array([st.update(*(float(getattr(t, c)[i]) for c in ("price", "size", "bid", "ask", "bid_size",
                                                                     "ask_size"))) for i in range(len(t))])


def _perturbed(t: TickSeries, T: int, seed: int = 1) -> TickSeries:
    rng = np.random.default_rng(seed)
    n = len(t) - T - 1
    bump = np.round(rng.normal(0, 3, n))
    price, bid, ask = t.price.copy(), t.bid.copy(), t.ask.copy()
    price[T + 1:] += bump
    bid[T + 1:] += bump - 1
    ask[T + 1:] += bump + 1
    bs, as_ = t.bid_size.copy(), t.ask_size.copy()
    bs[T + 1:] = rng.integers(1, 500, n)
    as_[T + 1:] = rng.integers(1, 500, n)
    return dataclasses.replace(t, price=price, bid=bid, ask=ask, bid_size=bs, ask_size=as_)


# -- features ------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [SPEC, TickFeatureSpec(lookback=8, fields=("imbalance", "mid_ret", "spread"),
                                                        horizon=3, window=5)])
def test_tick_features_batch_equals_streaming_bit_for_bit_on_the_vnpy_file(ticks, spec):
    batch = compute_tick_features(ticks, spec)
    assert batch.shape == (len(ticks), spec.n_features)
    assert np.isnan(batch[:spec.warmup - 1]).all() and np.isfinite(batch[spec.warmup - 1:]).all()
    live = _stream(ticks, spec)
    assert np.array_equal(batch, live, equal_nan=True)   # bit for bit, NaN rows included
    # float32 (compact) columns give the same values as their float64 copies
    f32 = dataclasses.replace(ticks, **{c: getattr(ticks, c).astype(np.float32)
                                        for c in ("price", "bid", "ask", "bid_size", "ask_size")})
    assert np.array_equal(compute_tick_features(f32, spec), batch, equal_nan=True)


def test_tick_features_read_no_later_tick(ticks):
    T = 5000
    a = compute_tick_features(ticks, SPEC)
    b = compute_tick_features(_perturbed(ticks, T), SPEC)
    assert np.array_equal(a[:T + 1], b[:T + 1], equal_nan=True)
    assert not np.array_equal(a[T + 1:], b[T + 1:])


def test_tick_feature_values_follow_their_definitions(ticks):
    f = compute_tick_features(ticks, SPEC)
    col = {n: f[:, i] for i, n in enumerate(SPEC.fields)}
    b, a = ticks.bid, ticks.ask
    mid = (b + a) * 0.5
    t = np.arange(SPEC.warmup, len(ticks))
    np.testing.assert_allclose(col["mid_ret"][t], np.log(mid[t] / mid[t - 1]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(col["mid_ret_k"][t], np.log(mid[t] / mid[t - 10]), rtol=0, atol=1e-15)
    np.testing.assert_allclose(col["spread"][t], (a[t] - b[t]) / mid[t], rtol=1e-15)
    bs, as_ = ticks.bid_size[t], ticks.ask_size[t]
    np.testing.assert_allclose(col["imbalance"][t], (bs - as_) / (bs + as_), rtol=1e-15)
    r = np.log(mid[1:] / mid[:-1])
    k = 3000
    np.testing.assert_allclose(col["mid_vol"][k], np.std(r[k - 20:k]), rtol=1e-12)


def test_tick_spec_round_trips_and_is_hashed_apart_from_bar_specs():
    d = SPEC.to_dict()
    assert d["kind"] == "ticks" and spec_from_dict(d) == SPEC
    assert SPEC.hash != TickFeatureSpec(lookback=16, horizon=11).hash
    assert FeatureSpec().kind == "bars" and "kind" not in FeatureSpec().to_dict()   # bar hashes unchanged
    assert spec_from_dict(FeatureSpec().to_dict()) == FeatureSpec()
    assert SPEC.n_features == len(TICK_FEATURES)
    with pytest.raises(FeatureError, match="unknown field"):
        TickFeatureSpec(fields=("mid_ret", "nope"))


# -- a model on tick windows ----------------------------------------------------------------

@pytest.fixture(scope="module")
def model(tmp_path_factory, ticks):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from tradeloop.models.tick_predictor import train_ticks

    root = tmp_path_factory.mktemp("tickreg")
    ref = train_ticks("tickm", [ticks], SPEC, registry=str(root), horizon=10, threshold=1e-4, net=TINY_NET,
                      epochs=1, batch_size=256, threads=1)
    return str(root), ref


def test_tick_model_is_stored_with_its_tick_feature_spec(model):
    from tradeloop.models.registry import Registry

    root, ref = model
    info = Registry(root).info(ref)
    assert info.spec == SPEC and info.spec_dict["kind"] == "ticks"
    assert info.n_features == SPEC.n_features and info.lookback == 16
    assert info.metadata["label"]["unit"] == "ticks"
    assert info.metadata["runtime_check"]["onnx-cpu"]["max_abs_diff"] < 1e-4


class _Record:
    """on_tick strategy recording the P(up) it saw for its symbol at every tick."""

    def __init__(self, model_ref: str, root: str) -> None:
        from tradeloop.engine.loop.strategy import Strategy

        rec = self

        class S(Strategy):
            def on_start(self, ctx):
                ctx.use_predictor(model_ref, registry=root, runtime="onnx-cpu")

            def on_tick(self, ctx, tick):
                p = ctx.predictions.get(tick.symbol)
                rec.seen.append((tick.ts, np.nan if p is None else float(p[1])))

        self.seen: list[tuple[int, float]] = []
        self.strategy = S()


def test_tick_backtest_predictions_equal_a_live_drivers_tick_by_tick(model, ticks):
    from tradeloop.engine.drivers.live import LiveDriver
    from tradeloop.engine.drivers.ticks import run_tick_backtest

    root, ref = model
    sub = dataclasses.replace(ticks, **{c: getattr(ticks, c)[:3000] for c in
                                        ("ts", "seq", "price", "size", "bid", "ask", "bid_size", "ask_size", "side")})
    bt = _Record(ref, root)
    run_tick_backtest(bt.strategy, [sub])
    lv = _Record(ref, root)
    drv = LiveDriver(lv.strategy, [sub.symbol])
    drv.start()
    for i in range(len(sub)):
        drv.feed(sub.tick(i))
    drv.finish()
    a, b = np.array([p for _, p in bt.seen]), np.array([p for _, p in lv.seen])
    assert len(a) == len(b) == len(sub)
    assert [t for t, _ in bt.seen] == [t for t, _ in lv.seen]
    first = SPEC.min_bars - 1
    assert np.isnan(a[:first]).all() and np.isnan(b[:first]).all() and np.isfinite(a[first:]).all()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6, equal_nan=True)   # onnx-cpu fp32: batch vs one window
    print("tick backtest vs live: exact", int((a[first:] == b[first:]).sum()), "of", len(a) - first,
          "max |diff|", float(np.nanmax(np.abs(a - b))))


def test_tick_predictions_read_no_later_tick(model, ticks):
    from tradeloop.models.predictor import open_predictor

    root, ref = model
    T = 8000
    p = open_predictor(root, ref, [ticks.symbol])
    a = p.precompute([ticks])[ticks.symbol]
    b = p.precompute([_perturbed(ticks, T)])[ticks.symbol]
    assert np.array_equal(a[:T + 1], b[:T + 1], equal_nan=True)
    assert not np.array_equal(a[T + 1:], b[T + 1:])
