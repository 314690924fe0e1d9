"""Specification of models.runtime: one predict(windows) -> logits interface; every runtime is
checked against torch fp32 on the same real windows (fp32 within 1e-5; int8 the same class on at
least 98% of them); runtimes that cannot run here fail with a clear error."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from data.loaders import load_bars
from models.errors import CompatibilityError, ModelError, RuntimeUnavailable
from models.features import compute_features, window_ends, windows_at
from models.registry import Registry
from models.runtime import RUNTIMES, open_runtime, unavailable_reason
from tests.test_models_support import qbot, trained

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")
CUDA = torch.cuda.is_available()
MODELS = ["tiny", "lstm", "default"]


def real_windows(spec, name: str = "600036.SH") -> np.ndarray:
    """Every full window of a real file the models were not trained on (2010-2020, ~2500 windows)."""
    s = load_bars(qbot(name))
    return windows_at(compute_features(s, spec), window_ends(len(s), spec), spec.lookback)


_REFERENCE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def reference(key: str) -> tuple[np.ndarray, np.ndarray]:
    """(real windows, torch-cpu fp32 logits) of a trained model, computed once."""
    if key not in _REFERENCE:
        root, ref = trained(key)
        m = Registry(root).load(ref, "torch-cpu")
        x = real_windows(m.spec)
        _REFERENCE[key] = (x, m.predict(x))
    return _REFERENCE[key]


@pytest.mark.parametrize("key", MODELS)
def test_onnx_fp32_matches_torch_fp32_within_1e_5_on_real_windows(key):
    root, ref = trained(key)
    x, want = reference(key)
    got = Registry(root).load(ref, "onnx-cpu").predict(x)
    assert got.dtype == np.float32 and got.shape == (len(x), 2)
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("key", MODELS)
def test_onnx_int8_gives_the_same_class_on_at_least_98_percent_of_real_windows(key, record_property):
    root, ref = trained(key)
    x, want = reference(key)
    got = Registry(root).load(ref, "onnx-cpu-int8").predict(x)
    agree = float((got.argmax(1) == want.argmax(1)).mean())
    record_property("int8_same_class", agree)
    print(f"\n{key}: int8 same class on {agree:.2%} of {len(x)} real windows; max |logit diff| "
          f"{np.abs(got - want).max():.4f}")
    assert agree >= 0.98, f"int8 agrees with fp32 on only {agree:.2%} of {len(x)} windows"


def test_registry_records_the_runtime_check_at_save_time():
    root, ref = trained("default")
    check = Registry(root).info(ref).metadata["runtime_check"]
    assert check["windows"] > 100
    assert check["onnx-cpu"]["max_abs_diff"] <= 1e-5 and check["onnx-cpu"]["same_class"] == 1.0
    assert check["onnx-cpu-int8"]["same_class"] >= 0.98


@pytest.mark.parametrize("runtime, atol", [("torch-cpu", 1e-5), ("onnx-cpu", 1e-5), ("onnx-cpu-int8", 0.05)])
def test_a_batch_gives_what_its_windows_give_one_by_one(runtime, atol):
    """fp32: to 1e-5. int8 quantizes activations with one range per batch, so a window's logits
    depend a little on its batch-mates (within 0.05 here)."""
    root, ref = trained("default")
    m = Registry(root).load(ref, runtime)
    x = real_windows(m.spec)[::60]
    whole = m.predict(x)
    single = np.concatenate([m.predict(x[i:i + 1]) for i in range(len(x))])
    np.testing.assert_allclose(whole, single, atol=atol)


@pytest.mark.parametrize("runtime", ["torch-cpu", "onnx-cpu"])
def test_windows_of_the_wrong_shape_or_type_are_clear_errors(runtime):
    root, ref = trained("tiny")
    m = Registry(root).load(ref, runtime)
    with pytest.raises(ModelError, match=r"shape \[batch, 16, 16\], got \[2, 64, 16\]"):
        m.predict(np.zeros((2, 64, 16), np.float32))
    with pytest.raises(ModelError, match="floating point"):
        m.predict(np.zeros((2, 16, 16), np.int64))
    assert m.predict(np.zeros((2, 16, 16), np.float64)).shape == (2, 2)  # other floats are converted


def test_onnx_runtimes_use_one_intra_op_thread_by_default():
    root, ref = trained("tiny")
    m = Registry(root).load(ref, "onnx-cpu")
    assert m.runtime.threads == 1
    assert m.runtime.session.get_session_options().intra_op_num_threads == 1


def test_unknown_runtime_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown runtime 'onnx-gpu'"):
        open_runtime("onnx-gpu", lookback=64, n_features=16)
    assert "unknown runtime" in unavailable_reason("onnx-gpu")
    assert set(RUNTIMES) == {"torch-cpu", "onnx-cpu", "onnx-cpu-int8", "torch-cuda", "tensorrt"}


# -- runtimes that need hardware or libraries this machine may lack -------------------------------

@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed")
def test_tensorrt_without_tensorrt_is_a_clear_error():
    root, ref = trained("tiny")
    with pytest.raises(CompatibilityError, match="tensorrt is not installed"):
        Registry(root).load(ref, "tensorrt")
    from models.runtime.tensorrt import import_tensorrt

    with pytest.raises(RuntimeUnavailable, match="pip install tensorrt"):
        import_tensorrt()
    with pytest.raises(RuntimeUnavailable, match="TensorRT"):
        open_runtime("tensorrt", lookback=16, n_features=16, net=lambda: None)


@pytest.mark.skipif(CUDA, reason="a CUDA GPU is present")
def test_torch_cuda_without_a_gpu_is_a_clear_error():
    root, ref = trained("tiny")
    with pytest.raises(CompatibilityError, match="no CUDA GPU"):
        Registry(root).load(ref, "torch-cuda")
    from models.runtime.torch_cuda import TorchCUDARuntime

    with pytest.raises(RuntimeUnavailable, match="needs a CUDA GPU"):
        TorchCUDARuntime(None, 16, 16)


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU: torch-cuda not run here")
@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_torch_cuda_matches_fp32_on_real_windows(dtype):
    root, ref = trained("default")
    x, want = reference("default")
    m = Registry(root).load(ref, "torch-cuda", dtype=dtype)
    got = m.predict(x)
    assert float((got.argmax(1) == want.argmax(1)).mean()) >= 0.98
    np.testing.assert_allclose(m.predict(x[:3]), got[:3], atol=1e-2)  # bucket 8 vs 4096: same graph math


@pytest.mark.skipif(not CUDA, reason="no CUDA GPU: the GPU feature ring not run here")
def test_gpu_feature_ring_gathers_the_same_windows_as_the_bank():
    from models.features import FeatureBank, FeatureSpec
    from models.runtime.torch_cuda import GpuFeatureRing

    spec = FeatureSpec(lookback=16)
    s = load_bars(qbot())
    feats = compute_features(s, spec)
    ring = GpuFeatureRing(1, 16, 16, torch.float32)
    for t in range(len(s)):
        ring.push([0], feats[t:t + 1].astype(np.float32))
    got = ring.gather([0]).cpu().numpy()[0]
    assert np.array_equal(got, windows_at(feats, [len(s) - 1], 16)[0])
    assert FeatureBank(["X"], spec).spec == spec


def test_export_without_onnxscript_says_how_to_install_it(monkeypatch):
    from models.export import export_onnx
    from models.features import FeatureSpec
    from models.nets import NetConfig, build_net

    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)
    with pytest.raises(ModelError, match=r"needs onnxscript: pip install 'tradeloop\[models\]'"):
        export_onnx(build_net(NetConfig(), 16, 16), "/nonexistent/m.onnx", FeatureSpec(lookback=16).lookback, 16)
