"""Runtimes: one interface, ``predict(windows [batch, lookback, 16] float32) -> logits [batch, 2]``.

==============  ====================================================================  ==========
name            what                                                                  needs
==============  ====================================================================  ==========
torch-cpu       eager PyTorch fp32: the reference every other runtime is checked on   torch
torch-cpu-bf16  bfloat16: the whole network in native AMX code, else oneDNN + AVX-512   torch
onnx-cpu        ONNX Runtime fp32, 1 intra-op thread                                  onnxruntime
onnx-cpu-int8   ONNX Runtime, MatMul/Gemm weights dynamically quantized to int8       onnxruntime
torch-cuda      fp16/bf16 on the GPU, CUDA-graph replay per batch bucket              CUDA torch
tensorrt        TensorRT engine from the ONNX export, fp16 or int8 (calibrated on the   tensorrt, CUDA
                training windows), serialized into the version's ``engines/``
==============  ====================================================================  ==========

Dynamic int8 quantizes each MatMul input with one range per call, so an int8 window's logits
depend slightly on the other windows in its batch (fp32 runtimes: to 1e-5). Nothing here
imports torch, onnxruntime or tensorrt until a runtime is opened.
"""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tradeloop.models.errors import ModelError, RuntimeUnavailable
from tradeloop.models.runtime.base import Runtime, as_windows

RUNTIMES = ("torch-cpu", "torch-cpu-bf16", "onnx-cpu", "onnx-cpu-int8", "torch-cuda", "tensorrt")
ONNX_FILES = {"onnx-cpu": "model.onnx", "onnx-cpu-int8": "model.int8.onnx"}

__all__ = ["ONNX_FILES", "RUNTIMES", "Runtime", "as_windows", "open_runtime", "unavailable_reason"]


def _missing(module: str) -> bool:
    return importlib.util.find_spec(module) is None


def unavailable_reason(name: str) -> str | None:
    """Why runtime ``name`` cannot run on this machine, or None if it can."""
    if name not in RUNTIMES:
        return f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}"
    if name in ONNX_FILES:
        return "onnxruntime is not installed (pip install 'tradeloop[models]')" if _missing("onnxruntime") else None
    if _missing("torch"):
        return "torch is not installed (pip install 'tradeloop[models]')"
    if name == "tensorrt" and _missing("tensorrt"):
        return "tensorrt is not installed (NVIDIA TensorRT with a CUDA GPU; not installable on these machines)"
    if name in ("torch-cuda", "tensorrt"):
        import torch

        if not torch.cuda.is_available():
            return f"no CUDA GPU is available to torch {torch.__version__}"
    return None


def open_runtime(name: str, *, lookback: int, n_features: int, folder: str | Path | None = None,
                 net: Callable[[], Any] | None = None, state: Callable[[], Any] | None = None, threads: int = 1,
                 **options: Any) -> Runtime:
    """Open runtime ``name`` over a model: ONNX files from ``folder``, or the torch net from ``net()``;
    ``state()``: (numpy weights, settings) or None, which lets torch-cpu-bf16 on AMX skip torch."""
    if name not in RUNTIMES:
        raise ModelError(f"unknown runtime {name!r}; choose one of {', '.join(RUNTIMES)}")
    if name in ONNX_FILES:
        if folder is None:
            raise ModelError(f"{name} needs the model folder holding {ONNX_FILES[name]}")
        path = Path(folder) / ONNX_FILES[name]
        if not path.is_file():
            raise ModelError(f"{name}: {path} does not exist (was the model saved without ONNX export?)")
        from tradeloop.models.runtime.onnx_cpu import OnnxCPURuntime

        return OnnxCPURuntime(path, lookback, n_features, threads=threads, name=name, **options)
    if net is None:
        raise ModelError(f"{name} needs the torch network (weights)")
    if name == "tensorrt":
        from tradeloop.models.runtime.tensorrt import TensorRTRuntime, import_tensorrt

        import_tensorrt()  # a clear error before anything else is built
        options.setdefault("engines", Path(folder) / "engines" if folder is not None else None)
        return TensorRTRuntime(net(), lookback, n_features, **options)
    if name == "torch-cuda":
        from tradeloop.models.runtime.torch_cuda import TorchCUDARuntime

        return TorchCUDARuntime(net(), lookback, n_features, **options)
    if name == "torch-cpu-bf16":
        from tradeloop.models.runtime.amx_cpu import open_amx

        fast, loaded = open_amx(state=state, net=net, options=options)
        if fast is not None:
            return fast
        from tradeloop.models.runtime.torch_bf16 import TorchBF16Runtime

        return TorchBF16Runtime(loaded if loaded is not None else net(), lookback, n_features, threads=threads,
                                **options)
    from tradeloop.models.runtime.torch_cpu import TorchCPURuntime

    return TorchCPURuntime(net(), lookback, n_features, threads=threads, **options)


def reason_or_raise(name: str) -> None:
    """Raise RuntimeUnavailable if runtime ``name`` cannot run here."""
    why = unavailable_reason(name)
    if why:
        raise RuntimeUnavailable(f"runtime {name} is unavailable: {why}")
