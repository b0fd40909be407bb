"""A plate's colour from its pixels: every style the generator renders, flat colours, and
greyscale photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kplate.plate_color import has_color, plate_color
from kplate.synth.plate import STYLES, PlateStyle, render_plate, text_for


@pytest.mark.parametrize("style", STYLES, ids=lambda s: s.name)
def test_front_on_plates_of_every_style_are_named_their_colour(style: PlateStyle) -> None:
    """At most 4 misses in 100 per style: the generator's tealest greens, reddest oranges and
    palest blues reach the neighbouring band (1,092 of 1,100 are named right, at worst 97)."""
    rng = np.random.default_rng(5)
    named = []
    for _ in range(100):
        plate = render_plate(rng, style, text_for(rng, style), float(rng.uniform(0.3, 1.0)))
        named.append(plate_color(plate.image, "fallback"))
    assert named.count(style.color) >= 96, named


@pytest.mark.parametrize(
    ("rgb", "color"),
    [
        ((230, 230, 225), "white"),
        ((120, 120, 110), "white"),  # a white plate in shade
        ((40, 135, 90), "green"),
        ((240, 190, 40), "yellow"),
        ((100, 175, 225), "blue"),
        ((230, 105, 35), "orange"),
        ((200, 30, 40), "orange"),  # red wraps round to orange
        ((150, 40, 200), "fallback"),  # purple: no plate's colour
        ((195, 255, 195), "green"),  # saturation exactly at the white band's edge: coloured
        ((255, 0, 85), "orange"),  # hue exactly where red (orange) starts
    ],
)
def test_flat_colours(rgb: tuple[int, int, int], color: str) -> None:
    assert plate_color(np.full((16, 40, 3), rgb, np.uint8), "fallback") == color


def test_greyscale_photos_have_no_colour() -> None:
    rng = np.random.default_rng(6)
    photo = rng.integers(0, 256, (300, 500, 3), dtype=np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    assert has_color(photo)
    assert not has_color(grey)
    assert not has_color(np.full((16, 40, 3), (100, 108, 100), np.uint8))  # 8 apart: grey
    assert has_color(np.full((16, 40, 3), (100, 109, 100), np.uint8))
    # one coloured patch is enough
    grey[100:140, 200:260] = (40, 135, 90)
    assert has_color(grey)


@pytest.mark.parametrize("shape", [(16, 40), (16, 40, 4), (0, 40, 3)])
def test_bad_crops_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="RGB crop"):
        plate_color(np.zeros(shape, np.uint8), "white")
