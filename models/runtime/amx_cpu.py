"""torch-cpu-bf16 on AMX: the whole Conv1d+Transformer in one native call (``native/amx_net.c``).

``open_runtime("torch-cpu-bf16", ...)`` takes this path wherever it can run (AMX-BF16, a C
compiler, shapes the kernels take; ``native=False`` or ``fused=False`` ask for the torch path).
From a registry version saved with its ``net_settings`` it reads the weights without importing
torch (``models/state_file.py``); otherwise it builds from the torch network. Same name and
numerics class as the torch path (bf16 products, fp32 accumulation); ``amx = True`` in the
runtime detail says which ran.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tradeloop.models.runtime.native.net import AMXNet, build, whole_net


class AMXRuntime:
    """``predict`` runs the native forward pass; it releases the GIL and is safe from many threads."""

    name = "torch-cpu-bf16"
    device = "cpu"
    threads = 1          # one core per call; batch_workers threads each run their own calls
    chunk = 8            # windows per stage group inside the native call
    native_bf16 = True
    fused, native, amx = False, True, True

    def __init__(self, net: AMXNet) -> None:
        self._net, self.lookback, self.n_features = net, net.lookback, net.n_features

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes] (a ModelError for windows of another shape)."""
        return self._net(windows)


def open_amx(*, state: Callable[[], Any] | None, net: Callable[[], Any],
             options: dict[str, Any]) -> tuple[AMXRuntime | None, Any]:
    """The AMX runtime, or (None, the torch network if this had to load it, else None)."""
    if options.get("native") is False or options.get("fused") is False:
        return None, None
    found = state() if state is not None else None
    if found is not None:                       # torch-free: weights and settings from the registry
        amx, _ = build(*found)
        return (AMXRuntime(amx), None) if amx is not None else (None, None)
    module = net()
    amx, _ = whole_net(module)
    return (AMXRuntime(amx), None) if amx is not None else (None, module)
