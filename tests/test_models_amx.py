"""Specification of the whole-network AMX forward pass (models/runtime/native/amx_net.c), the path
``torch-cpu-bf16`` takes for the Conv1d+Transformer where the CPU has AMX: it computes the same
function as the fp32 network to bf16 accuracy on real windows, each window's logits do not depend
on the other windows of the call, it is safe to call from several threads, NaN stays in the window
it came from, scores that overflow or underflow the fast softmax get the exact one, and a network
it cannot take (or a machine without AMX) leaves the runtime on its other paths, which still agree.
A registry version opens on it without importing torch: its weights are read from ``weights.pt``
by ``models/state_file.py``, which gives torch's own arrays and refuses anything else.
Tests skip only where AMX cannot run here, and say why."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tradeloop.models.errors import RegistryError
from tradeloop.models.registry import Registry
from tradeloop.models.state_file import read_state_dict
from tests.test_models_runtime import reference
from tests.test_models_support import trained

torch = pytest.importorskip("torch", reason="torch not installed (pip install -e '.[models]')")

from tradeloop.models.runtime.native.net import whole_net


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
    amx_or_skip(default_net())
    root, ref = trained("default")
    x = reference("default")[0]
    m = Registry(root).load(ref, "torch-cpu-bf16")
    plain = Registry(root).load(ref, "torch-cpu-bf16", native=False)
    assert m.runtime.amx is True and plain.runtime.amx is False
    assert np.abs(m.predict(x) - plain.predict(x)).max() <= 1e-2


def test_a_registry_version_opens_on_amx_without_importing_torch():
    amx_or_skip(default_net())
    root, ref = trained("default")
    code = ("import sys, numpy as np; from tradeloop.models.registry import Registry; "
            f"m = Registry({root!r}).load({ref!r}, 'torch-cpu-bf16'); "
            "m.predict(np.zeros((3, m.info.lookback, m.info.n_features), np.float32)); "
            "print(m.runtime.amx, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split()[-2:] == ["True", "False"]


def test_a_version_saved_before_net_settings_were_recorded_runs_on_amx_through_torch(tmp_path):
    amx_or_skip(default_net())
    root, ref = trained("default")
    info = Registry(root).info(ref)
    old = tmp_path / "reg"
    shutil.copytree(Path(root) / info.ref.name, old / info.ref.name)
    meta_file = old / info.ref.name / info.ref.version / "metadata.json"
    meta = json.loads(meta_file.read_text())
    del meta["net_settings"]
    meta_file.write_text(json.dumps(meta))
    x = reference("default")[0]
    m = Registry(old).load(str(info.ref), "torch-cpu-bf16")
    assert m.runtime.amx is True
    np.testing.assert_array_equal(m.predict(x[:50]), Registry(root).load(ref, "torch-cpu-bf16").predict(x[:50]))


@pytest.mark.parametrize("key", ["tiny", "lstm", "default"])
def test_weights_read_without_torch_are_torchs_own(key):
    root, ref = trained(key)
    path = Registry(root).info(ref).path / "weights.pt"
    want = torch.load(path, map_location="cpu", weights_only=True)
    got = read_state_dict(path)
    assert list(got) == list(want)
    for k, t in want.items():
        assert got[k].dtype == t.numpy().dtype and got[k].shape == tuple(t.shape)
        np.testing.assert_array_equal(got[k], t.numpy())


def test_weights_of_a_strided_tensor_come_out_in_torchs_order(tmp_path):
    path = tmp_path / "w.pt"
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save({"t": base.t(), "slice": base[1:, 2:5], "long": torch.tensor([3, -1])}, path)
    got = read_state_dict(path)
    np.testing.assert_array_equal(got["t"], base.t().numpy())
    np.testing.assert_array_equal(got["slice"], base[1:, 2:5].numpy())
    assert got["long"].dtype == np.int64 and list(got["long"]) == [3, -1]


def test_a_weights_file_holding_anything_but_tensors_is_refused_by_name(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"w": torch.ones(2), "when": Path("/etc")}, other)
    with pytest.raises(RegistryError, match=r"other\.pt: pathlib.*PosixPath is not part of a tensor state dict"):
        read_state_dict(other)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(RegistryError, match=r"broken\.pt: cannot read the weights without torch"):
        read_state_dict(broken)


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


@pytest.mark.parametrize("query_bias, value_bias", [(60.0, None), (-60.0, None), (24.5, 1e9)])
def test_scores_the_fast_softmax_cannot_hold_get_the_exact_one(query_bias, value_bias):
    """Every key equal and every query along it: scores of +-480 (base e) overflow exp to inf, or
    underflow every row's sum to 0, without the row maximum subtracted; scores of ~69 keep the sums
    finite (2^100) but overflow fp32 once weighted by values of 1e9. The exact softmax gives each
    key the same weight, as the fp32 network does."""
    net = copy.deepcopy(default_net())
    D = net.blocks[0].qkv.in_features
    with torch.no_grad():
        for b in net.blocks:
            b.qkv.weight[:2 * D] = 0.0          # queries and keys: their biases alone
            b.qkv.bias[:D] = query_bias
            b.qkv.bias[D:2 * D] = 1.0
            if value_bias is not None:
                b.qkv.weight[2 * D:] = 0.0
                b.qkv.bias[2 * D:] = value_bias
    amx = amx_or_skip(net)
    x = reference("default")[0][:64]
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    got = amx(x)
    assert np.isfinite(got).all()
    assert np.abs(got - want).max() <= 1e-2


def reason_the_tiny_net_is_refused() -> str:
    """What this machine should say about the 16-wide net, from what it detected: no native
    kernels (no compiler, no AVX-512: their reason), a library built without AMX (a CPU without
    AMX-BF16, or capped below it), else the shape (checked before anything else on AMX)."""
    from tradeloop.models.runtime import native
    from tradeloop.models.runtime.cpu import cap_note, cpu_flags
    from tradeloop.models.runtime.native.net import _REASONS

    if native.load_kernels() is None:
        return native.unavailable_reason()
    if not {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"} <= cpu_flags():
        return _REASONS[-4] + cap_note()
    return _REASONS[-1]


def test_a_network_the_kernels_do_not_take_is_refused_with_the_reason():
    root, ref = trained("tiny")                 # 16 wide: the tiles need multiples of 32
    info = Registry(root).info(ref)
    amx, why = whole_net(info.load_net())
    assert amx is None and why == reason_the_tiny_net_is_refused()
    m = Registry(root).load(ref, "torch-cpu-bf16")
    assert m.runtime.amx is False


def test_windows_of_another_shape_are_refused_before_the_native_code_reads_them():
    from tradeloop.models.errors import ModelError

    amx = amx_or_skip(default_net())
    with pytest.raises(ModelError, match=r"windows must have shape \[batch, 64, 16\], got \[2, 32, 16\]"):
        amx(np.zeros((2, 32, 16), np.float32))


def test_other_networks_have_no_whole_forward():
    root, ref = trained("lstm")
    assert whole_net(Registry(root).info(ref).load_net()) == (None, None)


def test_without_amx_the_runtime_runs_the_avx512_kernels_and_still_agrees(monkeypatch):
    from tradeloop.models.runtime import amx_cpu
    from tradeloop.models.runtime.native import load_kernels, unavailable_reason

    if load_kernels() is None:
        pytest.skip(f"the native kernels cannot run here: {unavailable_reason()}")
    monkeypatch.setattr(amx_cpu, "open_amx", lambda *a, **k: (None, None))   # as on a CPU without AMX
    root, ref = trained("default")
    x, want = reference("default")
    m = Registry(root).load(ref, "torch-cpu-bf16")
    assert m.runtime.amx is False and m.runtime.native is True and m.runtime.chunk == 256
    got = m.predict(x)
    assert np.abs(got - want).max() <= 1e-2
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.99


@pytest.mark.parametrize("sizes", [
    {"lookback": 32, "d_model": 64, "heads": 4, "ff": 128, "layers": 2, "kernel": 3},    # head width 16: two value tiles
    {"lookback": 64, "d_model": 32, "heads": 8, "ff": 64, "layers": 1, "kernel": 1},     # head width 4, no stem taps
    {"lookback": 64, "d_model": 96, "heads": 6, "ff": 192, "layers": 2, "kernel": 5},    # 96 wide: K split over 3 tiles
    {"lookback": 32, "d_model": 32, "heads": 16, "ff": 32, "layers": 3, "kernel": 5},    # head width 2
    {"lookback": 64, "d_model": 128, "heads": 8, "ff": 512, "layers": 2, "kernel": 3, "n_features": 7},
    {"lookback": 32, "d_model": 32, "heads": 4, "ff": 32, "layers": 12, "kernel": 3},    # the deepest it takes
], ids=["hd16-T32", "hd4-k1", "d96-k5", "hd2-T32", "d128-f7", "12-layers"])
def test_every_shape_the_kernels_take_computes_the_network(sizes):
    """Random weights (LayerNorm and standardization too): the generic paths agree with fp32."""
    from tradeloop.models.nets.conv_transformer import ConvTransformer

    sizes = dict(sizes)
    nf = sizes.pop("n_features", 16)
    torch.manual_seed(0)
    net = ConvTransformer(n_features=nf, dropout=0.0, **sizes).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        net.norm_in.mean.uniform_(-0.5, 0.5)
        net.norm_in.inv_std.uniform_(0.5, 2.0)
    amx_or_skip(default_net())                  # AMX is here: this shape must be taken
    amx, why = whole_net(net)
    assert amx is not None, why
    x = np.random.default_rng(1).standard_normal((37, sizes["lookback"], nf)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.abs(amx(x) - want).max() <= 1e-2


@pytest.mark.parametrize("sizes", [{"lookback": 128}, {"lookback": 48}, {"d_model": 64, "heads": 2},
                                   {"d_model": 48, "heads": 6}, {"ff": 48}, {"layers": 13}], ids=str)
def test_a_shape_the_kernels_do_not_take_is_refused(sizes):
    from tradeloop.models.nets.conv_transformer import ConvTransformer

    amx_or_skip(default_net())                  # AMX is here: the refusal is the shape's
    amx, why = whole_net(ConvTransformer(**sizes).eval())
    assert amx is None and why.startswith("shape not supported")
