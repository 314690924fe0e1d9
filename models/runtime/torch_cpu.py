"""torch-cpu: the fp32 reference runtime (eager PyTorch on the CPU)."""
from __future__ import annotations

from typing import Any

import numpy as np

from tradeloop.models.runtime.base import as_windows


class TorchCPURuntime:
    """Eager fp32 inference on the CPU; ``threads`` sets torch's intra-op threads (process-wide)."""

    name = "torch-cpu"
    device = "cpu"

    def __init__(self, net: Any, lookback: int, n_features: int, threads: int | None = 1, chunk: int = 64) -> None:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        self._torch = torch
        self.net = net.to("cpu", torch.float32).eval()
        self.lookback, self.n_features = lookback, n_features
        self.chunk = max(1, int(chunk))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes] (big batches in chunks: they run faster in cache)."""
        x = self._torch.from_numpy(as_windows(windows, self.lookback, self.n_features))
        with self._torch.inference_mode():
            if len(x) <= self.chunk:
                return self.net(x).numpy()
            return np.concatenate([self.net(x[a:a + self.chunk]).numpy() for a in range(0, len(x), self.chunk)])
