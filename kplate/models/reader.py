"""Plate reader: a CNN with fixed text slots read by attention pooling.

Each of ``max_len`` slots has a learned query that attends over the feature map and
classifies one character (or padding). Slots see the whole plate, so one-line, two-line and
stacked-region plates are read by the same model.
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
        fh, fw = cfg.height // 8, cfg.width // 8
        dim = c[3]
        self.pos = nn.Parameter(torch.randn(1, fh * fw, dim) * 0.02)
        self.queries = nn.Parameter(torch.randn(cfg.max_len, dim) * 0.02)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.classify = nn.Sequential(
            nn.Linear(dim, dim),
            nn.ReLU(inplace=True),
            nn.Dropout(0.1),
            nn.Linear(dim, len(cfg.alphabet)),
        )
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features((x - MEAN) / STD)  # (B, C, h, w)
        f = f.flatten(2).transpose(1, 2) + self.pos  # (B, hw, C)
        attn = torch.softmax(self.queries @ self.key(f).transpose(1, 2) * self.scale, dim=-1)
        pooled = self.norm(attn @ self.value(f))  # (B, max_len, C)
        return self.classify(pooled)
