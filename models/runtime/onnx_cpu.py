"""onnx-cpu and onnx-cpu-int8: ONNX Runtime on the CPU, one intra-op thread by default.

One thread is the measured choice for live inference: with two threads and another busy
process, p99 latency jumped to hundreds of milliseconds (see ../shared/DEPENDENCIES.md).
Big batches run in chunks of ``chunk`` windows: per-window throughput on one core is flat up to
about 64 windows and halves beyond 128, where the activations no longer fit the caches.

Int8 files are written with 7-bit weights (within +-64), which ONNX Runtime computes exactly on
every CPU (``export.quantize_int8``). A file with int8 weights beyond +-64 (written before that)
is refused on a CPU without VNNI or AMX-INT8 (``cpu.native_int8``), AVX2 say, where ONNX
Runtime's u8 x s8 kernel saturates and the logits are wrong without any error: the refusal names
the feature missing and says to save the model again.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tradeloop.models.errors import RuntimeUnavailable
from tradeloop.models.export import INT8_WEIGHT_MAX
from tradeloop.models.runtime.base import as_windows
from tradeloop.models.runtime.cpu import cap_note, native_int8

# Integer ops and the index of their weight input; int8 weights within +-INT8_WEIGHT_MAX cannot
# saturate the 16-bit pair sums (2 * 255 * 64 = 32640 < 32768).
_INT_OPS = {"MatMulInteger": 1, "DynamicQuantizeMatMul": 1, "MatMulIntegerToFloat": 1, "QLinearMatMul": 3,
            "ConvInteger": 1, "QLinearConv": 3, "QGemm": 3}


def saturating_weights(path: str | Path) -> list[str]:
    """Names of the int8 weights of an ONNX file that ONNX Runtime's u8 x s8 kernel can saturate
    on a CPU without VNNI (empty where there are none, or where the onnx package is missing)."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        return []
    graph = onnx.load(str(path), load_external_data=False).graph
    init = {t.name: t for t in graph.initializer}
    found = []
    for node in graph.node:
        i = _INT_OPS.get(node.op_type)
        t = init.get(node.input[i]) if i is not None and len(node.input) > i else None
        if t is not None and t.data_type == onnx.TensorProto.INT8:
            if int(np.abs(numpy_helper.to_array(t).astype(np.int16)).max(initial=0)) > INT8_WEIGHT_MAX:
                found.append(t.name)
    return found


def int8_refusal(path: str | Path) -> str | None:
    """Why this CPU cannot run the 8-bit file at ``path`` correctly, or None when it can."""
    if native_int8():
        return None
    bad = saturating_weights(path)
    if not bad:
        return None
    return (f"{Path(path).name} has full-range int8 weights ({len(bad)} tensors, e.g. {bad[0]}) and this CPU has no "
            f"AVX-VNNI, AVX512-VNNI or AMX-INT8{cap_note()}: ONNX Runtime's u8 x s8 kernel saturates there and gives "
            f"wrong logits; save the model again (its int8 twin now has weights within +-{INT8_WEIGHT_MAX}) or use "
            "onnx-cpu")


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
        why = int8_refusal(path)
        if why:
            raise RuntimeUnavailable(f"{name} is unavailable here: {why}")
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
