"""Plate reader: a CNN with fixed text slots (as fast-plate-ocr reads plates).

The feature map is pooled to a small grid and flattened; a linear layer gives, for each of
``max_len`` slots, the logits of one character (or padding). Every slot sees the whole plate,
so one-line, two-line and stacked-region plates are read by the same model.
"""

from __future__ import annotations

import torch
from torch import nn

from kplate.config import ReaderConfig
from kplate.models.layers import ConvBNAct, ResBlock

MEAN = 0.5
STD = 0.25


class PlateReader(nn.Module):
    """``(B, 3, H, W)`` RGB crop in [0, 1] to ``(B, max_len, len(alphabet))`` logits."""

    def __init__(self, cfg: ReaderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ReaderConfig()
        m = cfg.width_mult
        c = [max(8, int(v * m)) for v in (24, 48, 96, 128)]
        self.features = nn.Sequential(
            ConvBNAct(3, c[0], 3, 2),  # /2
            ConvBNAct(c[0], c[1], 3, 2),  # /4
            ResBlock(c[1], c[2], 2),  # /8
            ResBlock(c[2], c[3]),
        )
        self.squeeze = ConvBNAct(c[3], 64, 1)
        self.pool = nn.AdaptiveAvgPool2d((cfg.height // 16, cfg.width // 16))
        flat = 64 * (cfg.height // 16) * (cfg.width // 16)
        self.max_len, self.n_classes = cfg.max_len, len(cfg.alphabet)
        self.classify = nn.Sequential(
            nn.Dropout(0.2), nn.Linear(flat, cfg.max_len * self.n_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.pool(self.squeeze(self.features((x - MEAN) / STD)))
        return self.classify(f.flatten(1)).view(-1, self.max_len, self.n_classes)
