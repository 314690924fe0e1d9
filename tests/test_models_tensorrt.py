"""Specification of the parts of the tensorrt runtime that run without TensorRT or a GPU (neither
exists on these machines; the runtime itself is tested in test_models_runtime only where tensorrt
imports): INT8 calibration reads the model's own training windows, refuses training files that
changed, feeds TensorRT full batches, and built engines are kept in the registry and reused."""
from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest

from tradeloop.models.errors import ModelError
from tradeloop.models.registry import Registry
from tradeloop.models.runtime.tensorrt import CalibrationBatches, TensorRTRuntime, cached_plan, engine_key
from tests.test_models_support import trained


def test_calibration_windows_are_the_training_split_evenly_sampled():
    from tradeloop.models.calibration import training_windows
    from tradeloop.models.dataset import SeriesFeatures, split_samples
    from tradeloop.data.loaders import load_bars

    root, ref = trained("tiny")
    info = Registry(root).info(ref)
    got = training_windows(info, limit=300)
    items = [SeriesFeatures.of(load_bars(e["path"], e.get("symbol")), info.spec) for e in info.metadata["data"]]
    span, label = info.metadata["training_window"], info.metadata["label"]
    t = lambda d: None if d is None else int(np.datetime64(d, "ns").astype(np.int64))  # noqa: E731
    split = split_samples(items, info.spec, label["horizon"], label["threshold"], t(span.get("train_start")),
                          t(span["train_end"]))
    assert got.shape == (300, info.lookback, info.n_features) and got.dtype == np.float32
    assert len(split) > 300
    rows = {w.tobytes() for w in split.x}
    assert all(w.tobytes() in rows for w in got)          # every one a training window
    np.testing.assert_array_equal(got[0], split.x[0])     # first and last included: spread over the span
    np.testing.assert_array_equal(got[-1], split.x[-1])
    np.testing.assert_array_equal(training_windows(info, limit=300), got)  # deterministic
    assert len(training_windows(info, limit=10 ** 6)) == len(split)


def test_calibration_refuses_a_training_file_that_changed_since_training(tmp_path):
    from tradeloop.models.calibration import training_windows

    root, ref = trained("tiny")
    info = Registry(root).info(ref)
    first = info.metadata["data"][0]
    copy = tmp_path / "changed.csv"
    shutil.copy(first["path"], copy)
    with open(copy, "a", encoding="utf-8") as f:
        f.write("\n")
    meta = {**info.metadata, "data": [{**first, "path": str(copy)}]}
    with pytest.raises(ModelError, match=r"training file .*changed.csv changed since training"):
        training_windows(dataclasses.replace(info, metadata=meta))
    gone = {**info.metadata, "data": [{**first, "path": str(tmp_path / "gone.csv")}]}
    with pytest.raises(ModelError, match="gone.csv is missing"):
        training_windows(dataclasses.replace(info, metadata=gone))


def test_calibration_batches_are_full_and_in_order():
    w = np.arange(10 * 2 * 3, dtype=np.float64).reshape(10, 2, 3)
    b = CalibrationBatches(w, batch=4)
    got = [b.next(), b.next(), b.next()]
    assert got[2] is None                       # 2 windows left over: TensorRT wants exactly 4
    np.testing.assert_array_equal(np.concatenate(got[:2]), w[:8])
    assert got[0].dtype == np.float32 and got[0].flags.c_contiguous
    assert CalibrationBatches(w[:3], batch=256).batch == 3
    with pytest.raises(ModelError, match="at least one window"):
        CalibrationBatches(w[:0])


def test_an_engine_is_built_once_and_then_read_from_the_registry(tmp_path):
    builds = []

    def build() -> bytes:
        builds.append(1)
        return b"engine-bytes"

    key = engine_key("int8", "NVIDIA H100 80GB HBM3", "10.9.0", 4096, 64, 16)
    assert key == "int8-nvidia-h100-80gb-hbm3-trt10.9.0-b4096-64x16"
    assert cached_plan(tmp_path / "engines", key, build) == (b"engine-bytes", False)
    assert cached_plan(tmp_path / "engines", key, build) == (b"engine-bytes", True)
    assert len(builds) == 1
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [f"{key}.plan"]  # no temporary left
    assert cached_plan(None, key, build) == (b"engine-bytes", False) and len(builds) == 2  # no folder: no cache


def test_engines_differ_by_precision_gpu_and_tensorrt_version():
    keys = {engine_key(p, g, v, 4096, 64, 16) for p in ("fp16", "int8") for g in ("A100", "H100") for v in ("10.0", "10.9")}
    assert len(keys) == 8


def test_bad_precision_and_int8_without_calibration_are_refused_before_tensorrt_is_needed():
    with pytest.raises(ModelError, match="precision 'int4': expected one of fp16, int8"):
        TensorRTRuntime(None, 64, 16, precision="int4")
    with pytest.raises(ModelError, match="int8 needs calibration windows"):
        TensorRTRuntime(None, 64, 16, precision="int8")


def _tensorrt_here() -> bool:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _tensorrt_here(), reason="needs TensorRT and a CUDA GPU (neither exists on these machines)")
@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_agrees_with_fp32_and_reuses_its_engine_from_the_registry(precision):
    from tests.test_models_runtime import reference

    root, ref = trained("default")
    x, want = reference("default")
    first = Registry(root).load(ref, "tensorrt", precision=precision)
    got = first.predict(x)
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    if precision == "fp16":
        assert np.abs(got - want).max() <= 1e-2
    assert agree >= 0.98
    again = Registry(root).load(ref, "tensorrt", precision=precision)
    assert again.runtime.from_cache and not first.runtime.from_cache
    np.testing.assert_allclose(again.predict(x[:64]), got[:64], atol=1e-3)
