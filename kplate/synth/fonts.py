"""Korean fonts installed from Debian packages, and a cache of rendered glyph masks."""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
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
    pad = 2
    img = Image.new("L", (int(w) + 2 * pad, int(h) + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), char, font=font, fill=255)
    return _reweight(np.asarray(img), weight)


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


#: The use syllables whose ㅎ the plate typeface letters its own way (:func:`plate_hieut`).
HIEUT_SYLLABLES: tuple[str, ...] = ("하", "허", "호")
#: The plate typeface's ring is at most this share of its height wide: in 하 and 허, and in
#: 호, where it has less height (glyph pixels; plate cells stretch glyphs taller still).
HIEUT_RING_ASPECT = 0.72
HIEUT_RING_ASPECT_LOW = 0.9
#: The tick stands at least this many times as tall as it is wide (the bar moves down for it,
#: taking up to a quarter of the ring's height).
HIEUT_TICK_ASPECT = 1.6


def _run(counts: np.ndarray, at: int, floor: float) -> tuple[int, int]:
    """The first and last index of the run around ``at`` whose ``counts`` exceed ``floor``."""
    lo, hi = at, at
    while lo > 0 and counts[lo - 1] > floor:
        lo -= 1
    while hi < len(counts) - 1 and counts[hi + 1] > floor:
        hi += 1
    return lo, hi


@dataclass(frozen=True)
class _VowelCut:
    """Where a 하, 허 or 호 glyph parts into the font's vowel and its ㅎ."""

    keep: np.ndarray  # bool, the vowel's pixels
    stem_w: int  # the vowel's upright stroke (px); 0 if it has none
    axis: float | None  # the x of ㅗ's stem, the ㅎ's axis in 호; None: the ㅎ's own centre
    right: float  # the ring keeps left of this x (ㅓ's branch tip)
    bottom: int | None  # the ring's last row; None: the font's ㅎ's
    aspect: float  # the ring at most this share of its height wide


def _side_vowel(g: np.ndarray, char: str) -> _VowelCut | None:
    """ㅏ or ㅓ in a 하 or 허 glyph: the stem as tall as the glyph, ㅏ's branch right of it,
    ㅓ's left of it (out to its tip); ``None`` when the glyph has no such stem."""
    h, w = g.shape
    ink = g > 128
    cols = ink.sum(0)
    stem = int(np.argmax(cols))
    if cols[stem] < 0.6 * h:
        return None
    s0, s1 = _run(cols, stem, 0.5 * cols[stem])
    keep = np.zeros((h, w), bool)
    keep[:, max(0, s0 - 2) :] = True  # the stem with its soft edge, and ㅏ's branch
    tip = float(s0)
    if char == "허":  # ㅓ's branch: the rows inked just left of the stem, out to its tip
        rows = np.nonzero(ink[:, max(0, s0 - 3)])[0]
        if len(rows):
            r0, r1 = int(rows.min()), int(rows.max())
            x, mid = max(0, s0 - 3), (r0 + r1) // 2
            above, below = max(0, r0 - 3), min(h - 1, r1 + 3)
            # out along the branch, up to its tip or to a wall (a ring it touches)
            while x > 0 and ink[mid, x - 1] and not (ink[above, x - 1] or ink[below, x - 1]):
                x -= 1
            keep[max(0, r0 - 2) : r1 + 3, max(0, x - 2) :] = True
            tip = float(x)
    # of that, ink apart from the stem is not the vowel's
    _, labels = cv2.connectedComponents((g > 8).astype(np.uint8), connectivity=8)
    keep &= np.isin(labels, np.unique(labels[:, s0 : s1 + 1])) | (labels == 0)
    right = tip - max(2.0, (s1 - s0 + 1) / 2)
    return _VowelCut(keep, s1 - s0 + 1, None, right, h - 1, HIEUT_RING_ASPECT)


