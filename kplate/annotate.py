"""Draw recognised plates on an image (quadrilateral and text in a Korean font), and draw
``kplate eval``'s failures (labelled plates beside what was read)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kplate.result import Plate
from kplate.synth.fonts import FontsMissingError, find_fonts

RGB = tuple[int, int, int]
Points = Sequence[tuple[float, float]]

#: ``kplate eval --save-failures`` colours: labelled plates, plates read right, wrong or false.
LABEL_COLOR: RGB = (255, 200, 0)
RIGHT_COLOR: RGB = (0, 255, 0)
WRONG_COLOR: RGB = (255, 40, 40)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(str(find_fonts()[0]), size)
    except FontsMissingError:
        return ImageFont.load_default()


def _rgb(image: np.ndarray | Image.Image) -> Image.Image:
    img = image.copy() if isinstance(image, Image.Image) else Image.fromarray(image)
    return img.convert("RGB")


class _Pen:
    """Outlines and captions sized to the image."""

    def __init__(self, img: Image.Image) -> None:
        self.draw = ImageDraw.Draw(img)
        self.size = max(14, img.width // 50)
        self.font = _font(self.size)
        self.width = max(2, img.width // 400)

    def outline(self, pts: Points, label: str, color: RGB, below: bool = False) -> None:
        """Draw ``pts`` (clockwise from top-left) and ``label`` above it, or below."""
        self.draw.polygon([(float(x), float(y)) for x, y in pts], outline=color, width=self.width)
        x = float(pts[0][0])
        y = float(pts[3][1]) + 4 if below else max(0.0, float(pts[0][1]) - self.size - 6)
        self.text((x, y), label, color)

    def text(self, xy: tuple[float, float], label: str, color: RGB) -> None:
        self.draw.rectangle(self.draw.textbbox(xy, label, font=self.font), fill=(0, 0, 0))
        self.draw.text(xy, label, font=self.font, fill=color)


def annotate(image: np.ndarray | Image.Image, plates: Sequence[Plate]) -> Image.Image:
    """Return a copy of ``image`` with each plate's quadrilateral and text drawn on it."""
    img = _rgb(image)
    pen = _Pen(img)
    for p in plates:
        pen.outline(p.corners, f"{p.text} {p.text_score:.2f}", RIGHT_COLOR)
    return img


def annotate_scene_errors(
    image: np.ndarray | Image.Image,
    labelled: Sequence[tuple[tuple[float, float, float, float], str]],
    found: Sequence[tuple[Plate, bool]],
) -> Image.Image:
    """A scene as ``kplate eval`` scored it: each labelled ``(box, text)`` in
    :data:`LABEL_COLOR` with its text below; each returned plate with its text and detector
    score above, in :data:`RIGHT_COLOR` when it was read right, else :data:`WRONG_COLOR`."""
    img = _rgb(image)
    pen = _Pen(img)
    for (x0, y0, x1, y1), text in labelled:
        pen.outline(((x0, y0), (x1, y0), (x1, y1), (x0, y1)), f"label {text}", LABEL_COLOR, True)
    for p, right in found:
        pen.outline(p.corners, f"{p.text} {p.score:.2f}", RIGHT_COLOR if right else WRONG_COLOR)
    return img


def annotate_crop_error(image: np.ndarray | Image.Image, truth: str, read: str) -> Image.Image:
    """A crop read wrong, scaled to at least 320 px wide, over a band saying the label and the
    reading."""
    crop = _rgb(image)
    if crop.width < 320:
        crop = crop.resize((320, max(1, round(crop.height * 320 / crop.width))))
    band = max(14, crop.width // 50) * 2 + 16
    img = Image.new("RGB", (crop.width, crop.height + band))
    img.paste(crop, (0, band))
    pen = _Pen(img)
    pen.text((4, 4), f"label {truth}", LABEL_COLOR)
    pen.text((4, 8 + pen.size), f"read  {read or '(nothing)'}", WRONG_COLOR)
    return img
