"""ONNX export of a trained network (dynamo exporter) and ONNX Runtime dynamic int8 quantization.

The dynamo exporter fixes the batch dimension to 1 when the example has batch 1, even with a
dynamic dimension declared, so the example has batch 2. Opset 23 turns
``scaled_dot_product_attention`` into ONNX's fused ``Attention`` op. Dynamic int8 quantizes
MatMul and Gemm only: ONNX Runtime's quantizer would otherwise take opset 23's ``Attention`` for
its contrib op of the same name and write an invalid graph.
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from tradeloop.models.errors import ModelError

OPSET = 23
INPUT_NAME = "windows"
OUTPUT_NAME = "logits"


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress lines, warnings and torch's log records."""
    names = ("torch.onnx", "torch._dynamo", "torch.export", "torch._export", "onnxscript", "root")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def export_onnx(net: Any, path: str | Path, lookback: int, n_features: int, opset: int = OPSET) -> Path:
    """Write ``net`` (float32, eval mode, CPU) as ONNX with a dynamic batch dimension; the path."""
    import torch

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise ModelError("ONNX export needs onnxscript: pip install 'tradeloop[models]'") from None
    path = Path(path)
    net = net.to("cpu", torch.float32).eval()
    example = torch.zeros(2, lookback, n_features)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with _quiet(), torch.no_grad():
        torch.onnx.export(net, (example,), str(path), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_shapes={"x": {0: batch}}, external_data=False,
                          verbose=False)
    return path


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 quantization of an ONNX model's MatMul/Gemm weights (ONNX Runtime); the path."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelError("int8 quantization needs onnxruntime: pip install 'tradeloop[models]'") from None
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])
    return Path(dst)
