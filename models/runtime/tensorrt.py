"""tensorrt: a TensorRT engine built from the model's ONNX export, fp16, dynamic batch.

TensorRT cannot be installed on this project's machines (its wheels download libraries from a
host they cannot reach), so this runtime is written against the TensorRT 10 Python API but has
never run here; without ``tensorrt`` it raises RuntimeUnavailable at construction, and
``tensorrt`` is imported nowhere else. The engine is built from an opset-18 export (TensorRT's
ONNX parser lags the newest opsets), made from the torch network at build time.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RuntimeUnavailable
from .base import as_windows

TRT_OPSET = 18


def import_tensorrt() -> Any:
    """The tensorrt module, or RuntimeUnavailable saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeUnavailable(
            "the tensorrt runtime needs NVIDIA TensorRT (pip install tensorrt) and a CUDA GPU; "
            f"tensorrt is not importable here ({e}). Use onnx-cpu, onnx-cpu-int8, torch-cpu or torch-cuda") from None
    return tensorrt


class TensorRTRuntime:
    """TensorRT engine over the exported network; predict() copies through CUDA torch tensors."""

    name = "tensorrt"
    device = "cuda"
    threads = 1

    def __init__(self, net: Any, lookback: int, n_features: int, max_batch: int = 4096, fp16: bool = True) -> None:
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeUnavailable("the tensorrt runtime needs a CUDA GPU and a CUDA build of torch")
        from ..export import export_onnx

        self._torch = torch
        self.lookback, self.n_features = lookback, n_features
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        with tempfile.TemporaryDirectory() as d:
            path = export_onnx(net, Path(d) / "model.onnx", lookback, n_features, opset=TRT_OPSET)
            if not parser.parse(path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeUnavailable(f"TensorRT could not parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        name_in = network.get_input(0).name
        profile.set_shape(name_in, (1, lookback, n_features), (64, lookback, n_features),
                          (max_batch, lookback, n_features))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeUnavailable("TensorRT failed to build an engine from the ONNX export")
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        self.context = self.engine.create_execution_context()
        self._in, self._out = name_in, network.get_output(0).name
        self.max_batch = max_batch

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes]."""
        torch = self._torch
        x = as_windows(windows, self.lookback, self.n_features)
        outs = []
        for a in range(0, len(x), self.max_batch):
            xin = torch.from_numpy(x[a:a + self.max_batch]).cuda()
            out = torch.empty(len(xin), 2, dtype=torch.float32, device="cuda")
            self.context.set_input_shape(self._in, tuple(xin.shape))
            self.context.set_tensor_address(self._in, xin.data_ptr())
            self.context.set_tensor_address(self._out, out.data_ptr())
            stream = torch.cuda.current_stream()
            self.context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            outs.append(out.cpu().numpy())
        return np.concatenate(outs) if outs else np.empty((0, 2), np.float32)
