"""torch-cpu-bf16: the network in bfloat16 on the CPU (oneDNN; AMX / AVX-512 BF16 where present).

The Conv1d+Transformer runs as ``bf16_net.BF16ConvTransformer`` (fused oneDNN linears, softmax
by one exp and one matmul); other networks run under CPU bf16 autocast. On a CPU without native
bf16 units torch emulates bf16 (correct, slower than fp32): the runtime still works, says so in
a warning log, and reports ``native_bf16 = False``. Big batches run in chunks of ``chunk``
windows (64: the best of 16/32/64 measured on one core; bigger chunks' attention scores leave the
L2 cache).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import structlog

from .base import as_windows
from .cpu import native_bf16


class TorchBF16Runtime:
    """bf16 inference on the CPU; ``threads`` sets torch's intra-op threads (process-wide)."""

    name = "torch-cpu-bf16"
    device = "cpu"

    def __init__(self, net: Any, lookback: int, n_features: int, threads: int | None = 1, chunk: int = 64,
                 fused: bool | None = None) -> None:
        import torch

        from .bf16_net import bf16_forward

        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        self._torch = torch
        self.forward = bf16_forward(net.to("cpu", torch.float32).eval(), fused)
        self.fused = self.forward.fused
        self.native_bf16 = native_bf16()
        self.lookback, self.n_features = lookback, n_features
        self.chunk = max(1, int(chunk))
        if not self.native_bf16:
            structlog.get_logger("tradeloop.models").warning(
                "bf16_emulated", runtime=self.name,
                detail="this CPU has no AMX or AVX-512 BF16: bf16 is emulated and slower than torch-cpu fp32")

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes]."""
        x = self._torch.from_numpy(as_windows(windows, self.lookback, self.n_features))
        f, c = self.forward, self.chunk
        with self._torch.inference_mode():
            if len(x) <= c:
                return f(x).numpy()
            return np.concatenate([f(x[a:a + c]).numpy() for a in range(0, len(x), c)])
