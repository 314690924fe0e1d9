"""Autoregressive generation of bar tokens: temperature + top-p sampling, seeded, with or without KV cache.

Each step samples the next bar's coarse token, then its fine token given the coarse one. Random
numbers come from one ``torch.Generator`` per context (seeded by the caller: ``forecast`` derives
the seed from the model seed and the window's bytes), drawn up front as uniforms [samples, steps,
2] and turned into tokens by inverse-CDF over the top-p set: a context's paths do not depend on
what else is in the batch. ``temperature = 0`` is greedy (argmax). ``use_cache=False`` recomputes
the whole sequence at every step, as the published Kronos code does (the reference the cache is
tested and timed against).
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from tradeloop.models.errors import ModelError
from tradeloop.models.kline.transformer import KVCache, KlineTransformer


def window_seed(seed: int, window: np.ndarray) -> int:
    """A 63-bit seed from the model seed and a window's float32 bytes (same window, same seed)."""
    h = hashlib.sha256(int(seed).to_bytes(8, "little", signed=True))
    h.update(np.ascontiguousarray(window, np.float32).tobytes())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def uniforms(seeds: list[int], samples: int, steps: int) -> torch.Tensor:
    """float32 [len(seeds), samples, steps, 2]: each context's uniforms from its own seeded generator."""
    out = torch.empty((len(seeds), samples, steps, 2))
    for i, s in enumerate(seeds):
        g = torch.Generator().manual_seed(int(s))
        out[i] = torch.rand((samples, steps, 2), generator=g)
    return out


def sample(logits: torch.Tensor, temperature: float, top_p: float, u: torch.Tensor | None) -> torch.Tensor:
    """Token ids [N] from logits [N, V]: argmax at temperature 0, else inverse-CDF of ``u`` [N] over top-p.

    The top-p set is found among the ``TOP_K`` most likely tokens (``topk``: far cheaper than
    sorting the whole vocabulary); rows whose top ``TOP_K`` hold less than ``top_p`` are sorted
    in full, so the set is exactly the top-p one either way.
    """
    if temperature <= 0 or u is None:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    k = min(TOP_K, probs.shape[-1])
    sp, si = probs.topk(k, dim=-1, sorted=True)
    out = _pick(sp, si, u, top_p)
    short = torch.nonzero(sp.sum(-1) < top_p).flatten() if k < probs.shape[-1] else None
    if short is not None and len(short):
        fp, fi = probs[short].sort(dim=-1, descending=True, stable=True)
        out[short] = _pick(fp, fi, u[short], top_p)
    return out


TOP_K = 64


def _pick(sp: torch.Tensor, si: torch.Tensor, u: torch.Tensor, top_p: float) -> torch.Tensor:
    """Inverse CDF of ``u`` over the top-p prefix of probabilities ``sp`` sorted descending (ids ``si``)."""
    keep = (sp.cumsum(-1) - sp) < top_p               # the smallest prefix reaching top_p (>= 1 token)
    cum = (sp * keep).cumsum(-1)
    k = torch.searchsorted(cum, (u.to(cum.dtype) * cum[:, -1]).unsqueeze(-1), right=True)
    return si.gather(-1, k.clamp_max(sp.shape[-1] - 1)).squeeze(-1)


def _next(model: KlineTransformer, h: torch.Tensor, temperature: float, top_p: float,
          u: torch.Tensor | None) -> torch.Tensor:
    """The next bar's (coarse, fine) ids [N, 2] from the last hidden states [N, d]."""
    c = sample(model.coarse_logits(h), temperature, top_p, None if u is None else u[:, 0])
    f = sample(model.fine_logits(h, c), temperature, top_p, None if u is None else u[:, 1])
    return torch.stack([c, f], dim=-1)


@torch.inference_mode()
def generate(model: KlineTransformer, context: torch.Tensor, steps: int, *, samples: int = 1,
             temperature: float = 1.0, top_p: float = 1.0, u: torch.Tensor | None = None,
             use_cache: bool = True) -> torch.Tensor:
    """int64 [B * samples, steps, 2]: ``samples`` continuations of each context [B, T, 2] (rows grouped by context).

    ``u``: uniforms [B, samples, steps, 2] (``uniforms``); required unless ``temperature`` is 0.
    """
    B, T, _ = context.shape
    if steps < 1:
        raise ModelError(f"kline generate: steps must be >= 1, got {steps}")
    if T < 1:
        raise ModelError("kline generate: empty context")
    if T + steps > model.cfg.max_len:
        raise ModelError(f"kline generate: context {T} + {steps} steps exceed the model's max_len "
                         f"{model.cfg.max_len}")
    if temperature > 0 and u is None:
        raise ModelError("kline generate: sampling needs uniforms (u); pass temperature=0 for greedy")
    if not 0 < top_p <= 1:
        raise ModelError(f"kline generate: top_p must lie in (0, 1], got {top_p}")
    uu = None if u is None else u.reshape(B * samples, steps, 2)
    out = context.new_empty((B * samples, steps, 2))
    if use_cache:
        cache = KVCache.empty(model, B, T, model.pos.weight)
        h = model(context, cache)[:, -1]                     # prefill once per context
        if samples > 1:
            cache = cache.repeat(samples, T + steps)
            h = h.repeat_interleave(samples, dim=0)
        else:
            cache = cache.repeat(1, T + steps)
        for t in range(steps):
            ids = _next(model, h, temperature, top_p, None if uu is None else uu[:, t])
            out[:, t] = ids
            if t + 1 < steps:
                h = model(ids[:, None], cache)[:, -1]       # one new position per step
        return out
    seq = context.repeat_interleave(samples, dim=0)
    for t in range(steps):
        h = model(seq)[:, -1]                                  # the whole sequence again
        ids = _next(model, h, temperature, top_p, None if uu is None else uu[:, t])
        out[:, t] = ids
        seq = torch.cat([seq, ids[:, None]], dim=1)
    return out
