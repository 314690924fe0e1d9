"""Quantization-aware training for the linear layers, matching ONNX Runtime's dynamic int8.

ONNX Runtime's dynamic quantization (``onnx-cpu-int8``, ``export.quantize_int8``) stores
MatMul/Gemm weights as int8, symmetric per tensor on a 7-bit grid (q in [-64, 64], scale
max|w| / 64: ``export`` says why), and quantizes their inputs at run time to uint8 with a
per-tensor range that includes zero. QAT simulates exactly that on every ``nn.Linear`` with
torch's straight-through fake-quantize ops (the primitives ``torch.ao``'s FakeQuantize modules
wrap; ``torch.ao.quantization`` itself is deprecated in torch 2.13), so the trained float weights
lose little when ONNX Runtime quantizes them. ``finish_qat`` bakes the grid weights in: the
quantizer then finds the same max|w|, so the same grid, and keeps them as they are.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from tradeloop.models.export import INT8_WEIGHT_MAX


class FakeQuantWeight(nn.Module):
    """Weight -> the nearest point of its symmetric per-tensor 7-bit grid (gradient passes through)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        scale = (w.detach().abs().max() / INT8_WEIGHT_MAX).clamp_min(1e-12).float()
        return torch.fake_quantize_per_tensor_affine(w, scale, torch.zeros((), dtype=torch.int32), -INT8_WEIGHT_MAX,
                                                     INT8_WEIGHT_MAX)


def _fake_quant_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[torch.Tensor]:
    """Forward pre-hook: the input as ONNX Runtime's DynamicQuantizeLinear sees it (uint8, range with 0)."""
    x = args[0]
    xf = x.float()
    lo = xf.detach().min().clamp(max=0.0)
    hi = xf.detach().max().clamp(min=0.0)
    scale = ((hi - lo) / 255.0).clamp_min(1e-12)
    zp = torch.round(-lo / scale).clamp(0, 255).to(torch.int32)
    return (torch.fake_quantize_per_tensor_affine(xf, scale, zp, 0, 255).to(x.dtype),)


def start_qat(net: nn.Module) -> list[Any]:
    """Fake-quantize every linear layer's weight and input from now on; the hook handles."""
    handles = []
    for m in net.modules():
        if isinstance(m, nn.Linear):
            parametrize.register_parametrization(m, "weight", FakeQuantWeight())
            handles.append(m.register_forward_pre_hook(_fake_quant_input))
    return handles


def finish_qat(net: nn.Module, handles: list[Any]) -> None:
    """Stop fake-quantizing inputs; replace each weight by its grid value (a plain float tensor)."""
    for h in handles:
        h.remove()
    for m in net.modules():
        if isinstance(m, nn.Linear) and parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
