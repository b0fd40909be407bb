"""Render one Korean licence plate, front-on, in every layout of DOMAIN.md.

Sizes are in millimetres of the real plate; the renderer scales them by ``px_per_mm``. Each
character is drawn by stretching a font glyph into its cell, as plate lettering is drawn to
fixed cell proportions rather than typeset.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kplate.plates import PlateText
from kplate.synth import effects, fonts, text

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class PlateStyle:
    """A kind of plate: layout, colour and physical size."""

    name: str
    layout: str  # one-line | two-line
    color: str  # white | green | yellow | blue | orange
    size_mm: tuple[float, float]
    weight: float  # share among rendered plates


STYLES: tuple[PlateStyle, ...] = (
    PlateStyle("white-2digit", "one-line", "white", (520, 110), 0.16),
    PlateStyle("white-3digit", "one-line", "white", (520, 110), 0.12),
    PlateStyle("white-3digit-band", "one-line", "white", (520, 110), 0.12),
    PlateStyle("ev-blue", "one-line", "blue", (520, 110), 0.10),
    PlateStyle("yellow-1line", "one-line", "yellow", (520, 110), 0.10),
    PlateStyle("green-2line", "two-line", "green", (335, 170), 0.12),
    PlateStyle("green-2line-noregion", "two-line", "green", (335, 170), 0.10),
    PlateStyle("yellow-2line", "two-line", "yellow", (335, 170), 0.08),
    PlateStyle("large-2line", "two-line", "yellow", (440, 220), 0.04),
    PlateStyle("orange", "two-line", "orange", (335, 170), 0.03),
    PlateStyle("white-2line", "two-line", "white", (335, 170), 0.03),
)
STYLE_BY_NAME = {s.name: s for s in STYLES}


def pick_style(rng: np.random.Generator) -> PlateStyle:
    """Draw a plate style by its weight."""
    w = np.array([s.weight for s in STYLES])
    return STYLES[int(rng.choice(len(STYLES), p=w / w.sum()))]


def text_for(rng: np.random.Generator, style: PlateStyle) -> PlateText:
    """Draw a legal text for ``style`` (region and commercial use where the style has them)."""
    n = style.name
    if n == "white-2digit":
        return text.random_text(rng, digits=2, region=False, commercial=False)
    if n.startswith(("white-3digit", "ev-blue")):
        return text.random_text(
            rng, digits=3 if rng.random() < 0.75 else 2, region=False, commercial=False
        )
    if n == "yellow-1line":
        return text.random_text(rng, digits=2, region=True, commercial=True)
    if n in ("yellow-2line", "large-2line"):
        return text.random_text(rng, digits=2, region=True, commercial=True)
    if n == "green-2line-noregion":
        return text.random_text(rng, digits=2, region=False, commercial=False)
    if n == "orange":
        return text.random_text(rng, digits=2, region=True, commercial=rng.random() < 0.3)
    return text.random_text(rng, digits=2, region=rng.random() < 0.85, commercial=False)


def _jit(rng: np.random.Generator, base: int, spread: int) -> int:
    return int(np.clip(base + rng.integers(-spread, spread + 1), 0, 255))


def _colors(rng: np.random.Generator, color: str) -> tuple[RGB, RGB]:
    """Background and ink colours, with the spread of real, aged, lit plates."""
    if color == "white":
        v = _jit(rng, 238, 14)
        bg = (v, _jit(rng, v, 4), _jit(rng, v + 2, 5))
        k = _jit(rng, 25, 20)
        return bg, (k, k, k + int(rng.integers(0, 10)))
    if color == "green":
        bg = (_jit(rng, 40, 20), _jit(rng, 135, 40), _jit(rng, 90, 30))
        v = _jit(rng, 238, 14)
        return bg, (v, v, v)
    if color == "yellow":
        bg = (_jit(rng, 240, 12), _jit(rng, 190, 25), _jit(rng, 40, 30))
        ink = (20, 20, 30) if rng.random() < 0.6 else (25, 35, 80)
        return bg, ink
    if color == "blue":
        # electric cars' plates are a pale sky blue
        bg = (_jit(rng, 145, 30), _jit(rng, 200, 20), _jit(rng, 235, 12))
        k = _jit(rng, 20, 15)
        return bg, (k, k, k + 10)
    if color == "orange":
        bg = (_jit(rng, 230, 15), _jit(rng, 105, 25), _jit(rng, 35, 20))
        v = _jit(rng, 240, 10)
        return bg, (v, v, v)
    raise ValueError(f"unknown plate colour {color!r}")


@dataclass(frozen=True)
class _Cell:
    char: str
    x0: float
    y0: float
    x1: float
    y1: float


def _row(
    chars: list[tuple[str, float]],
    x0: float,
    x1: float,
    y0: float,
    y1: float,
    gap_after: dict[int, float] | None = None,
) -> list[_Cell]:
    """Lay ``chars`` (char, relative width) out evenly between ``x0`` and ``x1``."""
    gaps = gap_after or {}
    total = sum(w for _, w in chars) + sum(gaps.values())
    unit = (x1 - x0) / total
    cells, x = [], x0
    for i, (ch, w) in enumerate(chars):
        cells.append(_Cell(ch, x, y0, x + w * unit, y1))
        x += w * unit + gaps.get(i, 0.0) * unit
    return cells


def _layout_cells(rng: np.random.Generator, style: PlateStyle, t: PlateText) -> list[_Cell]:
    """Character cells in mm for ``t`` on ``style``."""
    W, H = style.size_mm
    j = lambda v, s: v + float(rng.uniform(-s, s))  # noqa: E731 - tiny local jitter helper
    tn, uc, serial = t.type_number, t.use_char, t.serial
    if style.layout == "one-line":
        if style.name.endswith("band"):
            left, right = 58.0, j(W - 20, 6)
        elif style.name == "ev-blue":  # the marks of electric cars' plates flank the text
            left, right = j(46, 6), j(W - 40, 6)
        else:
            left, right = j(22, 6), j(W - 20, 6)
        top, bottom = j(15, 3), j(H - 14, 3)
        cells: list[_Cell] = []
        if t.region and style.name == "yellow-1line":
            # region written small and stacked at the left
            rw = j(46, 4)
            mid = (top + bottom) / 2
            cells += [
                _Cell(t.region[0], left, top + 4, left + rw, mid - 1),
                _Cell(t.region[1], left, mid + 1, left + rw, bottom - 4),
            ]
            left += rw + j(8, 3)
        hw = j(1.2, 0.1)
        chars = [(d, 1.0) for d in tn] + [(uc, hw)] + [(d, 1.0) for d in serial]
        gap = {len(tn) - 1: j(0.15, 0.05), len(tn): j(0.45, 0.15)}
        row = _row(chars, left, right, top, bottom, gap)
        # the Hangul is drawn a little shorter than the digits
        hi = len(tn)
        c = row[hi]
        shrink = (c.y1 - c.y0) * float(rng.uniform(0.0, 0.12))
        row[hi] = _Cell(c.char, c.x0, c.y0 + shrink / 2, c.x1, c.y1 - shrink / 2)
        return cells + row
    # two-line plates: top line region + type number (or use char), bottom line the serial
    s = H / 170.0
    top_y0, top_y1 = j(12, 3) * s, j(62, 3) * s
    bot_y0, bot_y1 = j(72, 3) * s, (H - j(10, 3) * s)
    if style.color == "orange":
        reg = t.region or ""
        top = [(ch, 1.0) for ch in reg]
        cells = _row(top, W * 0.25, W * 0.8, top_y0, top_y1, {0: 1.2}) if top else []
        bottom = [(d, 0.8) for d in tn] + [(uc, 0.7)] + [(d, 1.0) for d in serial]
        cells += _row(
            bottom,
            j(18, 4) * s,
            W - j(16, 4) * s,
            bot_y0,
            bot_y1,
            {len(tn) - 1: 0.25, len(tn): 0.25},
        )
        return cells
    # Plates with a region mostly put the use char at the bottom left (`서울 41` over
    # `거 1086`), though DOMAIN.md also lists `서울 36 러` on one line; plates without a region
    # put it on top (`42 무` over `1608`).
    use_on_top = rng.random() < (0.15 if t.region else 0.9)
    top_chars = [(ch, 1.1) for ch in (t.region or "")] + [(d, 0.9) for d in tn]
    if use_on_top:
        top_chars.append((uc, 1.1))
    if style.name == "green-2line-noregion":
        # real ones spread `42 무` wide: its top line spans 41-48% of the plate
        top_w = W * float(rng.uniform(0.31, 0.48))
    else:
        top_w = sum(w for _, w in top_chars) * j(38, 5) * s
    gaps_top: dict[int, float] = {}
    if t.region:
        gaps_top[1] = j(0.4, 0.15)
    if use_on_top:
        gaps_top[len(top_chars) - 2] = j(0.4, 0.15)
    cx = W / 2 + float(rng.uniform(-8, 8)) * s
    cells = _row(top_chars, cx - top_w / 2, cx + top_w / 2, top_y0, top_y1, gaps_top)
    bot_x0, bot_x1 = j(20, 6) * s, W - j(18, 6) * s
    if use_on_top:
        inset = j(12, 9) * s  # the serial alone spans most of the plate
        cells += _row(
            [(d, 1.0) for d in serial], bot_x0 + inset, bot_x1 - inset, bot_y0, bot_y1, {}
        )
        return cells
    hw = j(0.95, 0.1)
    bottom = [(uc, hw)] + [(d, 1.0) for d in serial]
    row = _row(bottom, bot_x0, bot_x1, bot_y0, bot_y1, {0: j(0.25, 0.1)})
    c = row[0]
    hh = (c.y1 - c.y0) * float(rng.uniform(0.5, 0.9))  # use char smaller, centred
    cy = (c.y0 + c.y1) / 2
    row[0] = _Cell(c.char, c.x0, cy - hh / 2, c.x1, cy + hh / 2)
    return cells + row


def stamp(canvas: np.ndarray, mask: np.ndarray, x0: int, y0: int, ink: RGB) -> None:
    """Alpha-blend ``ink`` through ``mask`` onto ``canvas`` at ``(x0, y0)`` (clipped)."""
    h, w = mask.shape
    H, W = canvas.shape[:2]
    xa, ya, xb, yb = max(0, x0), max(0, y0), min(W, x0 + w), min(H, y0 + h)
    if xa >= xb or ya >= yb:
        return
    m = effects.channels3(mask[ya - y0 : yb - y0, xa - x0 : xb - x0].astype(np.float32) / 255.0)
    region = canvas[ya:yb, xa:xb].astype(np.float32)
    canvas[ya:yb, xa:xb] = (region * (1 - m) + np.array(ink, np.float32) * m).astype(np.uint8)


def _ev_marks(rng: np.random.Generator, canvas: np.ndarray, s: float) -> None:
    """The marks of an electric car's plate, in blue at ``s`` px/mm: a car in a square
    frame over a round seal at the left, a lightning bolt at the right."""
    H, W = canvas.shape[:2]
    blue = (_jit(rng, 40, 25), _jit(rng, 110, 30), _jit(rng, 195, 25))
    line = max(1, round(float(rng.uniform(1.0, 2.0)) * s))
    x = round(float(rng.uniform(15, 20)) * s)
    r = max(2, round(float(rng.uniform(11, 15)) * s))
    yt, yb = round(H * float(rng.uniform(0.27, 0.35))), round(H * float(rng.uniform(0.66, 0.74)))
    # a square frame with a car's roofline and wheels inside
    cv2.rectangle(canvas, (x - r, yt - round(r * 0.8)), (x + r, yt + round(r * 0.8)), blue, line)
    roof = np.array(
        [
            [x - r * 0.7, yt + r * 0.3],
            [x - r * 0.35, yt - r * 0.35],
            [x + r * 0.35, yt - r * 0.35],
            [x + r * 0.7, yt + r * 0.3],
        ],
        np.int32,
    )
    cv2.polylines(canvas, [roof], False, blue, line, lineType=cv2.LINE_AA)
    for dx in (-0.4, 0.4):
        cv2.circle(canvas, (round(x + dx * r), round(yt + r * 0.4)), max(1, r // 5), blue, -1)
    # a round seal: a ring with an S-shaped split
    if rng.random() < 0.9:
        seal = (_jit(rng, 90, 40), _jit(rng, 140, 40), _jit(rng, 200, 30))
        cv2.circle(canvas, (x, yb), r, seal, line, lineType=cv2.LINE_AA)
        cv2.ellipse(canvas, (x - r // 2, yb), (r // 2, r // 2), 0, 180, 360, seal, line)
        cv2.ellipse(canvas, (x + r // 2, yb), (r // 2, r // 2), 0, 0, 180, seal, line)
    # a lightning bolt at the right, from top right to bottom left
    if rng.random() < 0.9:
        bx, by = W - round(float(rng.uniform(13, 18)) * s), round(H * float(rng.uniform(0.5, 0.65)))
        h = H * float(rng.uniform(0.28, 0.42))
        pts = np.array(
            [[0.25, -0.5], [-0.3, 0.08], [0.02, 0.08], [-0.25, 0.5], [0.3, -0.08], [-0.02, -0.08]]
        )
        poly = np.round(pts * h + np.array([bx, by])).astype(np.int32)
        cv2.fillPoly(canvas, [poly], blue, lineType=cv2.LINE_AA)


@dataclass(frozen=True)
class RenderedPlate:
    """A front-on plate image and what is written on it."""

    image: np.ndarray  # H x W x 3 uint8
    style: PlateStyle
    text: PlateText
    #: Its "1"s are drawn as bare upright stems (older plates) rather than with a flag.
    bare_one: bool
    #: Its "3"s are drawn with a flat top (older plates) rather than the font's round one.
    flat_three: bool
    #: Its use syllable (하, 허 or 호) is drawn with the plate typeface's ㅎ
    #: (:func:`~kplate.synth.fonts.plate_hieut`) rather than the font's.
    plate_hieut: bool = False


def render_plate(
    rng: np.random.Generator,
    style: PlateStyle,
    plate_text: PlateText,
    px_per_mm: float,
    *,
    hieut_share: float = 0.0,
) -> RenderedPlate:
    """Render ``plate_text`` on a plate of ``style`` at ``px_per_mm`` resolution.

    ``hieut_share``: the share of plates with the use syllable 하, 허 or 호 that letter it
    with the plate typeface's ㅎ (:func:`~kplate.synth.fonts.plate_hieut`). The draw that
    picks them is made only for those plates and only when the share is above 0, so other
    plates, and every plate at 0, render as they would without it.
    """
    W_mm, H_mm = style.size_mm
    W, H = max(8, round(W_mm * px_per_mm)), max(4, round(H_mm * px_per_mm))
    bg, ink = _colors(rng, style.color)
    canvas = np.empty((H, W, 3), np.uint8)
    canvas[:] = bg
    # gentle shading across the plate (embossed sheet, light)
    if rng.random() < 0.7:
        grad = np.linspace(
            float(rng.uniform(-18, 6)), float(rng.uniform(-6, 18)), W, dtype=np.float32
        )
        grad3 = np.repeat(grad[:, None], 3, axis=1)  # (W, 3): rows add as one contiguous run
        canvas = np.clip(canvas.astype(np.float32) + grad3, 0, 255).astype(np.uint8)
    s = px_per_mm
    # raised border
    if rng.random() < 0.85:
        inset = max(1, round(float(rng.uniform(2, 5)) * s))
        thick = max(1, round(float(rng.uniform(1.0, 3.0)) * s))
        edge = tuple(int(c) for c in (np.array(ink) * 0.5 + np.array(bg) * 0.5))
        if rng.random() < 0.5:
            edge = ink
        cv2.rectangle(
            canvas,
            (inset, inset),
            (W - 1 - inset, H - 1 - inset),
            edge,
            thick,
            lineType=cv2.LINE_AA,
        )
    if style.name.endswith("band"):
        band_w = round(45 * s)
        canvas[:, :band_w] = (
            int(rng.integers(20, 50)),
            int(rng.integers(50, 90)),
            int(rng.integers(130, 180)),
        )
        cv2.circle(
            canvas,
            (band_w // 2, round(H * 0.35)),
            max(1, round(12 * s)),
            (200, 200, 215),
            -1,
            lineType=cv2.LINE_AA,
        )
        kor = fonts.text_mask(str(fonts.find_fonts()[0]), "KOR", max(4, round(16 * s)))
        kw = max(1, round(band_w * 0.7))
        kor = cv2.resize(kor, (kw, max(1, round(kor.shape[0] * kw / max(1, kor.shape[1])))))
        stamp(canvas, kor, (band_w - kw) // 2, round(H * 0.62), (240, 240, 240))
    if style.name == "ev-blue":
        _ev_marks(rng, canvas, s)
    elif style.color == "orange" and rng.random() < 0.7:  # a seal at the left
        r = max(1, round(9 * s))
        cv2.circle(
            canvas,
            (round(14 * s), round(H * 0.3)),
            r,
            ink,
            max(1, round(1.5 * s)),
            lineType=cv2.LINE_AA,
        )
    font_paths = fonts.find_fonts()
    font = str(font_paths[int(rng.integers(len(font_paths)))])
    hangul_font = (
        font if rng.random() < 0.7 else str(font_paths[int(rng.integers(len(font_paths)))])
    )
    fill = float(rng.uniform(0.72, 0.92))  # glyph width share of its cell
    bold = int(rng.integers(-1, 2)) if s >= 1.0 else 0
    weight = int(rng.choice((-2, -1, 0, 0, 1, 2)))  # stroke width, at the glyph's size
    # older plates (most two-line ones) draw "1" as a bare stem, newer ones with a flag
    bare_one = rng.random() < (0.6 if style.layout == "two-line" else 0.2)
    # and "3" with a flat top (older plates, and some newer ones)
    flat_three = bare_one or rng.random() < 0.1
    hieut = (
        hieut_share > 0
        and plate_text.use_char in fonts.HIEUT_SYLLABLES
        and rng.random() < hieut_share
    )
    cells = _layout_cells(rng, style, plate_text)
    for cell in cells:
        is_digit = cell.char.isdigit()
        if cell.char == "1" and bare_one:
            g = fonts.plain_one(font, weight)
        elif cell.char == "3" and flat_three:
            g = fonts.flat_three(font, weight)
        elif hieut and cell.char == plate_text.use_char:
            g = fonts.plate_hieut(hangul_font, cell.char, weight)
        else:
            g = fonts.glyph(font if is_digit else hangul_font, cell.char, weight)
        cw = (cell.x1 - cell.x0) * (fill if is_digit else min(1.0, fill + 0.08))
        ch = cell.y1 - cell.y0
        gw = max(1, round(cw * s))
        gh = max(1, round(ch * s))
        if cell.char == "1":  # a "1" keeps its narrow stem instead of being stretched to a bar
            gw = max(1, round(min(gw, g.shape[1] * gh / max(1, g.shape[0]) * 1.3)))
        m = cv2.resize(
            g, (gw, gh), interpolation=cv2.INTER_AREA if gh < g.shape[0] else cv2.INTER_LINEAR
        )
        if bold:
            k = np.ones((2, 2), np.uint8)
            m = cv2.dilate(m, k) if bold > 0 else cv2.erode(m, k)
        cx = (cell.x0 + cell.x1) / 2 * s
        stamp(canvas, m, round(cx - gw / 2), round(cell.y0 * s), ink)
    # bolts: one-line plates above the text, two-line plates either side of the top line
    if rng.random() < 0.6:
        # green plates without a region carry large bolt heads beside their wide top line
        r_mm = float(
            rng.uniform(7, 13) if style.name == "green-2line-noregion" else rng.uniform(4, 7)
        )
        r = max(1, round(r_mm * s))
        if style.layout == "one-line":
            yb = round(H * float(rng.uniform(0.12, 0.2)))
            xs: tuple[int, ...] = (round(W * 0.2), round(W * 0.8))
        else:
            top = [c for c in cells if c.y1 < H_mm * 0.5] or cells
            x_mm = float(rng.uniform(0.08, 0.22)) * W_mm
            xl = min(x_mm, min(c.x0 for c in top) - r_mm - 3)
            xr = max(W_mm - x_mm, max(c.x1 for c in top) + r_mm + 3)
            yb = round(float(np.mean([(c.y0 + c.y1) / 2 for c in top])) * s)
            # no room beside the text: no bolts
            xs = (round(xl * s), round(xr * s)) if xl > r_mm and xr < W_mm - r_mm else ()
        metal = int(rng.integers(120, 230))
        # chrome bolts, or bolt caps painted the plate colour
        cap = (metal,) * 3 if rng.random() < 0.6 else tuple(int(c * 0.85) for c in bg)
        for xb in xs:
            cv2.circle(canvas, (xb, yb), r, cap, -1, lineType=cv2.LINE_AA)
            cv2.circle(canvas, (xb, yb), r, (60, 60, 60), 1, lineType=cv2.LINE_AA)
    return RenderedPlate(
        image=canvas,
        style=style,
        text=plate_text,
        bare_one=bare_one,
        flat_three=flat_three,
        plate_hieut=hieut,
    )