def _low_vowel(g: np.ndarray) -> _VowelCut | None:
    """ㅗ in a 호 glyph: the bar along the bottom and the narrow stem on it, up to where the
    ring widens above it (or the gap below the ring); ``None`` when the glyph has no bar
    along its bottom."""
    h, w = g.shape
    ink = g > 128
    rows = ink.sum(1)
    wide = np.nonzero(rows > 0.5 * w)[0]
    if len(wide) == 0 or wide.max() < 0.7 * h:
        return None
    bar_top, _ = _run(rows, int(wide.max()), 0.5 * w)
    # the narrow rows above the bar: the stem, with the bar's soft top and the ring's foot
    top = bar_top
    while top > 0 and 0 < rows[top - 1] <= 0.3 * w:
        top -= 1
    keep = np.zeros((h, w), bool)
    if top == bar_top:  # no stem: the ring stands on the bar
        keep[bar_top:] = True
        return _VowelCut(keep, 0, None, float(w), None, HIEUT_RING_ASPECT_LOW)
    stem_w = int(np.median(rows[top:bar_top]))
    cut = top + int(np.argmax(rows[top:bar_top] <= stem_w + 2))
    centres = [np.nonzero(ink[y])[0].mean() for y in range(cut, bar_top)]
    keep[cut:] = True
    axis = float(np.median(centres)) + 0.5
    return _VowelCut(keep, stem_w, axis, float(w), None, HIEUT_RING_ASPECT_LOW)


@dataclass(frozen=True)
class _Hieut:
    """The plate typeface's ㅎ laid out in a glyph's pixels (first and last rows)."""

    bar_x: tuple[int, int]  # the bar's first and last column
    bar: tuple[int, int]
    tick_top: int
    ring: tuple[int, int]
    cx: float  # the tick's and the ring's centre
    ring_w: float  # the ring's outer width
    tick_sw: int
    ring_sw: int

    def draw(self, shape: tuple[int, int]) -> np.ndarray:
        """The ㅎ as a ``uint8`` mask of ``shape``: the tick standing on the bar, the ring."""
        out = np.zeros(shape, np.uint8)
        tx = round(self.cx - self.tick_sw / 2)
        out[self.tick_top : self.bar[0], tx : tx + self.tick_sw] = 255
        out[self.bar[0] : self.bar[1] + 1, self.bar_x[0] : self.bar_x[1] + 1] = 255
        rh = self.ring[1] - self.ring[0] + 1
        cy = self.ring[0] + rh / 2
        return np.maximum(out, _ring(shape, (self.cx, cy), (self.ring_w, rh), self.ring_sw))


def _ring(
    shape: tuple[int, int], centre: tuple[float, float], size: tuple[float, float], sw: float
) -> np.ndarray:
    """An elliptic ring of outer ``size`` ``(w, h)`` and wall ``sw`` around ``centre``
    (pixel edges at integers), anti-aliased by 4 x 4 samples a pixel, as a ``uint8`` mask."""
    f = 4
    ys = (np.arange(shape[0] * f) + 0.5) / f - centre[1]
    xs = (np.arange(shape[1] * f) + 0.5) / f - centre[0]
    a, b = size[0] / 2, size[1] / 2

    def inside(a: float, b: float) -> np.ndarray:
        return (xs[None, :] / a) ** 2 + (ys[:, None] / b) ** 2 <= 1.0

    hit = inside(a, b) & ~inside(a - sw, b - sw)
    cover = hit.reshape(shape[0], f, shape[1], f).mean((1, 3))
    return np.round(cover * 255).astype(np.uint8)


