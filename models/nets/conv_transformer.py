"""Conv1d + Transformer-encoder classifier: [B, T, F] windows -> [B, classes] logits.

The encoder blocks are written out (pre-norm, fused QKV projection, ``scaled_dot_product_attention``)
rather than taken from ``nn.TransformerEncoder``: they export to ONNX opset 23's fused
``Attention`` op (104 ONNX nodes instead of 176, ~15% faster on one CPU thread), avoid the
``nn.MultiheadAttention`` fast path that breaks dynamic quantization and ``torch.compile``, and
run flash/memory-efficient attention on CUDA in fp16/bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tradeloop.models.nets.common import Standardize


class EncoderBlock(nn.Module):
    """Pre-norm transformer encoder layer: x + attn(ln(x)), then x + ff(ln(x))."""

    def __init__(self, d_model: int, heads: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.ln2 = nn.LayerNorm(d_model)
        self.ff1 = nn.Linear(d_model, ff)
        self.ff2 = nn.Linear(ff, d_model)
        self.drop = nn.Dropout(dropout)
        self.p_attn = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.p_attn if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))


class ConvTransformer(nn.Module):
    """Standardize, Conv1d(F->d, k) over time, learned positions, N encoder blocks, mean pool, linear."""

    def __init__(self, n_features: int = 16, lookback: int = 64, d_model: int = 64, kernel: int = 3,
                 layers: int = 4, heads: int = 8, ff: int = 256, dropout: float = 0.1,
                 classes: int = 2) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
        if kernel % 2 == 0:
            raise ValueError(f"kernel must be odd to keep the window length, got {kernel}")
        self.norm_in = Standardize(n_features)
        self.conv = nn.Conv1d(n_features, d_model, kernel, padding=kernel // 2)
        self.pos = nn.Parameter(torch.randn(1, lookback, d_model) * 0.02)
        self.blocks = nn.ModuleList(EncoderBlock(d_model, heads, ff, dropout) for _ in range(layers))
        self.norm_out = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv(self.norm_in(x).transpose(1, 2))).transpose(1, 2) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm_out(h.mean(dim=1)))
