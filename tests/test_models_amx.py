"""Specification of the whole-network AMX forward pass (models/runtime/native/amx_net.c), the path
``torch-cpu-bf16`` takes for the Conv1d+Transformer where the CPU has AMX: it computes the same
function as the fp32 network to bf16 accuracy on real windows, each window's logits do not depend
on the other windows of the call, it is safe to call from several threads, NaN stays in the window
it came from, scores that overflow or underflow the fast softmax get the exact one, and a network
it cannot take (or a machine without AMX) leaves the runtime on its other paths, which still agree.
Tests skip only where AMX cannot run here, and say why."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from models.registry import Registry
from tests.test_models_runtime import reference
from tests.test_models_support import trained

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")

from models.runtime.native.net import whole_net


def default_net():
    root, ref = trained("default")
    return Registry(root).info(ref).load_net()


def amx_or_skip(net):
    amx, why = whole_net(net)
    if amx is None:
        pytest.skip(f"the AMX forward pass cannot run here: {why}")
    return amx


def test_the_whole_forward_matches_fp32_to_bf16_accuracy_on_real_windows():
    amx = amx_or_skip(default_net())
    x, want = reference("default")
    got = amx(x)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


def test_the_runtime_takes_the_amx_path_and_agrees_with_its_torch_path():
    from models.runtime.torch_bf16 import TorchBF16Runtime

    amx_or_skip(default_net())
    root, ref = trained("default")
    x = reference("default")[0]
    m = Registry(root).load(ref, "torch-cpu-bf16")
    plain = TorchBF16Runtime(default_net(), m.info.lookback, m.info.n_features, native=False)
    assert m.runtime.amx is True and plain.amx is False
    assert np.abs(m.predict(x) - plain.predict(x)).max() <= 1e-2


@pytest.mark.parametrize("n", [1, 7, 8, 9, 23])
def test_a_window_gets_the_same_logits_whatever_else_is_in_its_call(n):
    amx = amx_or_skip(default_net())
    x = reference("default")[0][:40]
    whole = amx(x)
    parts = np.concatenate([amx(x[a:a + n]) for a in range(0, len(x), n)])
    np.testing.assert_array_equal(parts, whole)


def test_two_threads_calling_at_once_get_what_one_thread_gets():
    amx = amx_or_skip(default_net())
    x = reference("default")[0][:512]
    alone = amx(x)
    chunks = [x[a:a + 64] for a in range(0, len(x), 64)] * 3
    with ThreadPoolExecutor(2) as pool:
        got = list(pool.map(amx, chunks))
    for i, g in enumerate(got):
        a = (i % 8) * 64
        np.testing.assert_array_equal(g, alone[a:a + 64])


def test_nan_in_a_window_makes_its_logits_nan_and_leaves_the_others():
    amx = amx_or_skip(default_net())
    x = reference("default")[0][:16].copy()
    clean = amx(x)
    x[5, 30, 3] = np.nan
    got = amx(x)
    assert np.isnan(got[5]).all()
    np.testing.assert_array_equal(np.delete(got, 5, axis=0), np.delete(clean, 5, axis=0))


@pytest.mark.parametrize("query_bias", [60.0, -60.0])
def test_scores_the_fast_softmax_cannot_hold_get_the_exact_one(query_bias):
    """Every key equal and every query +-60 along it: scores of +-480 (base e) overflow exp to inf,
    or underflow every row's sum to 0, without the row maximum subtracted. The exact softmax gives
    each key the same weight, as the fp32 network does."""
    net = copy.deepcopy(default_net())
    D = net.blocks[0].qkv.in_features
    with torch.no_grad():
        for b in net.blocks:
            b.qkv.weight[:2 * D] = 0.0          # queries and keys: their biases alone
            b.qkv.bias[:D] = query_bias
            b.qkv.bias[D:2 * D] = 1.0
    amx = amx_or_skip(net)
    x = reference("default")[0][:64]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = amx(x)
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 1e-2


def test_a_network_the_kernels_do_not_take_is_refused_with_the_reason():
    root, ref = trained("tiny")                 # 16 wide: the tiles need multiples of 32
    info = Registry(root).info(ref)
    amx, why = whole_net(info.load_net())
    assert amx is None and (why.startswith("shape not supported") or "AMX" in why or "compiler" in why)
    m = Registry(root).load(ref, "torch-cpu-bf16")
    assert m.runtime.amx is False


def test_other_networks_have_no_whole_forward():
    root, ref = trained("lstm")
    assert whole_net(Registry(root).info(ref).load_net()) == (None, None)


def test_without_amx_the_runtime_runs_the_avx512_kernels_and_still_agrees(monkeypatch):
    import models.runtime.torch_bf16 as tb
    from models.runtime.native import load_kernels

    if load_kernels() is None:
        pytest.skip("the native kernels cannot build here")
    monkeypatch.setattr(tb, "whole_net", lambda net: (None, "this CPU or kernel offers no AMX-BF16 tiles"))
    root, ref = trained("default")
    x, want = reference("default")
    m = Registry(root).load(ref, "torch-cpu-bf16")
    assert m.runtime.amx is False and m.runtime.native is True and m.runtime.chunk == 256
    got = m.predict(x)
    assert np.abs(got - want).max() <= 1e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99
