"""Korean fonts installed from Debian packages, and a cache of rendered glyph masks."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

FONT_DIRS: tuple[Path, ...] = (
    Path("/usr/share/fonts/truetype/nanum"),
    Path("/usr/share/fonts/truetype/unfonts-core"),
    Path("/usr/share/fonts/truetype/baekmuk"),
)
#: Sans-serif faces close to the plate lettering (the real plate face is a narrow gothic).
PLATE_FONTS: tuple[str, ...] = (
    "NanumGothic.ttf",
    "NanumGothicBold.ttf",
    "NanumBarunGothic.ttf",
    "NanumBarunGothicBold.ttf",
    "NanumSquareR.ttf",
    "NanumSquareB.ttf",
    "NanumSquareRoundB.ttf",
    "NanumGothicCoding.ttf",
    "NanumGothicCodingBold.ttf",
    "UnDotum.ttf",
    "UnDotumBold.ttf",
    "UnGraphic.ttf",
    "UnGraphicBold.ttf",
    "UnDinaru.ttf",
    "UnDinaruBold.ttf",
    "dotum.ttf",
    "gulim.ttf",
    "hline.ttf",
)
#: Faces for distractor text (signs, stickers): anything Korean.
SIGN_FONTS: tuple[str, ...] = (*PLATE_FONTS, "NanumMyeongjo.ttf", "UnBatang.ttf", "batang.ttf")

GLYPH_PX = 96


class FontsMissingError(FileNotFoundError):
    """No Korean font is installed; ``make install`` installs them."""


@functools.lru_cache(maxsize=4)
def find_fonts(names: tuple[str, ...] = PLATE_FONTS) -> tuple[Path, ...]:
    """Return the installed font files among ``names``, in the order given.

    Raises:
        FontsMissingError: none of them is installed.
    """
    by_name = {p.name: p for d in FONT_DIRS if d.is_dir() for p in d.glob("*.tt[fc]")}
    found = tuple(by_name[n] for n in names if n in by_name)
    if not found:
        raise FontsMissingError(
            "no Korean font found in "
            + ", ".join(str(d) for d in FONT_DIRS)
            + "; run `make install` (Debian fonts-nanum fonts-unfonts-core fonts-baekmuk)"
        )
    return found


@functools.lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@functools.lru_cache(maxsize=16384)
def glyph(path: str, char: str, weight: int = 0) -> np.ndarray:
    """The ink of ``char`` in font ``path`` as a tight ``uint8`` mask (0..255), cached.

    ``weight`` thickens (> 0) or thins (< 0) the strokes by that many pixels a side at the
    glyph's :data:`GLYPH_PX` size, for the stroke widths real plates show beyond the fonts'.
    """
    font = _font(path, GLYPH_PX)
    left, top, right, bottom = font.getbbox(char)
    w, h = max(1, right - left), max(1, bottom - top)
    pad = 2 + max(0, weight)
    img = Image.new("L", (int(w) + 2 * pad, int(h) + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), char, font=font, fill=255)
    arr = np.asarray(img)
    if weight:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(weight) + 1,) * 2)
        arr = cv2.dilate(arr, k) if weight > 0 else cv2.erode(arr, k)
    ys, xs = np.nonzero(arr > 8)
    if len(xs) == 0:
        return np.zeros((1, 1), np.uint8)
    return np.ascontiguousarray(arr[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


@functools.lru_cache(maxsize=256)
def plain_one(path: str, weight: int = 0) -> np.ndarray:
    """A "1" drawn as a bare upright stem (no flag, no foot), as on older plates.

    The stem is the font's own: the middle row of its "1" (the stem alone there, with its
    anti-aliased edges) repeated over the glyph's height, so stroke width follows the face.
    """
    g = glyph(path, "1", weight)
    row = g[g.shape[0] // 2]
    xs = np.nonzero(row > 8)[0]
    if len(xs) == 0:
        return g
    return np.ascontiguousarray(np.repeat(row[None, xs.min() : xs.max() + 1], g.shape[0], axis=0))


@functools.lru_cache(maxsize=256)
def flat_three(path: str, weight: int = 0) -> np.ndarray:
    """A "3" with a flat top, as older plates letter it: a bar along the top, a diagonal down
    to the waist, then the font's own lower bowl.

    Strokes are as wide as the font's "1" stem, so the weight follows the face.
    """
    g = glyph(path, "3", weight)
    h, w = g.shape
    sw = max(2, plain_one(path, weight).shape[1] - 2)
    waist = int(h * 0.44)
    out = np.zeros_like(g)
    out[waist:] = g[waist:]
    # the bowl's top edge where the diagonal joins it
    ink = np.nonzero(g[waist] > 128)[0]
    jx = int(ink.min() + (ink.max() - ink.min()) * 0.35) if len(ink) else w // 2
    top = sw // 2
    cv2.line(out, (sw // 2, top), (w - 1 - sw // 2, top), 255, sw, lineType=cv2.LINE_AA)
    cv2.line(out, (w - 1 - sw // 2, top), (jx, waist + sw // 2), 255, sw, lineType=cv2.LINE_AA)
    return out


@functools.lru_cache(maxsize=2048)
def text_mask(path: str, text: str, height: int) -> np.ndarray:
    """Render a whole line of text at ``height`` pixels (for distractor signs)."""
    font = _font(path, max(6, height))
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (int(max(1, right - left)) + 4, int(max(1, bottom - top)) + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), text, font=font, fill=255)
    return np.asarray(img)
