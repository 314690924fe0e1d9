"""The Conv1d+Transformer forward pass rewritten for bfloat16 inference on the CPU.

Same weights and the same function as ``nets.conv_transformer.ConvTransformer`` in eval mode,
arranged so that oneDNN does the work and little else is left (measured on a Sapphire Rapids
core: eager bf16 of the unmodified network ran at ~1.2k windows/s, this at ~6k):

- every linear layer is one ``mkldnn::_linear_pointwise`` call with its bias, the GELU of the
  first feed-forward layer and the residual add fused in (bf16 matmuls run on AMX / AVX-512 BF16
  where present; ``addmm`` with a bias took an unfused path 6x slower);
- the attention scale 1/sqrt(head_dim) is folded into the query weights;
- softmax is ``exp`` in place and one matmul against ``[v, 1]``, which gives the numerators and
  the row sums together, then one division by the sums. Without the max subtraction this is exact
  softmax unless a row's exponentials overflow or all underflow; a batch where any row sum falls
  outside [1e-30, 1e30] (or is NaN) is recomputed with ``torch.softmax``.

- with the AVX-512 kernels of ``native/`` (``native=None``: where they build and load) attention
  and LayerNorm run there instead: attention ~16 us per window and layer instead of ~45, LayerNorm
  ~2.4 instead of ~3.9 (one Sapphire Rapids core, in the whole forward); their softmax subtracts
  the row maximum and works in fp32, so it needs no overflow check;
- the Conv1d stem is one linear over the three shifted copies of each window (GELU fused),
  ~13 -> ~6 us per window.

Without oneDNN bf16 support (``fused=False``) the same arithmetic runs on plain torch ops.
Inputs are standardized in fp32; the pooled output, final LayerNorm and head run in fp32.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from tradeloop.models.runtime.native import NativeKernels, load_kernels

BF16 = torch.bfloat16
_SUM_MIN, _SUM_MAX = 1e-30, 1e30  # row sums of exp(scores) the fast softmax accepts (else: exact path)


def fused_available() -> bool:
    """True when oneDNN's fused bf16 linear kernels exist in this torch build and CPU."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _w(t: torch.Tensor, dtype: torch.dtype = BF16) -> torch.Tensor:
    return t.detach().to("cpu", dtype).contiguous()


@dataclass(frozen=True)
class _Weights:
    """A weight and bias pair shaped like a linear layer's (the stem's conv, rearranged)."""

    weight: torch.Tensor
    bias: torch.Tensor


class _Linear:
    """``act(x @ w.T + b) (+ residual)``: one fused oneDNN call, or plain torch ops."""

    def __init__(self, layer: Any, fused: bool, scale_rows: tuple[int, float] | None = None) -> None:
        w, b = layer.weight.detach().float().clone(), layer.bias.detach().float().clone()
        if scale_rows is not None:  # fold a scale into the first rows (the query projection)
            n, s = scale_rows
            w[:n] *= s
            b[:n] *= s
        self.w, self.b, self.fused = _w(w), _w(b), fused

    def __call__(self, x: torch.Tensor, gelu: bool = False, residual: torch.Tensor | None = None) -> torch.Tensor:
        if self.fused:
            if residual is not None:
                return torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.w, self.b, "add")
            return torch.ops.mkldnn._linear_pointwise(x, self.w, self.b, "gelu" if gelu else "none",
                                                      [], "none" if gelu else "")
        y = F.linear(x, self.w, self.b)
        if gelu:
            y = F.gelu(y)
        return y if residual is None else y + residual


