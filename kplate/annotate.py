"""Draw recognised plates on an image (quadrilateral and text in a Korean font)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kplate.result import Plate
from kplate.synth.fonts import FontsMissingError, find_fonts


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(str(find_fonts()[0]), size)
    except FontsMissingError:
        return ImageFont.load_default()


def annotate(image: np.ndarray | Image.Image, plates: Sequence[Plate]) -> Image.Image:
    """Return a copy of ``image`` with each plate's quadrilateral and text drawn on it."""
    img = image.copy() if isinstance(image, Image.Image) else Image.fromarray(image)
    img = img.convert("RGB")
    draw = ImageDraw.Draw(img)
    size = max(14, img.width // 50)
    font = _font(size)
    for p in plates:
        pts = [(float(x), float(y)) for x, y in p.corners]
        draw.polygon(pts, outline=(0, 255, 0), width=max(2, img.width // 400))
        label = f"{p.text} {p.text_score:.2f}"
        x, y = pts[0][0], max(0.0, pts[0][1] - size - 6)
        box = draw.textbbox((x, y), label, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.text((x, y), label, font=font, fill=(0, 255, 0))
    return img
