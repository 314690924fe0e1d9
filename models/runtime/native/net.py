"""The whole Conv1d+Transformer forward pass in the native library (``amx_net.c``): AMX tiles.

:func:`build` copies a ``ConvTransformer``'s weights (numpy, fp32, from a registry file or from
the module: :func:`whole_net`) into the library, which packs them as bf16 tiles; ``net(windows)``
returns fp32 logits and releases the GIL, so several threads can each run a batch. Needs a CPU
with AMX-BF16 and a Linux kernel that grants the tile state; both return None with the reason
otherwise (or for a shape the kernels do not take), and the caller keeps its other path.
"""
from __future__ import annotations

import ctypes
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tradeloop.models.runtime.base import as_windows
from tradeloop.models.runtime.cpu import cap_note
from tradeloop.models.runtime.native import load_kernels, unavailable_reason

LOG2E = 1.4426950408889634
_REASONS = {-1: "shape not supported (lookback 32 or 64, width and feed-forward width multiples of 32; head width 2, 4, 8 "
                "or 16; at most 12 layers)",
            -2: "this CPU or kernel offers no AMX-BF16 tiles", -3: "out of memory",
            -4: "the native library was built without AMX (this CPU or the C compiler lacks it)"}


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


class AMXNet:
    """A packed network in the native library; call it with windows [B, T, F] float32."""

    def __init__(self, lib: ctypes.CDLL, handle: int, lookback: int, n_features: int, classes: int) -> None:
        self._lib, self._handle = lib, ctypes.c_void_p(handle)
        self.lookback, self.n_features, self.classes = lookback, n_features, classes

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        x = as_windows(windows, self.lookback, self.n_features)   # the C side trusts this shape
        out = np.empty((len(x), self.classes), np.float32)
        if len(x):
            rc = self._lib.tl_net_forward(self._handle, x.ctypes.data, len(x), out.ctypes.data)
            if rc:
                raise MemoryError("native forward pass: out of memory for its scratch buffers")
        return out

    def __del__(self) -> None:
        if getattr(self, "_handle", None):
            self._lib.tl_net_free(self._handle)
            self._handle = None


def settings_of(net: Any) -> dict[str, Any]:
    """What :func:`build` needs of a ``ConvTransformer`` beside its state dict (JSON-ready: the
    registry records it, so the runtime can start without torch)."""
    blocks = list(net.blocks)
    return {"heads": blocks[0].heads if blocks else 1, "clip": float(net.norm_in.clip),
            "out_eps": float(net.norm_out.eps), "eps": [[float(b.ln1.eps), float(b.ln2.eps)] for b in blocks],
            "padding": int(net.conv.padding[0])}


def build(state: Mapping[str, np.ndarray], settings: Mapping[str, Any]) -> tuple[AMXNet | None, str | None]:
    """The native net from weights and settings, or None and why it cannot run here."""
    kernels = load_kernels()
    if kernels is None:
        return None, unavailable_reason()
    lib = kernels.lib
    conv = state["conv.weight"]                         # [D, F, ks]
    D, F, ks = conv.shape
    if settings["padding"] != ks // 2:
        return None, f"conv padding {settings['padding']} is not kernel // 2"
    T = state["pos"].shape[1]
    L = len(settings["eps"])
    H = int(settings["heads"])
    FF = state["blocks.0.ff1.weight"].shape[0] if L else 0      # no blocks: tl_net_new refuses
    C = state["head.weight"].shape[0]
    arrays = [state["norm_in.mean"], state["norm_in.inv_std"], conv.transpose(0, 2, 1).reshape(D, ks * F),
              state["conv.bias"], state["pos"].reshape(T, D)]
    q_scale = LOG2E / math.sqrt(D / H)  # scores in base 2 (amx_net.c)
    for i in range(L):
        p = f"blocks.{i}."
        qkv_w, qkv_b = state[p + "qkv.weight"].copy(), state[p + "qkv.bias"].copy()
        qkv_w[:D] *= q_scale
        qkv_b[:D] *= q_scale
        arrays += [state[p + "ln1.weight"], state[p + "ln1.bias"], qkv_w, qkv_b, state[p + "proj.weight"],
                   state[p + "proj.bias"], state[p + "ln2.weight"], state[p + "ln2.bias"], state[p + "ff1.weight"],
                   state[p + "ff1.bias"], state[p + "ff2.weight"], state[p + "ff2.bias"]]
    arrays += [state["norm_out.weight"], state["norm_out.bias"], state["head.weight"], state["head.bias"]]
    arrays = [_f32(a) for a in arrays]
    dims = np.array([T, F, D, H, FF, L, ks, C], np.int64)
    scalars = _f32([settings["clip"], settings["out_eps"], *[e for pair in settings["eps"] for e in pair]])
    ptrs = (ctypes.c_void_p * len(arrays))(*[a.ctypes.data for a in arrays])
    handle = ctypes.c_void_p()
    rc = lib.tl_net_new(dims.ctypes.data, scalars.ctypes.data, ptrs, ctypes.byref(handle))
    if rc:
        return None, _REASONS.get(rc, f"tl_net_new returned {rc}") + (cap_note() if rc in (-2, -4) else "")
    return AMXNet(lib, handle.value, T, F, C), None


def whole_net(net: Any) -> tuple[AMXNet | None, str | None]:
    """:func:`build` over a ``ConvTransformer`` module; (None, None) for any other network."""
    from tradeloop.models.nets.conv_transformer import ConvTransformer

    if not isinstance(net, ConvTransformer):
        return None, None
    return build({k: v.detach().to("cpu").float().numpy() for k, v in net.state_dict().items()}, settings_of(net))
