"""A plate's colour from the pixels of its rectified crop (pure functions, no model).

The background fills most of a rectified plate, so the crop's median saturation and hue name
its colour: white plates are nearly colourless, the others sit in distinct hue bands. The
thresholds were chosen on held-out synthetic scenes (seed 777) and checked on two other seeds
and on real-dev; the figures, against the detector's colour head, are in
``docs/model-history.md`` ("Inference changes since").
"""

from __future__ import annotations

import cv2
import numpy as np

#: A plate whose median saturation (OpenCV scale, 0-255) is below this is white.
WHITE_MAX_SATURATION = 60
#: Upper bounds of the hue bands (OpenCV hue, 0-179), in order; hues from
#: :data:`RED_HUE_FROM` up wrap round to orange.
HUE_BANDS: tuple[tuple[str, int], ...] = (
    ("orange", 16),
    ("yellow", 37),
    ("green", 95),
    ("blue", 135),
)
RED_HUE_FROM = 170
#: A photo none of whose sampled pixels has channels further apart than this is greyscale.
GREY_MAX_SPREAD = 8
#: :func:`has_color` samples a grid about this many pixels along the longer side.
GRID = 128


def has_color(image: np.ndarray) -> bool:
    """Whether the RGB ``image`` holds any colour at all (``False`` for a greyscale photo,
    whose plates' colours cannot be read from their pixels)."""
    step = max(1, max(image.shape[:2]) // GRID)
    grid = image[::step, ::step]
    return int((grid.max(axis=2).astype(np.int16) - grid.min(axis=2)).max()) > GREY_MAX_SPREAD


def plate_color(crop: np.ndarray, fallback: str) -> str:
    """The colour of the plate filling the RGB ``uint8`` ``crop``: one of
    :data:`kplate.plates.COLORS`, or ``fallback`` when its hue (purple, magenta) is no
    plate's. The caller checks first that the photo has colour (:func:`has_color`).

    Raises:
        ValueError: ``crop`` is not an ``(H, W, 3)`` image with at least one pixel.
    """
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] * crop.shape[1] == 0:
        raise ValueError(f"expected an (H, W, 3) RGB crop, got shape {crop.shape}")
    hsv = cv2.cvtColor(np.ascontiguousarray(crop, np.uint8), cv2.COLOR_RGB2HSV).reshape(-1, 3)
    hue, saturation = np.median(hsv[:, 0]), np.median(hsv[:, 1])
    if saturation < WHITE_MAX_SATURATION:
        return "white"
    if hue >= RED_HUE_FROM:
        return "orange"
    for name, upper in HUE_BANDS:
        if hue < upper:
            return name
    return fallback
