"""torch-cuda: fp16/bf16 inference with weights and feature rings resident on the GPU.

Inputs are padded to fixed batch buckets and each bucket's forward pass is captured once as a
CUDA graph, so a prediction is one host-to-device copy (or none, from the resident rings), one
graph replay and one device-to-host copy of the logits. Written against torch 2.13's CUDA API;
it has not run on this project's CPU-only machines (its tests skip without CUDA).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from tradeloop.models.errors import ModelError, RuntimeUnavailable
from tradeloop.models.runtime.base import as_windows

BUCKETS = (1, 8, 64, 512, 4096)
DTYPES = ("fp16", "bf16")


def _torch_cuda() -> Any:
    try:
        import torch
    except ImportError:
        raise RuntimeUnavailable("torch-cuda needs torch: pip install 'tradeloop[models]'") from None
    if not torch.cuda.is_available():
        raise RuntimeUnavailable("torch-cuda needs a CUDA GPU and a CUDA build of torch; "
                                 f"this machine has torch {torch.__version__} without a usable GPU")
    return torch


class GpuFeatureRing:
    """Each symbol's last ``lookback`` feature rows on the GPU: push new rows, gather windows.

    Features are computed on the CPU by the streaming kernel (16 numbers per symbol and bar);
    only those rows cross to the GPU, never whole windows. ``device="cpu"`` runs the same code
    on the CPU (how the tests check it where no GPU exists).
    """

    def __init__(self, n_symbols: int, lookback: int, n_features: int, dtype: Any = None,
                 device: str = "cuda") -> None:
        if str(device).startswith("cuda"):
            torch = _torch_cuda()
        else:
            import torch
        self._torch = torch
        self.rows = torch.zeros(n_symbols, lookback, n_features, dtype=dtype or torch.float32, device=device)
        self.counts = torch.zeros(n_symbols, dtype=torch.long, device=device)
        self._ar = torch.arange(lookback, device=device)
        self.lookback = lookback

    def push(self, symbols: Any, rows: np.ndarray) -> None:
        """Append one feature row per symbol index (rows float [k, F], computed on the CPU)."""
        torch = self._torch
        idx = torch.as_tensor(np.asarray(symbols), dtype=torch.long).to(self.rows.device)
        r = torch.as_tensor(np.asarray(rows)).to(self.rows.device, self.rows.dtype)
        self.rows[idx, self.counts[idx] % self.lookback] = r
        self.counts[idx] += 1

    def gather(self, symbols: Any) -> Any:
        """Windows [k, lookback, F] on the device, oldest row first."""
        torch = self._torch
        idx = torch.as_tensor(np.asarray(symbols), dtype=torch.long).to(self.rows.device)
        slots = (self.counts[idx, None] - self.lookback + self._ar) % self.lookback
        return self.rows[idx[:, None], slots]


class TorchCUDARuntime:
    """fp16/bf16 CUDA inference with CUDA-graph replay per batch bucket."""

    name = "torch-cuda"
    threads = 1

    def __init__(self, net: Any, lookback: int, n_features: int, dtype: str = "fp16",
                 buckets: tuple[int, ...] = BUCKETS, graphs: bool = True, device: str = "cuda") -> None:
        torch = _torch_cuda()
        if dtype not in DTYPES:
            raise ModelError(f"torch-cuda dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if dtype == "bf16" and not torch.cuda.is_bf16_supported():
            raise RuntimeUnavailable("torch-cuda bf16 needs a GPU with bfloat16 support; use dtype='fp16'")
        self._torch = torch
        self.device = device
        self.dtype = torch.float16 if dtype == "fp16" else torch.bfloat16
        self.lookback, self.n_features = lookback, n_features
        self.net = net.to(device=device, dtype=self.dtype).eval()
        self.buckets = tuple(sorted(buckets))
        self._in: dict[int, Any] = {}
        self._out: dict[int, Any] = {}
        self._graphs: dict[int, Any] = {}
        self._host_out: dict[int, Any] = {}
        self.graph_errors: dict[int, str] = {}  # buckets that run eagerly because capture failed
        for b in self.buckets:
            self._in[b] = torch.zeros(b, lookback, n_features, dtype=self.dtype, device=device)
            self._host_out[b] = torch.empty(b, 2, dtype=torch.float32, pin_memory=True)
            if graphs:
                try:
                    self._capture(b)
                except RuntimeError as e:  # e.g. an op that cannot be captured: stay eager
                    self.graph_errors[b] = str(e).splitlines()[0]
                    torch.cuda.synchronize()

    def _capture(self, b: int) -> None:
        """Warm up on a side stream, then capture bucket b's forward pass as a CUDA graph."""
        torch = self._torch
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s), torch.inference_mode():
            for _ in range(3):
                self.net(self._in[b])
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g), torch.inference_mode():
            self._out[b] = self.net(self._in[b])
        self._graphs[b] = g

    def _run_bucket(self, b: int, n: int) -> Any:
        torch = self._torch
        if b in self._graphs:
            self._graphs[b].replay()
            out = self._out[b]
        else:
            with torch.inference_mode():
                out = self.net(self._in[b])
        host = self._host_out[b][:n]
        host.copy_(out[:n].float(), non_blocking=True)
        torch.cuda.current_stream().synchronize()
        return host.numpy().copy()

    def _bucket(self, n: int) -> int:
        for b in self.buckets:
            if b >= n:
                return b
        return self.buckets[-1]

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """Logits float32 [batch, classes] for host windows (chunked by the largest bucket)."""
        x = as_windows(windows, self.lookback, self.n_features)
        return self.predict_device(self._torch.from_numpy(x).to(self.device, non_blocking=True))

    def predict_device(self, windows: Any) -> np.ndarray:
        """Logits for windows already on the GPU (e.g. ``GpuFeatureRing.gather``)."""
        outs = []
        big = self.buckets[-1]
        for a in range(0, windows.shape[0], big):
            chunk = windows[a:a + big]
            n = chunk.shape[0]
            b = self._bucket(n)
            self._in[b][:n].copy_(chunk)
            if n < b:
                self._in[b][n:].zero_()
            outs.append(self._run_bucket(b, n))
        return np.concatenate(outs) if outs else np.empty((0, 2), np.float32)
