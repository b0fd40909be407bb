"""Synthetic loose crops (upright boxes around tilted plates) read by several recognizers."""

from __future__ import annotations

from kplate import Recognizer
from kplate.synth import render_crop


def loose_crops_read_exactly(recognizers: list[Recognizer], seed: int, count: int) -> list[int]:
    """How many of ``count`` loose crops of ``seed`` each of ``recognizers`` reads exactly
    (the crops rendered once for all)."""
    samples = [render_crop(seed, i, loose=True) for i in range(count)]
    crops = [s.image for s in samples]
    truth = [s.plates[0].text.text for s in samples]
    return [sum(r.text == t for r, t in zip(rec.read(crops), truth)) for rec in recognizers]
