"""torch-cpu-bf16 on torch: the network in bfloat16 on the CPU (oneDNN; AVX-512 BF16 / AMX).

Where the CPU has AMX, ``open_runtime`` runs the Conv1d+Transformer as ``amx_cpu.AMXRuntime``
instead (the whole forward in native code, ~2.5x faster). Here the Conv1d+Transformer runs as
``bf16_net.BF16ConvTransformer``: fused oneDNN linears, attention and LayerNorm in the AVX-512
kernels of ``native/`` where they build (``native = True``), else on torch ops; ``native=False``
keeps torch ops only. Other networks run under CPU bf16 autocast (an LSTM as a bf16 copy where
oneDNN has no bf16 kernels: ``bf16_net.AutocastBF16``). On a CPU without native bf16 units
(AMX / AVX-512 BF16; also where ``cpu.max_isa()`` caps them off, or torch's oneDNN offers no
bf16 kernels) torch emulates bf16 (correct, slower than fp32): the runtime still works, says so
and why in a warning log, and reports ``native_bf16 = False``. Big batches run in chunks of
``chunk`` windows: by default 256 with the native kernels and 64 without (the best of 16-1024
measured on one core; the torch path's attention scores leave the L2 cache beyond 64 windows).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import structlog

from tradeloop.models.runtime.base import as_windows
from tradeloop.models.runtime.cpu import cap_note, native_bf16


class TorchBF16Runtime:
    """bf16 inference on the CPU; ``threads`` sets torch's intra-op threads (process-wide)."""

    name = "torch-cpu-bf16"
    device = "cpu"
    amx = False

    def __init__(self, net: Any, lookback: int, n_features: int, threads: int | None = 1, chunk: int | None = None,
                 fused: bool | None = None, native: bool | None = None) -> None:
        import torch

        from tradeloop.models.runtime.bf16_net import bf16_forward, fused_available

        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        self._torch = torch
        log = structlog.get_logger("tradeloop.models")
        self.forward = bf16_forward(net.to("cpu", torch.float32).eval(), fused, native)
        self.fused, self.native = self.forward.fused, self.forward.native
        units, onednn = native_bf16(), fused_available()
        self.native_bf16 = units and onednn
        self.lookback, self.n_features = lookback, n_features
        self.chunk = max(1, int(chunk)) if chunk else (256 if self.native else 64)
        if native is None and not self.native and hasattr(self.forward, "blocks"):  # the rewrite, kernels missing
            from tradeloop.models.runtime.native import unavailable_reason

            log.info("native_kernels_unavailable", runtime=self.name, reason=unavailable_reason(),
                     detail="attention and LayerNorm run on torch ops (about 1.5x slower)")
        if not self.native_bf16:
            why = (f"this CPU has no AMX or AVX-512 BF16{cap_note()}" if not units
                   else "torch's oneDNN offers no bf16 kernels on this CPU")
            log.warning("bf16_emulated", runtime=self.name,
                        detail=f"{why}: bf16 is emulated and slower than torch-cpu fp32")

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes]."""
        x = self._torch.from_numpy(as_windows(windows, self.lookback, self.n_features))
        f, c = self.forward, self.chunk
        with self._torch.inference_mode():
            if len(x) <= c:
                return f(x).numpy()
            return np.concatenate([f(x[a:a + c]).numpy() for a in range(0, len(x), c)])
