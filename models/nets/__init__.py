"""Predictor networks, built by name from a JSON-ready config (imports torch when called)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from tradeloop.models.errors import TrainingError

NET_KINDS = ("conv_transformer", "lstm")


@dataclass(frozen=True)
class NetConfig:
    """Network kind and sizes; ``sizes`` are the keyword arguments of the network class."""

    kind: str = "conv_transformer"
    sizes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in NET_KINDS:
            raise TrainingError(f"unknown network {self.kind!r}; choose one of {', '.join(NET_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetConfig:
        """Inverse of ``to_dict``."""
        return cls(d["kind"], dict(d.get("sizes", {})))


def build_net(config: NetConfig, n_features: int, lookback: int) -> Any:
    """A freshly initialised network (torch.nn.Module) for windows [B, lookback, n_features]."""
    if config.kind == "conv_transformer":
        from tradeloop.models.nets.conv_transformer import ConvTransformer as cls
    else:
        from tradeloop.models.nets.lstm import LSTMClassifier as cls
    try:
        return cls(n_features=n_features, lookback=lookback, **config.sizes)
    except TypeError as e:
        raise TrainingError(f"network {config.kind!r}: bad size parameter ({e})") from None
