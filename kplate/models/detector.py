"""Plate detector: a compact CNN with a centre heatmap, corner offsets and class heads.

Trained from scratch on synthetic scenes. Output stride 8: for every cell, the probability
that a plate centre lies in it, the 4 corners as offsets from the cell (in cells), and the
layout and colour logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kplate.config import DetectorConfig
from kplate.models.layers import ConvBNAct, ResBlock
from kplate.plates import COLORS, LAYOUTS

STRIDE = 8
N_LAYOUT = len(LAYOUTS)
N_COLOR = len(COLORS)
#: Output channels: heatmap, 8 corner offsets, layout logits, colour logits.
N_OUT = 1 + 8 + N_LAYOUT + N_COLOR

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class PlateDetector(nn.Module):
    """Backbone to stride 32, a light top-down path back to stride 8, and the heads."""

    def __init__(self, cfg: DetectorConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or DetectorConfig()
        c1, c2, c3, c4, c5 = cfg.width
        h = cfg.head_channels
        self.stem = nn.Sequential(ConvBNAct(3, c1, 3, 2), ConvBNAct(c1, c2, 3, 2))  # /4
        self.s8 = ResBlock(c2, c3, 2)  # /8
        self.s16 = nn.Sequential(ResBlock(c3, c4, 2), ResBlock(c4, c4))  # /16
        self.s32 = nn.Sequential(ResBlock(c4, c5, 2), ResBlock(c5, c5))  # /32
        self.lat32 = ConvBNAct(c5, h, 1)
        self.lat16 = ConvBNAct(c4, h, 1)
        self.lat8 = ConvBNAct(c3, h, 1)
        self.fuse = ConvBNAct(h, h, 3)
        self.head = nn.Conv2d(h, N_OUT, 1)
        with torch.no_grad():
            bias = self.head.bias
            if bias is not None:
                bias[:1].fill_(-4.6)  # start with a low plate prior
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def normalize_(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (RGB in [0, 1]) standardised in place as :meth:`forward` does it: the same
        values, but in a contiguous ``(B, 3, H, W)`` tensor this is several times faster than
        the broadcast over a channels-last one."""
        return x.sub_(self.mean).div_(self.std)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor, *, normalized: bool = False) -> torch.Tensor:
        """``x``: ``(B, 3, H, W)`` RGB in [0, 1], H and W multiples of 32, or already put
        through :meth:`normalize_` when ``normalized``.

        Returns ``(B, N_OUT, H/8, W/8)``: raw heatmap logit, offsets, layout and colour logits.
        """
        if not normalized:
            x = (x - self.mean) / self.std  # type: ignore[operator]
        f8 = self.s8(self.stem(x))
        f16 = self.s16(f8)
        f32 = self.s32(f16)
        p = self.lat32(f32)
        p = F.interpolate(p, size=f16.shape[-2:], mode="nearest") + self.lat16(f16)
        p = F.interpolate(p, size=f8.shape[-2:], mode="nearest") + self.lat8(f8)
        return self.head(self.fuse(p))
