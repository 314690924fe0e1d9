"""tensorrt: a TensorRT engine built from the model's ONNX export, FP16 or INT8, dynamic batch.

TensorRT cannot be installed on this project's machines (its wheels download libraries from a
host they cannot reach), so this runtime is written against the TensorRT 10 Python API but has
never run here; without ``tensorrt`` it raises RuntimeUnavailable at construction, and
``tensorrt`` is imported nowhere else. What does run here (tests): the engine cache, the
calibration batches and the training windows they come from (``models/calibration.py``).

- The engine is built from an opset-18 export (TensorRT's ONNX parser lags the newest opsets),
  made from the torch network at build time.
- ``precision="int8"``: INT8 with FP16 fallback, calibrated (entropy calibrator) on the model's
  own training windows; the calibration table is kept beside the engine.
- Engines are serialized into the registry version's ``engines/`` folder, keyed by precision, GPU,
  TensorRT version, batch range and input shape (an engine only runs where it was built), and
  loaded from there the next time instead of being rebuilt (minutes for INT8).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tradeloop.models.errors import ModelError, RuntimeUnavailable
from tradeloop.models.runtime.base import as_windows

TRT_OPSET = 18
PRECISIONS = ("fp16", "int8")
CALIBRATION_BATCH = 256


def import_tensorrt() -> Any:
    """The tensorrt module, or RuntimeUnavailable saying how to get it."""
    try:
        import tensorrt
    except ImportError as e:
        raise RuntimeUnavailable(
            "the tensorrt runtime needs NVIDIA TensorRT (pip install tensorrt) and a CUDA GPU; "
            f"tensorrt is not importable here ({e}). Use onnx-cpu, onnx-cpu-int8, torch-cpu or torch-cuda") from None
    return tensorrt


def engine_key(precision: str, gpu: str, trt_version: str, max_batch: int, lookback: int, n_features: int) -> str:
    """The file stem of an engine: everything that must match for a serialized engine to be reused."""
    slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
    return f"{precision}-{slug}-trt{trt_version}-b{max_batch}-{lookback}x{n_features}"


def cached_plan(folder: Path | None, key: str, build: Callable[[], bytes]) -> tuple[bytes, bool]:
    """``(engine bytes, True)`` from ``folder/key.plan``, else ``(build(), False)`` stored there.

    The file is written under a temporary name and renamed, so a reader never sees half an engine.
    """
    path = folder / f"{key}.plan" if folder is not None else None
    if path is not None and path.is_file():
        return path.read_bytes(), True
    plan = bytes(build())
    if path is not None:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(plan)
        os.replace(tmp, path)
    return plan, False


class CalibrationBatches:
    """Full batches of calibration windows in order, then None (a partial last batch is left out:
    TensorRT asks for exactly ``batch`` windows per call)."""

    def __init__(self, windows: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.windows = np.ascontiguousarray(windows, dtype=np.float32)
        self.batch = min(int(batch), len(self.windows))
        if self.batch < 1:
            raise ModelError("INT8 calibration needs at least one window")
        self._at = 0

    def next(self) -> np.ndarray | None:
        if self._at + self.batch > len(self.windows):
            return None
        out = self.windows[self._at:self._at + self.batch]
        self._at += self.batch
        return out


def _calibrator(trt: Any, torch: Any, batches: CalibrationBatches, table: Path | None) -> Any:
    """TensorRT's entropy calibrator over ``batches``, reading and writing its table at ``table``."""

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.device_batch = None  # kept alive while TensorRT reads it

        def get_batch_size(self) -> int:
            return batches.batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            b = batches.next()
            if b is None:
                return None
            self.device_batch = torch.from_numpy(b).cuda()
            return [int(self.device_batch.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return table.read_bytes() if table is not None and table.is_file() else None

        def write_calibration_cache(self, cache: Any) -> None:
            if table is not None:
                table.parent.mkdir(parents=True, exist_ok=True)
                table.write_bytes(bytes(cache))

    return Calibrator()


class TensorRTRuntime:
    """TensorRT engine over the exported network; predict() copies through CUDA torch tensors.

    ``engines``: the folder serialized engines are kept in (the registry passes the version's
    ``engines/``); ``calibration``: a callable giving INT8 calibration windows (the registry passes
    the model's training windows).
    """

    name = "tensorrt"
    device = "cuda"
    threads = 1

    def __init__(self, net: Any, lookback: int, n_features: int, max_batch: int = 4096, precision: str = "fp16",
                 engines: Path | None = None, calibration: Callable[[], np.ndarray] | None = None) -> None:
        if precision not in PRECISIONS:
            raise ModelError(f"tensorrt precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        if precision == "int8" and calibration is None:
            raise ModelError("tensorrt precision int8 needs calibration windows (load it through the registry)")
        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise RuntimeUnavailable("the tensorrt runtime needs a CUDA GPU and a CUDA build of torch")
        self._torch = torch
        self.lookback, self.n_features, self.max_batch, self.precision = lookback, n_features, max_batch, precision
        logger = trt.Logger(trt.Logger.WARNING)
        key = engine_key(precision, torch.cuda.get_device_name(), trt.__version__, max_batch, lookback, n_features)
        plan, self.from_cache = cached_plan(
            engines, key, lambda: self._build(trt, torch, logger, net, engines / f"{key}.calib" if engines else None,
                                              calibration))
        self.engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if self.engine is None:
            raise RuntimeUnavailable(f"TensorRT could not load the engine {key} (built by another TensorRT?)")
        self.context = self.engine.create_execution_context()
        self._in, self._out = self.engine.get_tensor_name(0), self.engine.get_tensor_name(1)

    def _build(self, trt: Any, torch: Any, logger: Any, net: Any, table: Path | None,
               calibration: Callable[[], np.ndarray] | None) -> bytes:
        from tradeloop.models.export import export_onnx

        lookback, n_features = self.lookback, self.n_features
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        with tempfile.TemporaryDirectory() as d:
            path = export_onnx(net, Path(d) / "model.onnx", lookback, n_features, opset=TRT_OPSET)
            if not parser.parse(path.read_bytes()):
                errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise RuntimeUnavailable(f"TensorRT could not parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.FP16)  # int8 layers fall back to fp16, not fp32
        name_in = network.get_input(0).name
        profile = builder.create_optimization_profile()
        profile.set_shape(name_in, (1, lookback, n_features), (64, lookback, n_features),
                          (self.max_batch, lookback, n_features))
        config.add_optimization_profile(profile)
        if self.precision == "int8":
            batches = CalibrationBatches(calibration(), CALIBRATION_BATCH)
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _calibrator(trt, torch, batches, table)
            shape = (batches.batch, lookback, n_features)
            calib_profile = builder.create_optimization_profile()
            calib_profile.set_shape(name_in, shape, shape, shape)
            config.set_calibration_profile(calib_profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeUnavailable(f"TensorRT failed to build a {self.precision} engine from the ONNX export")
        return bytes(plan)

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
