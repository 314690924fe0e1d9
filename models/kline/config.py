"""Sizes of the tokenizer and the transformer, from ``tiny`` (CPU, minutes) to GPU configs.

``SIZES[name]`` gives both; ``ModelSizes.from_dict`` accepts a preset name plus overrides. The
larger presets are configurations only (they train on a GPU: ``device = "cuda"`` when present).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from tradeloop.models.errors import TrainingError


@dataclass(frozen=True)
class TokenizerConfig:
    """BSQ autoencoder: per-bar MLP of ``hidden`` units, ``layers`` deep; coarse and fine bits."""

    hidden: int = 64
    layers: int = 2
    coarse_bits: int = 8
    fine_bits: int = 8

    @property
    def bits(self) -> int:
        """Bits per bar (coarse + fine)."""
        return self.coarse_bits + self.fine_bits


@dataclass(frozen=True)
class TransformerConfig:
    """Causal transformer over bar tokens: width, depth, heads, feed-forward width, positions."""

    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ff: int = 256
    max_len: int = 1024
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelSizes:
    """A tokenizer and a transformer configuration together."""

    tokenizer: TokenizerConfig = TokenizerConfig()
    transformer: TransformerConfig = TransformerConfig()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | str | None) -> ModelSizes:
        """A preset name, or ``{"preset": NAME, "tokenizer": {...}, "transformer": {...}}`` overrides."""
        if d is None or isinstance(d, str):
            return preset(d or "tiny")
        unknown = set(d) - {"preset", "tokenizer", "transformer"}
        if unknown:
            raise TrainingError(f"kline sizes: unknown key(s) {', '.join(sorted(unknown))}; "
                                "known: preset, tokenizer, transformer")
        base = preset(d.get("preset", "tiny"))
        return cls(_override(base.tokenizer, d.get("tokenizer", {}), "tokenizer"),
                   _override(base.transformer, d.get("transformer", {}), "transformer"))


def _override(cfg: Any, over: dict[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cfg)}
    bad = set(over) - known
    if bad:
        raise TrainingError(f"kline sizes: unknown {what} key(s) {', '.join(sorted(bad))}; "
                            f"known: {', '.join(sorted(known))}")
    out = replace(cfg, **over)
    for f in fields(out):
        v = getattr(out, f.name)
        if f.name != "dropout" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise TrainingError(f"kline sizes: {what}.{f.name} must be an integer >= 1, got {v!r}")
    if isinstance(out, TransformerConfig) and out.d_model % out.heads:
        raise TrainingError(f"kline sizes: d_model {out.d_model} is not a multiple of heads {out.heads}")
    if isinstance(out, TokenizerConfig) and not (1 <= out.coarse_bits <= 14 and 1 <= out.fine_bits <= 14):
        raise TrainingError("kline sizes: coarse_bits and fine_bits must lie in 1..14")
    return out


SIZES: dict[str, ModelSizes] = {
    # trains on two CPU cores in minutes
    "tiny": ModelSizes(TokenizerConfig(128, 2, 10, 10), TransformerConfig(64, 2, 4, 256, 1024)),
    "small": ModelSizes(TokenizerConfig(128, 2, 10, 10), TransformerConfig(128, 4, 4, 512, 1024)),
    # GPU configurations (Kronos-small / -base scale)
    "base": ModelSizes(TokenizerConfig(256, 3, 10, 10), TransformerConfig(512, 8, 8, 2048, 2048, 0.1)),
    "large": ModelSizes(TokenizerConfig(256, 3, 10, 10), TransformerConfig(832, 12, 16, 3328, 2048, 0.1)),
}


def preset(name: str) -> ModelSizes:
    """The named preset (TrainingError listing the names)."""
    try:
        return SIZES[name]
    except KeyError:
        raise TrainingError(f"kline sizes: unknown preset {name!r}; choose one of {', '.join(SIZES)}") from None
