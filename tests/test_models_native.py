"""Specification of models.runtime.native: the AVX-512 attention and LayerNorm kernels the bf16
runtime uses are exact fp32 arithmetic on bf16 inputs (checked against torch in fp32 on the same
bf16 values, to the bf16 rounding of the output), refuse shapes they do not handle so the caller
keeps its torch path, and a machine without a compiler or without AVX-512 gets the torch path and
the reason. Kernel tests skip only where the kernels cannot build here, and say why."""
from __future__ import annotations

import numpy as np
import pytest

from tradeloop.models.registry import Registry
from tests.test_models_runtime import reference
from tests.test_models_support import trained

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")

import tradeloop.models.runtime.native as native  # noqa: E402  (after the torch skip: the module itself needs no torch)

KERNELS = native.load_kernels()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason=f"native kernels unavailable here: {native.unavailable_reason()}")
BF16 = torch.bfloat16


def exact_attention(qkv: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T) v per head in fp32 from bf16 qkv [B, T, 3, H, hd] -> [B, T, H*hd]."""
    B, T, _, H, hd = qkv.shape
    q, k, v = (qkv[:, :, i].float().transpose(1, 2) for i in range(3))
    return (torch.softmax(q @ k.transpose(-1, -2), -1) @ v).transpose(1, 2).reshape(B, T, H * hd)


def native_attention(qkv: torch.Tensor) -> tuple[bool, torch.Tensor]:
    B, T, _, H, hd = qkv.shape
    out = torch.full((B, T, H * hd), float("nan"), dtype=BF16)
    ok = KERNELS.attention_bf16(qkv.contiguous().data_ptr(), out.data_ptr(), B, T, H, hd)
    return ok, out


def assert_bf16_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Within one bf16 rounding of the exact value (relative 2^-8) plus a little accumulation slack."""
    torch.testing.assert_close(got.float(), want, rtol=2 ** -8, atol=1e-4)


@needs_kernels
@pytest.mark.parametrize("B, T, H, scale", [(3, 64, 8, 1.0), (2, 20, 2, 1.0), (2, 64, 8, 30.0), (1, 1, 4, 1.0)])
def test_attention_is_exact_softmax_attention_to_bf16_rounding(B, T, H, scale):
    """Lengths that are not a multiple of 16, scores of +-2000 (exp overflows without the max
    subtraction) and a single token all give the fp32 answer rounded to bf16."""
    g = torch.Generator().manual_seed(T * H)
    qkv = (torch.randn(B, T, 3, H, 8, generator=g) * scale).to(BF16)
    ok, got = native_attention(qkv)
    assert ok
    assert_bf16_close(got, exact_attention(qkv))


@needs_kernels
def test_attention_with_every_score_far_below_zero_averages_the_values():
    """Scores of -400 underflow exp() in every row unless the row maximum is subtracted."""
    qkv = torch.randn(2, 16, 3, 2, 8)
    qkv[:, :, 0], qkv[:, :, 1] = 10.0, -10.0
    qkv = qkv.to(BF16)
    ok, got = native_attention(qkv)
    v = qkv[:, :, 2].float().reshape(2, 16, 16)
    assert ok
    assert_bf16_close(got, v.mean(dim=1, keepdim=True).expand_as(v))


@needs_kernels
def test_attention_keeps_nan_in_the_rows_it_reaches():
    """A NaN query poisons its own rows and nothing else; a NaN key or value every row of its head."""
    qkv = torch.randn(1, 32, 3, 2, 8)
    qkv[0, 5, 0, 1, 3] = float("nan")       # query of token 5, head 1
    ok, got = native_attention(qkv.to(BF16))
    nan = torch.isnan(got.float())[0]
    assert ok and nan[5, 8:].all() and nan.sum() == 8
    qkv[0, 5, 0, 1, 3] = 0.0
    qkv[0, 9, 2, 0, 0] = float("nan")       # value of token 9, head 0
    ok, got = native_attention(qkv.to(BF16))
    nan = torch.isnan(got.float())[0]
    assert nan[:, 0].all() and not nan[:, 1:].any()


@needs_kernels
def test_attention_refuses_a_head_width_it_was_not_written_for():
    ok, got = native_attention(torch.randn(1, 8, 3, 4, 4).to(BF16))
    assert not ok and torch.isnan(got.float()).all()  # nothing written


@needs_kernels
def test_layer_norm_matches_torch_in_fp32_and_keeps_nan_rows_nan():
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(50, 64, generator=g) * 3 + 1).to(BF16)
    x[7, 5] = float("nan")
    w, b = torch.randn(64, generator=g), torch.randn(64, generator=g)
    out = torch.empty_like(x)
    assert KERNELS.layer_norm_bf16(x.data_ptr(), w.data_ptr(), b.data_ptr(), out.data_ptr(), 50, 64, 1e-5)
    want = torch.nn.functional.layer_norm(x.float(), (64,), w, b, 1e-5)
    assert torch.isnan(out[7].float()).all()
    keep = torch.arange(50) != 7
    assert_bf16_close(out[keep], want[keep])