def _hieut_layout(ink: np.ndarray, cut: _VowelCut) -> _Hieut | None:
    """The plate typeface's ㅎ in place of the font's (``ink``, a bool mask): its tick and
    bar where the font's top stroke and bar are (the bar lower if the tick needs the room),
    its ring from below the bar down to ``cut.bottom``, as tall as that and narrow. Strokes
    follow the face: the tick as wide as the vowel's stem, the bar as high as the font's, the
    ring's wall their mean (the plate typeface's strokes are even). ``None`` without a bar
    or without room for the ring."""
    ys, _ = np.nonzero(ink)
    if len(ys) == 0:
        return None
    rows = ink.sum(1)
    bar = _run(rows, int(np.argmax(rows)), 0.85 * rows.max())
    bar_cols = np.nonzero(ink[bar[0] : bar[1] + 1].any(0))[0]
    below = np.nonzero(rows[bar[1] + 1 :])[0]
    if len(below) == 0:
        return None
    top, ring_top = int(ys.min()), bar[1] + 1 + int(below[0])
    bottom = cut.bottom if cut.bottom is not None else int(ys.max())
    bar_sw = bar[1] - bar[0] + 1
    tick_sw = cut.stem_w or bar_sw
    drop = max(0, math.ceil(HIEUT_TICK_ASPECT * tick_sw) - (bar[0] - top))
    drop = min(drop, (bottom - ring_top + 1) // 4)
    bar, ring_top = (bar[0] + drop, bar[1] + drop), ring_top + drop
    tick_sw = max(1, min(tick_sw, int((bar[0] - top) / HIEUT_TICK_ASPECT)))
    rh = bottom - ring_top + 1
    x0, x1 = int(bar_cols.min()), int(bar_cols.max())
    cx = cut.axis if cut.axis is not None else (x0 + x1 + 1) / 2
    ring_w = min(0.9 * (x1 - x0 + 1), cut.aspect * rh, 2 * (cut.right - cx))
    if ring_w < 3 or rh < 3:
        return None
    ring_sw = max(1, min(round((tick_sw + bar_sw) / 2), int(ring_w // 3), rh // 3))
    return _Hieut((x0, x1), bar, top, (ring_top, bottom), cx, ring_w, tick_sw, ring_sw)


def _reweight(mask: np.ndarray, weight: int) -> np.ndarray:
    """``mask`` thickened (> 0) or thinned (< 0) by ``weight`` pixels a side (padded first
    so thickened strokes keep room), cut to its ink (> 8); a 1 x 1 blank when it has none."""
    if weight:
        mask = np.pad(mask, max(0, weight))
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(weight) + 1,) * 2)
        mask = cv2.dilate(mask, k) if weight > 0 else cv2.erode(mask, k)
    ys, xs = np.nonzero(mask > 8)
    if len(xs) == 0:
        return np.zeros((1, 1), np.uint8)
    return np.ascontiguousarray(mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])


@functools.lru_cache(maxsize=512)  # 18 faces x 3 syllables x 5 weights
def plate_hieut(path: str, char: str, weight: int = 0) -> np.ndarray:
    """하, 허 or 호 with its ㅎ as real plates letter it: an upright tick standing on the bar,
    and a tall narrow ring under it; the vowel (ㅏ, ㅓ, ㅗ) is the font's own, cut from the
    syllable's glyph.

    The ㅎ takes the font's ㅎ's place, its ring reaching down to the foot of the vowel's
    stem in 하 and 허. The tick is as wide as the vowel's stem, the bar as high as the font's
    ㅎ's, the ring's wall their mean, so stroke widths follow the face. A glyph that does not
    part that way (no clear stem or bar) is given as the font draws it (every face of
    :data:`PLATE_FONTS` parts). ``weight`` as :func:`glyph`'s.

    Raises:
        ValueError: ``char`` is not one of :data:`HIEUT_SYLLABLES`.
    """
    if char not in HIEUT_SYLLABLES:
        raise ValueError(f"plate_hieut draws {', '.join(HIEUT_SYLLABLES)}, not {char!r}")
    g = glyph(path, char)
    cut = _low_vowel(g) if char == "호" else _side_vowel(g, char)
    layout = _hieut_layout((g > 128) & ~cut.keep, cut) if cut is not None else None
    if cut is None or layout is None:
        log.debug("%s: %s does not part into ㅎ and its vowel; the font's own", path, char)
        return glyph(path, char, weight)
    out = np.maximum(np.where(cut.keep, g, 0).astype(np.uint8), layout.draw(g.shape))
    return _reweight(out, weight)
