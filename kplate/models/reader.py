"""Plate reader: a CNN whose character slots each attend to their place on the plate.

Each of ``max_len`` slots (a character or padding) has a query: a learned slot embedding plus a
projection of a coarse summary of the whole plate, so where slot ``i`` looks depends on the
plate's layout (one line, two lines, a stacked region). The slot attends over the stride-8
feature map (keys carry a learned position embedding), then looks again with a query that
also carries what the first look gathered, and one shared linear layer classifies what the
last look gathered. One-line, two-line and stacked-region plates are read by the same model.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from kplate.config import ReaderConfig
from kplate.models.layers import ConvBNAct, ResBlock

MEAN = 0.5
STD = 0.25
#: The plate summary that conditions the queries: the feature map pooled to this grid.
SUMMARY_GRID = (2, 5)
#: How many times each slot attends over the feature map.
LOOKS = 2


class PlateReader(nn.Module):
    """``(B, 3, H, W)`` RGB crop in [0, 1] to ``(B, max_len, len(alphabet))`` logits."""

    def __init__(self, cfg: ReaderConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or ReaderConfig()
        m = cfg.width_mult
        c = [max(8, int(v * m)) for v in (24, 48, 96, 128)]
        d = c[3]
        self.features = nn.Sequential(
            ConvBNAct(3, c[0], 3, 2),  # /2
            ConvBNAct(c[0], c[1], 3, 2),  # /4
            ResBlock(c[1], c[2], 2),  # /8
            ResBlock(c[2], c[3]),
        )
        self.max_len, self.n_classes, self.dim = cfg.max_len, len(cfg.alphabet), d
        self.position = nn.Parameter(torch.randn(1, d, cfg.height // 8, cfg.width // 8) * 0.02)
        self.key = nn.Conv2d(c[3], d, 1)
        self.value = nn.Conv2d(c[3], d, 1)
        self.summary = nn.Sequential(
            nn.AdaptiveAvgPool2d(SUMMARY_GRID),
            nn.Flatten(),
            nn.Linear(c[3] * SUMMARY_GRID[0] * SUMMARY_GRID[1], cfg.max_len * d),
        )
        self.slot = nn.Parameter(torch.randn(1, cfg.max_len, d) * 0.02)
        self.classify = nn.Sequential(
            nn.LayerNorm(d), nn.Dropout(0.1), nn.Linear(d, self.n_classes)
        )
        #: Turns what a look gathered into the next look's query update.
        self.refine = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features((x - MEAN) / STD)
        keys = (self.key(f) + self.position).flatten(2)  # (B, d, h*w)
        values = (self.value(f) + self.position).flatten(2).transpose(1, 2)  # (B, h*w, d)
        queries = self.summary(f).view(-1, self.max_len, self.dim) + self.slot
        for look in range(LOOKS):
            attention = torch.softmax(queries @ keys / math.sqrt(self.dim), -1)  # (B, slots, h*w)
            gathered = attention @ values + queries
            if look < LOOKS - 1:
                queries = queries + self.refine(gathered)
        return self.classify(gathered)
