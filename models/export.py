"""ONNX export of a trained network (dynamo exporter) and ONNX Runtime dynamic int8 quantization.

The dynamo exporter fixes the batch dimension to 1 when the example has batch 1, even with a
dynamic dimension declared, so the example has batch 2. Opset 23 turns
``scaled_dot_product_attention`` into ONNX's fused ``Attention`` op. Dynamic int8 quantizes
MatMul and Gemm only: ONNX Runtime's quantizer would otherwise take opset 23's ``Attention`` for
its contrib op of the same name and write an invalid graph.

Weights are int8 in 7 bits (``reduce_range``: symmetric per tensor, within +-64), not the full
+-127: ONNX Runtime's u8 x s8 kernel on a CPU without VNNI (AVX2, AVX-512 without VNNI) adds pairs
of products in saturating 16-bit lanes (``vpmaddubsw``), which 255 x 127 x 2 overflows and
255 x 64 x 2 = 32640 does not. Measured on the test suite's real windows under QEMU's AVX2 CPU
model (EPYC-Rome): full-range int8 weights gave the fp32 class on only 85% (tiny net) / 92%
(default net) of them, against 99.6% / 99.0% on a VNNI CPU, with no error; 7-bit weights give the
same logits on both (bit for bit for the tiny and LSTM nets; within 0.005 for the default net,
whose fp32 attention differs by SIMD width). With QAT on the 7-bit grid (``quant.py``) the default
net keeps 99.3% same class (tiny 99.3%, LSTM 99.5%, both without QAT). uint8 weights (u8 x u8
kernels, also exact everywhere) measured as accurate but ~20% slower on a VNNI CPU. ``onnx_cpu``
refuses a full-range int8 file from before this on a CPU without VNNI.
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
INT8_WEIGHT_MAX = 64  # ONNX Runtime's reduce_range grid for int8 weights: q in [-64, 64], scale max|w| / 64
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
    """Dynamic int8 quantization of an ONNX model's MatMul/Gemm weights (ONNX Runtime): weights
    within +-INT8_WEIGHT_MAX (module docs: exact on every CPU), uint8 activations; the path."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ModelError("int8 quantization needs onnxruntime: pip install 'tradeloop[models]'") from None
    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, reduce_range=True,
                         op_types_to_quantize=["MatMul", "Gemm"])
    return Path(dst)
