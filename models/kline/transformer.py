"""Causal transformer over bar tokens with an explicit KV cache.

Input: the sum of a coarse-token and a fine-token embedding and a learned position embedding.
Pre-norm blocks of causal self-attention and a GELU feed-forward. Two heads per position:
coarse logits from the hidden state, then fine logits from the hidden state plus an embedding of
the coarse token (the true one in training, the sampled one in generation): Kronos's
dependency-aware sub-token step, p(coarse) p(fine | coarse).

``KVCache`` holds every layer's keys and values in preallocated buffers: ``forward(ids, cache)``
appends the new positions' keys/values and attends over all cached ones, so a generation step
costs one position instead of the whole context.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tradeloop.models.errors import ModelError
from tradeloop.models.kline.config import TransformerConfig


@dataclass
class KVCache:
    """Keys and values [layers][batch, heads, capacity, head_dim] and how many positions are filled."""

    k: list[torch.Tensor]
    v: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, model: "KlineTransformer", batch: int, capacity: int, like: torch.Tensor) -> "KVCache":
        """Buffers for ``batch`` sequences of up to ``capacity`` positions."""
        c = model.cfg
        if capacity > c.max_len:
            raise ModelError(f"kline transformer: {capacity} positions exceed max_len {c.max_len}")
        shape = (batch, c.heads, capacity, c.d_model // c.heads)
        return cls([like.new_zeros(shape) for _ in range(c.layers)], [like.new_zeros(shape) for _ in range(c.layers)])

    @property
    def capacity(self) -> int:
        return self.k[0].shape[2]

    def repeat(self, n: int, capacity: int | None = None) -> "KVCache":
        """Each sequence's cache repeated ``n`` times (sample paths sharing one prefill), room for ``capacity``."""
        cap = capacity or self.capacity
        def grow(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros((t.shape[0] * n, t.shape[1], cap, t.shape[3]))
            out[:, :, :self.length] = t[:, :, :self.length].repeat_interleave(n, dim=0)
            return out
        return KVCache([grow(t) for t in self.k], [grow(t) for t in self.v], self.length)


class Block(nn.Module):
    """Pre-norm causal self-attention + feed-forward."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff), nn.GELU(), nn.Linear(cfg.ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None, layer: int) -> torch.Tensor:
        B, T, D = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, h, D // h).permute(2, 0, 3, 1, 4)
        if cache is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            p = cache.length
            if p + T > cache.capacity:
                raise ModelError(f"kline KV cache full: {p} + {T} positions > capacity {cache.capacity}")
            cache.k[layer][:, :, p:p + T] = k
            cache.v[layer][:, :, p:p + T] = v
            ks, vs = cache.k[layer][:, :, :p + T], cache.v[layer][:, :, :p + T]
            if T == 1:
                a = F.scaled_dot_product_attention(q, ks, vs)
            elif p == 0:
                a = F.scaled_dot_product_attention(q, ks, vs, is_causal=True)
            else:   # several new positions after cached ones: position i sees keys 0..p+i
                mask = torch.ones(T, p + T, dtype=torch.bool, device=x.device).tril(p)
                a = F.scaled_dot_product_attention(q, ks, vs, attn_mask=mask)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(B, T, D)))
        return x + self.drop(self.ff(self.ln2(x)))


class KlineTransformer(nn.Module):
    """``forward(ids [B, T, 2], cache=None) -> hidden [B, T, d]``; ``coarse_logits`` / ``fine_logits`` read it."""

    def __init__(self, cfg: TransformerConfig, vocab: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        self.vocab = vocab
        d = cfg.d_model
        self.emb_coarse = nn.Embedding(vocab[0], d)
        self.emb_fine = nn.Embedding(vocab[1], d)
        self.pos = nn.Embedding(cfg.max_len, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(d)
        self.head_coarse = nn.Linear(d, vocab[0])
        self.cond = nn.Embedding(vocab[0], d)        # the coarse token the fine head is conditioned on
        self.head_fine = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, vocab[1]))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Hidden states of the new positions; with ``cache`` they follow the cached ones (and are added)."""
        T = ids.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.cfg.max_len:
            raise ModelError(f"kline transformer: {start + T} positions exceed max_len {self.cfg.max_len}")
        pos = torch.arange(start, start + T, device=ids.device)
        x = self.emb_coarse(ids[..., 0]) + self.emb_fine(ids[..., 1]) + self.pos(pos)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cache, i)
        if cache is not None:
            cache.length += T
        return self.ln(x)

    def coarse_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Logits of the next bar's coarse token."""
        return self.head_coarse(h)

    def fine_logits(self, h: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Logits of the next bar's fine token given its coarse token."""
        return self.head_fine(h + self.cond(coarse))

    def loss(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced next-token cross-entropy (coarse, fine | true coarse) over sequences [B, T, 2]."""
        h = self(ids[:, :-1])
        nxt = ids[:, 1:]
        lc = F.cross_entropy(self.coarse_logits(h).flatten(0, 1), nxt[..., 0].flatten())
        lf = F.cross_entropy(self.fine_logits(h, nxt[..., 0]).flatten(0, 1), nxt[..., 1].flatten())
        return lc, lf