@needs_kernels
def test_layer_norm_refuses_a_width_that_is_not_a_multiple_of_16():
    x = torch.randn(4, 24).to(BF16)
    w = torch.ones(24)
    assert not KERNELS.layer_norm_bf16(x.data_ptr(), w.data_ptr(), w.data_ptr(), torch.empty_like(x).data_ptr(),
                                       4, 24, 1e-5)


@needs_kernels
def test_bf16_runtime_with_native_kernels_matches_fp32_and_the_torch_path_on_real_windows():
    from tradeloop.models.runtime.torch_bf16 import TorchBF16Runtime

    root, ref = trained("default")
    x, want = reference("default")
    info = Registry(root).info(ref)
    fast = TorchBF16Runtime(info.load_net(), info.lookback, info.n_features, native=True)
    slow = TorchBF16Runtime(info.load_net(), info.lookback, info.n_features, native=False)
    assert fast.native is True and slow.native is False
    got, plain = fast.predict(x), slow.predict(x)
    assert np.abs(got - want).max() <= 1e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
    assert np.abs(got - plain).max() <= 1e-2


def test_without_a_compiler_the_kernels_are_unavailable_and_say_why(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-tl")
    kernels, why = native._load()
    assert kernels is None and "no C compiler (no-such-compiler-tl)" in why
    assert not (tmp_path / "tradeloop").exists()


def test_a_cache_folder_that_cannot_be_written_is_reported(monkeypatch, tmp_path):
    if native._compiler() is None:
        pytest.skip("no C compiler here")
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))   # the cache folder would have to live under a file
    kernels, why = native._load()
    assert kernels is None and why.startswith("could not build or load the native kernels")


def test_a_source_that_does_not_compile_is_reported_and_leaves_no_library(monkeypatch, tmp_path):
    if native._compiler() is None:
        pytest.skip("no C compiler here")
    bad = tmp_path / "kernels.c"
    bad.write_text("int tl_available(void) { return 1 }\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "SOURCES", (bad,))
    kernels, why = native._load()
    assert kernels is None and "failed on kernels.c" in why
    assert list((tmp_path / "cache" / "tradeloop" / "native").iterdir()) == []


@needs_kernels
def test_the_library_is_built_once_into_the_cache_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first, _ = native._load()
    built = sorted((tmp_path / "tradeloop" / "native").iterdir())
    assert [p.suffix for p in built] == [".so"] and first.path == built[0]
    mtime = built[0].stat().st_mtime_ns
    second, _ = native._load()
    assert second.path == first.path and second.path.stat().st_mtime_ns == mtime


@needs_kernels
def test_a_damaged_cached_library_is_built_again(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    damaged = native.cache_dir() / f"kernels-{native._build_key(native._compiler())}.so"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a shared library")  # what a full disk or a killed copy leaves
    again, why = native._load()
    assert why is None and again.path == damaged and damaged.stat().st_size > 1000
    out = torch.empty(1, 16, dtype=BF16)
    x = torch.ones(1, 16, dtype=BF16)
    w = torch.ones(16)
    assert again.layer_norm_bf16(x.data_ptr(), w.data_ptr(), w.data_ptr(), out.data_ptr(), 1, 16, 1e-5)


def test_the_runtime_refuses_native_true_where_the_kernels_cannot_run(monkeypatch):
    import tradeloop.models.runtime.bf16_net as bn
    root, ref = trained("default")
    info = Registry(root).info(ref)
    monkeypatch.setattr(bn, "load_kernels", lambda: None)
    monkeypatch.setattr(native, "_loaded", lambda: (None, "this CPU has no AVX-512"))
    with pytest.raises(RuntimeError, match="native kernels unavailable: this CPU has no AVX-512"):
        bn.BF16ConvTransformer(info.load_net(), native=True)
    assert bn.BF16ConvTransformer(info.load_net()).native is False  # auto: the torch path


def test_the_runtime_says_why_it_runs_without_the_native_kernels(monkeypatch):
    from structlog.testing import capture_logs

    import tradeloop.models.runtime.bf16_net as bn
    root, ref = trained("default")
    monkeypatch.setattr(bn, "load_kernels", lambda: None)
    monkeypatch.setattr(native, "_loaded", lambda: (None, "no C compiler (cc) on PATH"))
    with capture_logs() as logs:
        m = Registry(root).load(ref, "torch-cpu-bf16")
    assert m.runtime.native is False and m.runtime.chunk == 64
    said = [e for e in logs if e["event"] == "native_kernels_unavailable"]
    assert len(said) == 1 and said[0]["reason"] == "no C compiler (cc) on PATH" and said[0]["log_level"] == "info"
