"""LSTM classifier: [B, T, F] windows -> [B, classes] logits from the last hidden state."""
from __future__ import annotations

import torch
from torch import nn

from tradeloop.models.nets.common import Standardize


class LSTMClassifier(nn.Module):
    """Standardize, stacked LSTM over time, linear head on the last step's output."""

    def __init__(self, n_features: int = 16, lookback: int = 64, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.1, classes: int = 2) -> None:
        super().__init__()
        self.norm_in = Standardize(n_features)
        self.lstm = nn.LSTM(n_features, hidden, layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.norm_in(x))
        return self.head(out[:, -1])