class _LayerNorm:
    """LayerNorm over the last axis: the native kernel (fp32 weights) or ``F.layer_norm`` (bf16 weights)."""

    def __init__(self, ln: Any, native: NativeKernels | None) -> None:
        self.w, self.b, self.eps = _w(ln.weight), _w(ln.bias), ln.eps
        self.w32, self.b32, self.native = _w(ln.weight, torch.float32), _w(ln.bias, torch.float32), native

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.native is not None and x.dtype == BF16:
            x = x.contiguous()
            out = torch.empty_like(x)
            if self.native.layer_norm_bf16(x.data_ptr(), self.w32.data_ptr(), self.b32.data_ptr(), out.data_ptr(),
                                           x.numel() // x.shape[-1], x.shape[-1], self.eps):
                return out
        return F.layer_norm(x, (x.shape[-1],), self.w, self.b, self.eps)


class _Block:
    """Pre-norm encoder block: x + proj(attn(ln1(x))), then x + ff2(gelu(ff1(ln2(x))))."""

    def __init__(self, block: Any, fused: bool, native: NativeKernels | None = None) -> None:
        d = block.qkv.in_features
        self.heads, self.hd = block.heads, d // block.heads
        self.ln1, self.ln2 = _LayerNorm(block.ln1, native), _LayerNorm(block.ln2, native)
        self.qkv = _Linear(block.qkv, fused, (d, 1.0 / math.sqrt(self.hd)))
        self.proj, self.ff1, self.ff2 = _Linear(block.proj, fused), _Linear(block.ff1, fused), _Linear(block.ff2, fused)
        self.native = native

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        H, hd = self.heads, self.hd
        qkv = self.qkv(self.ln1(x)).view(B, T, 3, H, hd)
        a = self._attend_native(qkv, B, T, H, hd)
        if a is None:
            a = self._attend(qkv, B, T, H, hd).transpose(1, 2).reshape(B, T, D)
        x = self.proj(a, residual=x)
        return self.ff2(self.ff1(self.ln2(x), gelu=True), residual=x)

    def _attend_native(self, qkv: torch.Tensor, B: int, T: int, H: int, hd: int) -> torch.Tensor | None:
        """Attention by the native kernel as [B, T, D], or None (no kernels, not bf16, unsupported shape)."""
        if self.native is None or qkv.dtype != BF16:
            return None
        qkv = qkv.contiguous()
        out = torch.empty(B, T, H * hd, dtype=BF16)
        return out if self.native.attention_bf16(qkv.data_ptr(), out.data_ptr(), B, T, H, hd) else None

    @staticmethod
    def _attend(qkv: torch.Tensor, B: int, T: int, H: int, hd: int) -> torch.Tensor:
        """softmax(q k^T) v per head (scale already in q): [B, H, T, hd]."""
        q = qkv[:, :, 0].transpose(1, 2).reshape(B * H, T, hd)
        kt = qkv[:, :, 1].permute(0, 2, 3, 1).reshape(B * H, hd, T)
        v1 = torch.ones(B, H, T, hd + 1, dtype=qkv.dtype)
        v1[..., :hd] = qkv[:, :, 2].transpose(1, 2)
        v1 = v1.view(B * H, T, hd + 1)
        o = torch.bmm(torch.bmm(q, kt).exp_(), v1)
        den = o[..., hd:]
        lo, hi = torch.aminmax(den)  # NaN fails both tests; the bounds keep sum(e * v) finite too
        if float(lo) > _SUM_MIN and float(hi) < _SUM_MAX:
            return (o[..., :hd] / den).view(B, H, T, hd)
        p = torch.softmax(torch.bmm(q, kt).float(), -1).to(q.dtype)  # a row over- or underflowed: exact path
        return torch.bmm(p, v1[..., :hd]).view(B, H, T, hd)


class BF16ConvTransformer:
    """``ConvTransformer`` inference in bf16 (module docs): float32 windows in, float32 logits out."""

    def __init__(self, net: Any, fused: bool | None = None, native: bool | None = None) -> None:
        self.fused = fused_available() if fused is None else bool(fused)
        kernels = load_kernels() if native is None or native else None
        if native and kernels is None:
            from tradeloop.models.runtime.native import unavailable_reason

            raise RuntimeError(f"native kernels unavailable: {unavailable_reason()}")
        self.native = kernels is not None
        norm = net.norm_in
        self.mean, self.inv_std, self.clip = _w(norm.mean, torch.float32), _w(norm.inv_std, torch.float32), norm.clip
        w = net.conv.weight.detach().float()  # [D, F, K] -> [D, K*F]: a linear over the K shifted windows
        self.kernel, self.pad = w.shape[2], net.conv.padding[0]
        self.stem = _Linear(_Weights(w.permute(0, 2, 1).reshape(w.shape[0], -1), net.conv.bias.detach().float()),
                            self.fused)
        self.pos = _w(net.pos)
        self.blocks = [_Block(b, self.fused, kernels) for b in net.blocks]
        n = net.norm_out
        self.norm_out = (_w(n.weight, torch.float32), _w(n.bias, torch.float32), n.eps)
        self.head_w, self.head_b = _w(net.head.weight, torch.float32), _w(net.head.bias, torch.float32)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x - self.mean) * self.inv_std).clamp(-self.clip, self.clip).to(BF16)
        T = x.shape[1]
        xp = F.pad(x, (0, 0, self.pad, self.pad))
        h = self.stem(torch.cat([xp[:, k:k + T] for k in range(self.kernel)], dim=2), gelu=True) + self.pos
        for block in self.blocks:
            h = block(h)
        pooled = h.float().mean(dim=1)
        return F.linear(F.layer_norm(pooled, (pooled.shape[-1],), *self.norm_out), self.head_w, self.head_b)


def _to_bf16(a: Any) -> Any:
    """Floating tensors (also inside tuples, e.g. an LSTM's (h0, c0)) as bf16; anything else as is."""
    if isinstance(a, torch.Tensor):
        return a.to(BF16) if a.is_floating_point() else a
    return tuple(_to_bf16(b) for b in a) if isinstance(a, tuple) else a


def _bf16_args(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return _to_bf16(args)


class AutocastBF16:
    """Any other network (the LSTM): the fp32 module under CPU bf16 autocast, logits as float32.

    Under autocast torch sends an LSTM to oneDNN's bf16 RNN even where oneDNN has no bf16 kernels
    (a CPU without AVX-512, or ``ONEDNN_MAX_CPU_ISA=AVX2``), which fails with "could not create a
    primitive descriptor for the LSTM forward propagation primitive". There (``fused_available()``
    false) each recurrent layer is a bf16 copy fed bf16 inputs instead, which torch runs on its own
    kernels (emulated bf16: correct, slower than fp32); the rest of the network stays under autocast.
    """

    def __init__(self, net: Any) -> None:
        self.net = net.to("cpu", torch.float32).eval()
        self.fused = self.native = False
        self.rnn_bf16 = not fused_available() and any(isinstance(m, torch.nn.RNNBase) for m in self.net.modules())
        if self.rnn_bf16:
            self.net = copy.deepcopy(self.net)
            for m in self.net.modules():
                if isinstance(m, torch.nn.RNNBase):
                    m.to(BF16)
                    m.register_forward_pre_hook(_bf16_args)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=BF16):
            return self.net(x).float()


def bf16_forward(net: Any, fused: bool | None = None, native: bool | None = None) -> BF16ConvTransformer | AutocastBF16:
    """The fastest bf16 forward for ``net``: the rewrite for ConvTransformer, autocast otherwise."""
    from tradeloop.models.nets.conv_transformer import ConvTransformer

    if isinstance(net, ConvTransformer):
        return BF16ConvTransformer(net.eval(), fused, native)
    return AutocastBF16(net)
