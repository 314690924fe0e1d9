"""Layers shared by the networks: input standardization fitted on the training split."""
from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / std per feature, clamped to +-clip; mean/std are buffers saved with the weights."""

    def __init__(self, n_features: int, clip: float = 8.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("inv_std", torch.ones(n_features))
        self.clip = float(clip)

    def fit(self, x: torch.Tensor) -> None:
        """Set mean/std from training windows [N, T, F] (std floored so flat features stay finite)."""
        flat = x.reshape(-1, x.shape[-1]).double()
        mean = flat.mean(0)
        std = flat.std(0, unbiased=False).clamp_min(1e-8)
        self.mean.copy_(mean.float())
        self.inv_std.copy_((1.0 / std).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x - self.mean) * self.inv_std).clamp(-self.clip, self.clip)
