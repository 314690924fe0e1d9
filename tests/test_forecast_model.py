"""The forecaster as a registry model: training, save/load, forecasts, batch independence, bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tradeloop.models.errors import CompatibilityError, FeatureError, ModelError, TrainingError
from tradeloop.models.kline.spec import OUTPUTS, bar_matrix

from tests.test_kline_support import market, needs_torch, tiny_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    needs_torch()
    from tradeloop.models.kline.train import train_forecaster
    from tradeloop.models.registry import Registry

    reg = tmp_path_factory.mktemp("reg")
    series = market()
    ref = train_forecaster(tiny_config(reg, threads=1), series)
    return Registry(reg), ref, series


def windows(series, n=40, start=100):
    b = bar_matrix(series[0]).astype(np.float32)
    return np.stack([b[i - 32:i] for i in range(start, start + n)])


def test_the_registry_stores_the_forecaster_as_a_version_with_its_manifest(trained):
    reg, ref, _ = trained
    assert ref == "kl@v0001" and reg.resolve("kl@latest").version == "v0001"
    info = reg.info(ref)
    meta = info.metadata
    assert info.kind == "forecaster" and info.net is None
    assert meta["outputs"] == list(OUTPUTS) and meta["seed"] == 0 and meta["input"] == {"lookback": 32, "n_features": 6}
    assert meta["sizes"]["tokenizer"]["coarse_bits"] == 5 and meta["sizes"]["parameters"] > 0
    assert meta["training_data"]["train_end"] == tiny_config(".")["train_end"]
    assert meta["training_data"]["symbols"] == ["AAA", "BBB", "CCC"]
    m = meta["metrics"]
    assert m["windows"]["train"] > 100 and m["windows"]["val"] > 10
    assert set(m["tokenizer"]["val"]["fields"]) == {"open", "high", "low", "close", "volume", "amount"}
    assert m["transformer"]["val"]["coarse_ce"] < np.log(32)      # better than a uniform guess
    assert json.loads((info.path / "features.json").read_text())["spec"]["kind"] == "kline"
    assert not [p for p in (reg.root / "kl").iterdir() if p.name.startswith(".tmp")]


def test_a_loaded_forecaster_predicts_what_the_trained_one_does_and_says_what_it_outputs(trained):
    reg, ref, series = trained
    m = reg.load(ref, "torch-cpu")
    assert m.kind == "forecaster" and m.outputs == OUTPUTS and m.horizon == 3 and str(m.ref) == ref
    out = m.predict(windows(series))
    assert out.shape == (40, 5) and out.dtype == np.float32 and np.isfinite(out).all()
    q10, q50, q90, p_up = out[:, 1], out[:, 2], out[:, 3], out[:, 4]
    assert (q10 <= q50).all() and (q50 <= q90).all() and ((p_up >= 0) & (p_up <= 1)).all()
    again = reg.load("kl", "torch-cpu").predict(windows(series))
    assert np.array_equal(out, again)                    # same weights, same seeds: same numbers
    from tradeloop.models.registry import LoadedModel   # the classifier side of the same interface
    assert LoadedModel.kind == "classifier" and LoadedModel.outputs == ("logit_down", "logit_up")


def test_a_window_gets_the_same_forecast_alone_or_anywhere_in_any_batch(trained):
    reg, ref, series = trained
    m = reg.load(ref, "torch-cpu")
    w = windows(series, n=40)
    alone = np.concatenate([m.predict(w[i:i + 1]) for i in (0, 7, 39)])
    for batch in (w, w[::-1].copy(), np.concatenate([w[7:20], w[:1], w[39:]])):
        got = m.predict(batch)
        rows = {tuple(batch[i].ravel()[:4]): got[i] for i in range(len(batch))}
        for k, i in enumerate((0, 7, 39)):
            assert np.array_equal(rows[tuple(w[i].ravel()[:4])], alone[k])


def test_an_invalid_window_gets_nan_and_leaves_the_others_alone(trained):
    reg, ref, series = trained
    m = reg.load(ref, "torch-cpu")
    w = windows(series, n=4)
    good = m.predict(w)
    bad = w.copy()
    bad[1, 5, 3] = np.nan
    bad[2, 0, 0] = -1.0
    out = m.predict(bad)
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    assert np.array_equal(out[[0, 3]], good[[0, 3]])
    with pytest.raises(ModelError, match=r"windows must have shape \[batch, 32, 6\]"):
        m.predict(w[:, :10])


def test_sample_paths_are_seeded_in_price_units_and_anchored_at_the_last_close(trained):
    reg, ref, series = trained
    fc = reg.load(ref, "torch-cpu").forecaster
    history = bar_matrix(series[1])[:150]
    p = fc.forecast(history, horizon=6, samples=20, seed=5)
    assert p.shape == (20, 6, 6) and np.isfinite(p).all() and (p[..., :5] > 0).all()
    assert np.array_equal(p, fc.forecast(history, horizon=6, samples=20, seed=5))
    assert not np.array_equal(p, fc.forecast(history, horizon=6, samples=20, seed=6))
    rel = np.abs(p[:, 0, 3] / history[-1, 3] - 1)
    assert np.median(rel) < 0.2                          # one bar ahead: near the last close
    greedy = fc.forecast(history, horizon=4, samples=3, temperature=0)
    assert np.array_equal(greedy[0], greedy[1]) and np.array_equal(greedy[0], greedy[2])


def test_bad_forecast_requests_are_clear_errors(trained):
    reg, ref, series = trained
    fc = reg.load(ref, "torch-cpu").forecaster
    history = bar_matrix(series[0])[:100]
    with pytest.raises(FeatureError, match="20 bars, the model needs at least 32"):
        fc.forecast(history[:20])
    nan = history.copy()
    nan[90, 4] = np.nan
    with pytest.raises(FeatureError, match="non-finite value at bar 90 field volume"):
        fc.forecast(nan)
    with pytest.raises(ModelError, match="horizon must be an integer >= 1, got 0"):
        fc.forecast(history, horizon=0)
    with pytest.raises(ModelError, match="samples must be an integer >= 1"):
        fc.forecast(history, samples=0)
    with pytest.raises(ModelError, match="exceed the model's max_len 256"):
        fc.forecast(history, horizon=300)


def test_loading_checks_the_runtime_and_training_checks_its_config(trained, tmp_path):
    from tradeloop.models.kline.train import KlineTrainConfig

    reg, ref, _ = trained
    with pytest.raises(CompatibilityError, match="cannot run a forecaster; choose one of torch-cpu, torch-cuda"):
        reg.load(ref, "onnx-cpu")
    with pytest.raises(CompatibilityError, match=r"lookback 32 \(model\) vs 64 \(expected\)"):
        reg.load(ref, "torch-cpu", lookback=64)
    with pytest.raises(TrainingError, match="unknown key"):
        KlineTrainConfig.from_dict({**tiny_config(tmp_path), "epochs": 3})
    with pytest.raises(TrainingError, match="val_end must be after train_end"):
        KlineTrainConfig.from_dict({**tiny_config(tmp_path), "val_end": "2011-01-01"})
    with pytest.raises(TrainingError, match="is not a date"):
        KlineTrainConfig.from_dict({**tiny_config(tmp_path), "train_end": "soon"})


def test_extreme_but_valid_windows_neither_crash_nor_disturb_their_batch_mates(trained):
    reg, ref, series = trained
    m = reg.load(ref, "torch-cpu")
    w = windows(series, n=5)
    good = m.predict(w)
    odd = w.copy()
    odd[1] = 1.0                                 # a flat window: every bar the same, volume 1
    odd[2, :, :4] *= 1e30                        # prices near float32's limit
    odd[3, :, 4:] = 0.0                          # no volume, no amount
    odd[4, ::2, :4] *= 3.0                       # prices jumping 3x every other bar
    out = m.predict(odd)
    assert np.array_equal(out[0], good[0])
    assert out.shape == (5, 5) and not np.isinf(out).any()
    assert np.isfinite(out[[1, 3, 4]]).all()
