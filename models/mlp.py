"""Multi-layer perceptron: flatten -> [Linear -> activation -> dropout] x N -> Linear head."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


@dataclass
class MLPConfig:
    in_features: int = 64  # C*H*W of the input images
    num_classes: int = 10
    hidden_sizes: list[int] = field(default_factory=lambda: [256, 128])
    activation: str = "relu"  # relu | sigmoid | tanh
    dropout: float = 0.0


class MLP(nn.Module):
    def __init__(self, config: MLPConfig):
        super().__init__()
        if len(config.hidden_sizes) < 2:
            raise ValueError("MLP needs at least two hidden layers")
        if config.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {config.activation!r}")
        self.config = config
        widths = [config.in_features, *config.hidden_sizes]
        # layers.i is hidden layer i: the unit whose gradient norm is reported per epoch
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACTIVATIONS[config.activation]()
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(widths[-1], config.num_classes)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        # x: (B, C, H, W) or (B, F); targets: (B,) int64
        h = x.flatten(1)  # (B, F)
        for layer in self.layers:
            h = self.drop(self.act(layer(h)))  # (B, hidden_i)
        logits = self.head(h)  # (B, num_classes)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per reported layer, input side first: layers.0, layers.1, ..., head."""
        groups = {f"layers.{i}": list(m.parameters()) for i, m in enumerate(self.layers)}
        groups["head"] = list(self.head.parameters())
        return groups
