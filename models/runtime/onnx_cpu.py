"""onnx-cpu and onnx-cpu-int8: ONNX Runtime on the CPU, one intra-op thread by default.

One thread is the measured choice for live inference: with two threads and another busy
process, p99 latency jumped to hundreds of milliseconds (see ../shared/DEPENDENCIES.md).
Big batches run in chunks of ``chunk`` windows: per-window throughput on one core is flat up to
about 64 windows and halves beyond 128, where the activations no longer fit the caches.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tradeloop.models.errors import RuntimeUnavailable
from tradeloop.models.runtime.base import as_windows


class OnnxCPURuntime:
    """ONNX Runtime CPU session over an exported model (fp32, or its dynamic-int8 twin)."""

    device = "cpu"

    def __init__(self, path: str | Path, lookback: int, n_features: int, threads: int = 1,
                 name: str = "onnx-cpu", chunk: int = 32) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise RuntimeUnavailable(f"{name} needs onnxruntime: pip install 'tradeloop[models]'") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self._in = self.session.get_inputs()[0].name
        self._out = [self.session.get_outputs()[0].name]
        self.name, self.threads = name, int(threads)
        self.lookback, self.n_features = lookback, n_features
        self.path = Path(path)
        self.chunk = max(1, int(chunk))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes]."""
        x = as_windows(windows, self.lookback, self.n_features)
        run, c = self.session.run, self.chunk
        if len(x) <= c:
            return run(self._out, {self._in: x})[0]
        return np.concatenate([run(self._out, {self._in: x[a:a + c]})[0] for a in range(0, len(x), c)])
