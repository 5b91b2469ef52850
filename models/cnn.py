"""Convolutional classifier: [Conv -> activation -> pool] blocks -> dropout -> Linear head.

Convolutions are 'same' padded (odd kernel sizes), each block halves the spatial size with a
2x2 pool while it is at least 2 pixels, so 8x8 inputs survive any number of blocks. Before the
head an adaptive pool caps the feature map at 4x4, so large images do not blow up the head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.mlp import ACTIVATIONS

HEAD_GRID = 4  # the feature map is pooled to at most HEAD_GRID x HEAD_GRID before the head


@dataclass
class CNNConfig:
    in_channels: int = 1  # 1 (grey) or 3 (RGB)
    height: int = 8
    width: int = 8
    num_classes: int = 10
    channels: list[int] = field(default_factory=lambda: [32, 64])  # one conv block per entry
    kernel_size: int = 3  # odd: 'same' padding of kernel_size // 2
    activation: str = "relu"  # relu | sigmoid | tanh
    pooling: str = "max"  # max | avg
    dropout: float = 0.0


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel_size: int, activation: str, pool: str | None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
        self.act = ACTIVATIONS[activation]()
        if pool is None:
            self.pool = nn.Identity()
        else:
            self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.conv(x)))  # (B, C_in, H, W) -> (B, C_out, H', W')


class CNN(nn.Module):
    def __init__(self, config: CNNConfig):
        super().__init__()
        if not config.channels:
            raise ValueError("CNN needs at least one conv block")
        if config.kernel_size % 2 == 0:
            raise ValueError("kernel_size must be odd ('same' padding)")
        if config.activation not in ACTIVATIONS or config.pooling not in ("max", "avg"):
            raise ValueError("bad activation or pooling")
        if min(config.height, config.width) < 1:
            raise ValueError("image size must be positive")
        self.config = config
        h, w, c_in = config.height, config.width, config.in_channels
        blocks = []
        for c_out in config.channels:
            pool = config.pooling if min(h, w) >= 2 else None  # never pool below 1x1
            blocks.append(ConvBlock(c_in, c_out, config.kernel_size, config.activation, pool))
            if pool is not None:
                h, w = h // 2, w // 2
            c_in = c_out
        self.blocks = nn.ModuleList(blocks)
        gh, gw = min(h, HEAD_GRID), min(w, HEAD_GRID)
        adaptive = nn.AdaptiveMaxPool2d if config.pooling == "max" else nn.AdaptiveAvgPool2d
        self.grid = adaptive((gh, gw))  # a no-op at the configured size; robust to others
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(c_in * gh * gw, config.num_classes)

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        # x: (B, C, H, W) in [0, 1]; targets: (B,) int64
        for block in self.blocks:
            x = block(x)  # (B, channels[i], H_i, W_i)
        x = self.grid(x)  # (B, C_last, <=4, <=4)
        logits = self.head(self.drop(x.flatten(1)))  # (B, num_classes)
        loss = F.cross_entropy(logits, targets) if targets is not None else None
        return logits, loss

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {f"blocks.{i}": list(b.parameters()) for i, b in enumerate(self.blocks)}
        groups["head"] = list(self.head.parameters())
        return groups
