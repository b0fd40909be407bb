"""Full synthetic scenes (plates on car-like fronts and rears) and rectified plate crops.

Every sample is a pure function of ``(seed, index)``: the same pair gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from kplate.plates import PlateText
from kplate.result import hull
from kplate.synth import backgrounds, effects, fonts
from kplate.synth.plate import RGB, PlateStyle, pick_style, render_plate, stamp, text_for
from kplate.targets import rectify

Corners = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]

#: Probability of 0, 1, 2, 3, 4 plates in a scene.
PLATE_COUNT_P = (0.08, 0.52, 0.22, 0.11, 0.07)
#: Plate widths (px) of rendered crops, drawn log-uniformly.
CROP_MIN_W, CROP_MAX_W = 48.0, 300.0
#: Car paint: mostly white, black, grey and silver, as on Korean roads; the rest any colour.
_PAINTS = ((235, 235, 235), (20, 20, 22), (90, 92, 96), (170, 172, 176), (40, 45, 70))
_PAINT_P = np.array((0.34, 0.27, 0.17, 0.17, 0.05))
_PAINT_P = _PAINT_P / _PAINT_P.sum()
#: Share of plates whose use syllable is 하, 허 or 호 that letter it as the plate typeface
#: does (an upright tick over the bar, a tall narrow ring: ``fonts.plate_hieut``) rather
#: than as the fonts do, in scenes, crops and non-plate cuts; real-dev read such plates as
#: 마. 0 renders every sample as before the option. Measured in docs/model-history.md: 0.5 in
#: gen-1206b, 0.9 in gen-1206d, gen-1206e and the detector and reader of gen-1206g and
#: gen-1206h (real-dev's two 하 plates read right in gen-1206d).
HIEUT_TYPEFACE_SHARE = 0.0
#: Share of scenes with one more plate across the frame's left, right, top or bottom edge,
#: ``CUT_PLATE_INSIDE`` of its width (or height) inside, left unlabelled as real photos'
#: labels leave such plates out (real-dev's `cvlab_038`). Drawn after the labelled plates
#: from a random stream of its own, and not at all at 0, so the labelled plates and the rest
#: of the scene are as without it. Measured in docs/model-history.md: 0.15 in gen-1206e (no false
#: plate left on real-dev), gen-1206g and gen-1206h.
CUT_PLATE_SHARE = 0.0
#: A cut plate's share of its width (left and right edges) or height (top, bottom) inside.
CUT_PLATE_INSIDE = (0.2, 0.85)
#: A cut plate's width as a share of the frame's, drawn log-uniformly.
CUT_PLATE_WIDTH = (0.05, 0.35)


@dataclass(frozen=True)
class PlateLabel:
    """Ground truth of one plate in an image (pixels of that image)."""

    text: PlateText
    layout: str
    color: str
    style: str
    corners: Corners  # clockwise from top-left

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The axis-aligned hull of the corners ``(x1, y1, x2, y2)``."""
        return hull(self.corners)

    def to_json(self) -> dict[str, Any]:
        """The row fields of ``labels.jsonl`` (without ``file`` and ``kind``)."""
        t = self.text
        return {
            "text": t.text,
            "box": [round(v, 1) for v in self.box],
            "layout": self.layout,
            "color": self.color,
            "corners": [[round(x, 1), round(y, 1)] for x, y in self.corners],
            "region": t.region,
            "type_number": t.type_number,
            "use_char": t.use_char,
            "serial": t.serial,
            "style": self.style,
        }


@dataclass(frozen=True)
class Sample:
    """An image (RGB ``uint8``) and the plates in it."""

    image: np.ndarray
    plates: tuple[PlateLabel, ...] = field(default_factory=tuple)


#: One random stream per kind of sample, so that adding a kind leaves the others' pixels alone.
_STREAMS = {"scenes": 0, "crops": 1, "non-plates": 2, "loose-crops": 3, "cut-plates": 4}


def sample_rng(seed: int, index: int, kind: str) -> np.random.Generator:
    """The generator of sample ``index`` of ``kind``: independent of workers and of other samples.

    Raises:
        ValueError: ``kind`` is not one of ``_STREAMS``.
    """
    if kind not in _STREAMS:
        raise ValueError(f"kind must be one of {tuple(_STREAMS)}, got {kind!r}")
    return np.random.default_rng([seed, index, _STREAMS[kind]])


def _share(value: float | None, default: float, name: str) -> float:
    """``value``, or the module's ``default`` when ``None``.

    Raises:
        ValueError: the share is not in [0, 1].
    """
    share = default if value is None else value
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {share}")
    return share


# ---------------------------------------------------------------- geometry


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _project(points: np.ndarray, rot: np.ndarray, dist: float) -> np.ndarray:
    """Pinhole projection of planar points (x, y, 0) rotated by ``rot`` at distance ``dist``."""
    p3 = np.concatenate([points, np.zeros((len(points), 1))], axis=1) @ rot.T
    z = p3[:, 2] + dist
    return p3[:, :2] * (dist / z)[:, None]


def _view(
    rng: np.random.Generator,
    max_yaw: float = 35,
    max_pitch: float = 15,
    max_roll: float = 8,
    roll_deg: float | None = None,
) -> tuple[np.ndarray, float]:
    """A random plate pose: yaw and pitch uniform, roll normal with a standard deviation of
    ``max_roll / 2.5`` clipped at ``max_roll`` degrees, or ``roll_deg`` when given."""
    yaw = math.radians(float(rng.uniform(-max_yaw, max_yaw)) * (1.0 if rng.random() < 0.6 else 0.4))
    pitch = math.radians(float(rng.uniform(-max_pitch, max_pitch)))
    if roll_deg is None:
        roll = math.radians(float(rng.normal(0, max_roll / 2.5)))
        roll = max(-math.radians(max_roll), min(math.radians(max_roll), roll))
    else:
        roll = math.radians(roll_deg)
    return _rotation(yaw, pitch, roll), float(rng.uniform(2.5, 8.0))


#: Share of scene plates seen with a strong roll (a hand-held or tilted camera), drawn
#: uniformly up to ``SCENE_STRONG_ROLL`` degrees either way; the others roll by a normal of
#: 3.2 degrees clipped at 8.
SCENE_STRONG_ROLL_SHARE = 0.2
SCENE_STRONG_ROLL = 22.0


def _scene_view(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The view of a plate in a scene: ``_view``'s, with a strong roll for some plates."""
    if rng.random() < SCENE_STRONG_ROLL_SHARE:
        return _view(rng, roll_deg=float(rng.uniform(-SCENE_STRONG_ROLL, SCENE_STRONG_ROLL)))
    return _view(rng)


# ---------------------------------------------------------------- car patch


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with a wide ``sigma``, done on a reduced copy (area-averaged, so a thin
    line keeps its mass) and scaled back up: the same look at a fraction of the cost."""
    h, w = mask.shape
    f = max(1, int(sigma / 3))
    if f == 1:
        return np.asarray(cv2.GaussianBlur(mask, (0, 0), sigma), np.float32)
    small = cv2.resize(mask, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f)
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR), np.float32)


def _body(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Glossy car paint: a common paint colour, shading, and soft reflections of the sky."""
    if rng.random() < 0.82:
        paint = np.array(_PAINTS[int(rng.choice(len(_PAINTS), p=_PAINT_P))], np.float32)
        paint += rng.normal(0, 8, size=3).astype(np.float32)
    else:
        paint = rng.integers(10, 250, size=3).astype(np.float32)
    # one light map (shading, a smooth random field, bright diagonal streaks), added once
    shade = np.linspace(float(rng.uniform(-40, 0)), float(rng.uniform(0, 40)), h, dtype=np.float32)
    field = rng.normal(0, 1, size=(3, 4)).astype(np.float32)
    field = np.asarray(cv2.resize(field, (w, h), interpolation=cv2.INTER_CUBIC), np.float32)
    light = field * float(rng.uniform(5, 35))
    light += shade[:, None]
    for _ in range(int(rng.integers(0, 4))):
        streak = np.zeros((h, w), np.float32)
        x = int(rng.integers(0, w))
        dx = int(rng.uniform(-0.5, 0.5) * h)
        cv2.line(streak, (x, 0), (x + dx, h), 1.0, max(1, int(w * rng.uniform(0.01, 0.08))))
        glow = _soft(streak, max(1.0, w * 0.02))
        light += np.multiply(glow, float(rng.uniform(30, 120)), out=glow)
    img = np.asarray(cv2.merge([light + c for c in paint]))  # light + paint, channel by channel
    return np.clip(img, 0, 255, out=img).astype(np.uint8)


def _car_patch(
    rng: np.random.Generator, plate: np.ndarray, with_car: bool
) -> tuple[np.ndarray, tuple[float, float]]:
    """Surround a plate image with a frame and (optionally) a car-like front or rear.

    Returns the patch and the plate's top-left offset inside it.
    """
    ph, pw = plate.shape[:2]
    frame = max(1, round(pw * float(rng.uniform(0.0, 0.03)))) if rng.random() < 0.6 else 0
    if not with_car:
        m = round(pw * float(rng.uniform(0.02, 0.12)))
        H, W = ph + 2 * m, pw + 2 * m
        patch = np.empty((H, W, 3), np.uint8)
        patch[:] = rng.integers(0, 255, size=3)
        ox, oy = m, m
    else:
        W = int(pw * float(rng.uniform(2.2, 4.0)))
        H = int(max(ph * 3.0, pw * float(rng.uniform(0.9, 1.6))))
        patch = _body(rng, H, W)
        ox = int((W - pw) / 2 + float(rng.uniform(-0.08, 0.08)) * W)
        oy = int(H * float(rng.uniform(0.5, 0.72)))
        oy = min(oy, H - ph - 2)
        # bumper band, lights, grille or rear window
        dark = tuple(int(c) for c in rng.integers(10, 70, size=3))
        by0 = max(0, oy - int(ph * 0.4))
        cv2.rectangle(patch, (0, by0), (W, min(H, oy + int(ph * 1.5))), dark, -1)
        lw, lh = int(W * 0.16), int(ph * float(rng.uniform(0.6, 1.2)))
        ly = max(0, by0 - lh - int(ph * 0.3))
        lc = (240, 240, 220) if rng.random() < 0.5 else (200, 30, 30)
        for lx in (int(W * 0.05), int(W * 0.79)):
            cv2.ellipse(patch, (lx + lw // 2, ly + lh // 2), (lw // 2, lh // 2), 0, 0, 360, lc, -1)
        gy0 = max(0, ly - int(ph * 0.2))
        if rng.random() < 0.5:
            cv2.rectangle(patch, (int(W * 0.3), gy0), (int(W * 0.7), by0), (30, 30, 30), -1)
            for gx in range(int(W * 0.3), int(W * 0.7), max(3, W // 40)):
                cv2.line(patch, (gx, gy0), (gx, by0), (90, 90, 90), 1)
        else:
            cv2.rectangle(
                patch, (int(W * 0.15), 0), (int(W * 0.85), max(1, gy0 - ph)), (40, 50, 60), -1
            )
        if rng.random() < 0.6:  # the maker's badge, centred between the lights
            ew = max(6, int(pw * float(rng.uniform(0.25, 0.55))))
            ey = max(ew // 2, min(by0, ly + lh // 2) - int(ew * float(rng.uniform(0.3, 0.9))))
            _emblem(rng, patch, ox + pw // 2 + int(rng.uniform(-0.05, 0.05) * W), ey, ew)
        if rng.random() < 0.4:  # fog lights or reflectors in the bumper, beside the plate
            fw, fh = (
                int(pw * float(rng.uniform(0.2, 0.45))),
                max(3, int(ph * rng.uniform(0.3, 0.7))),
            )
            fy = oy + ph // 2 + int(ph * float(rng.uniform(-0.5, 0.8))) - fh // 2
            _lamp(rng, patch, int(W * float(rng.uniform(0.03, 0.12))), fy, fw, fh)
            _lamp(rng, patch, W - fw - int(W * float(rng.uniform(0.03, 0.12))), fy, fw, fh)
        if rng.random() < 0.3:  # a sticker or dealer badge with digits near the plate
            _draw_text_box(
                rng,
                patch,
                int(W * float(rng.uniform(0.05, 0.6))),
                max(0, oy - 2 * ph),
                max(6, ph // 3),
            )
    if frame:
        fc = (15, 15, 15) if rng.random() < 0.7 else (180, 180, 185)
        cv2.rectangle(patch, (ox - frame, oy - frame), (ox + pw + frame, oy + ph + frame), fc, -1)
    patch[oy : oy + ph, ox : ox + pw] = plate
    return patch, (float(ox), float(oy))


_BADGE_TEXT = ("KIA", "HYUNDAI", "GENESIS", "SM", "BMW", "KG", "RENAULT", "VW", "LEXUS", "GM")


def _chrome(rng: np.random.Generator) -> tuple[int, int, int]:
    v = int(rng.integers(150, 250))
    return (v, v, min(255, v + int(rng.integers(0, 12))))


def _emblem(rng: np.random.Generator, img: np.ndarray, cx: int, cy: int, w: int) -> None:
    """A car maker's badge: a chrome or dark oval with a slanted letter or a word inside
    (real photos' commonest false plates)."""
    h = max(3, int(w * float(rng.uniform(0.4, 0.75))))
    axes = (w // 2, h // 2)
    chrome = _chrome(rng)
    fill = rng.random()
    if fill < 0.4:
        dark = int(rng.integers(10, 60))
        cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, (dark, dark, dark + 5), -1, cv2.LINE_AA)
    elif fill < 0.6:
        cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, chrome, -1, cv2.LINE_AA)
        r, g, b = chrome
        chrome = (int(r * 0.3), int(g * 0.3), int(b * 0.3))  # dark lettering on solid chrome
    t = max(1, w // int(rng.integers(10, 20)))
    if rng.random() < 0.85:
        cv2.ellipse(img, (cx, cy), axes, 0, 0, 360, chrome, t, cv2.LINE_AA)
    if rng.random() < 0.5:  # a slanted H-like letter
        dx, dy = int(w * 0.18), int(h * 0.3)
        sl = int(w * 0.06)
        for sx in (-dx, dx):
            cv2.line(img, (cx + sx + sl, cy - dy), (cx + sx - sl, cy + dy), chrome, t, cv2.LINE_AA)
        cv2.line(img, (cx - dx, cy + dy // 4), (cx + dx, cy - dy // 4), chrome, t, cv2.LINE_AA)
        return
    word = str(rng.choice(_BADGE_TEXT))
    font = fonts.find_fonts(fonts.SIGN_FONTS)
    mask = fonts.text_mask(str(font[int(rng.integers(len(font)))]), word, max(6, h // 2))
    mw, mh = max(1, int(w * 0.7)), max(1, int(h * 0.45))
    mask = cv2.resize(mask, (mw, mh), interpolation=cv2.INTER_AREA)
    x0, y0 = cx - mw // 2, cy - mh // 2
    Hh, Ww = img.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + mw > Ww or y0 + mh > Hh:
        return  # a word cut by the patch edge is left out, not clipped
    stamp(img, mask, x0, y0, chrome)


def _lamp(rng: np.random.Generator, img: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    """A fog lamp or reflector: a chrome-rimmed rounded box with bright slats."""
    if w < 4 or h < 3:
        return
    dark = int(rng.integers(10, 60))
    cv2.rectangle(img, (x, y), (x + w, y + h), (dark, dark, dark), -1)
    cv2.rectangle(img, (x, y), (x + w, y + h), _chrome(rng), max(1, h // 8), cv2.LINE_AA)
    for k in range(1, int(rng.integers(2, 6))):
        sx = x + k * w // 6
        cv2.line(img, (sx, y + h // 4), (sx + w // 8, y + 3 * h // 4), _chrome(rng), 1, cv2.LINE_AA)


# ---------------------------------------------------------------- distractors

_SIGN_WORDS = (
    "주차금지",
    "출입구",
    "안전운전",
    "대리운전",
    "세차장",
    "카센터",
    "주유소",
    "편의점",
    "약국",
    "병원",
    "서울시청",
    "정비",
    "타이어",
    "배달",
    "택시",
    "학원",
    "부동산",
    "커피",
    "치킨",
    "렌터카",
    "공영주차장",
    "견인지역",
    "어린이보호구역",
    "우회전",
    "EXIT",
    "PARKING",
    "SALE",
)


def _distractor_text(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.3:
        return f"010-{int(rng.integers(1000, 10000))}-{int(rng.integers(1000, 10000))}"
    if r < 0.45:
        return f"{int(rng.integers(2, 100))}-{int(rng.integers(100, 10000))}"
    if r < 0.6:
        return str(int(rng.integers(1000, 100000)))
    if r < 0.8:
        return str(rng.choice(_SIGN_WORDS))
    return f"{rng.choice(_SIGN_WORDS)} {int(rng.integers(1, 1000))}"


def _random_rgb(rng: np.random.Generator) -> RGB:
    """A uniformly random colour."""
    r, g, b = (int(c) for c in rng.integers(0, 255, size=3))
    return (r, g, b)


def _draw_text_box(rng: np.random.Generator, img: np.ndarray, x: int, y: int, height: int) -> None:
    """A sign or sticker: a coloured box with non-plate text on it."""
    text = _distractor_text(rng)
    font = fonts.find_fonts(fonts.SIGN_FONTS)
    path = str(font[int(rng.integers(len(font)))])
    mask = fonts.text_mask(path, text, height)
    mh, mw = mask.shape
    pad = max(2, height // 4)
    H, W = img.shape[:2]
    x1, y1 = min(W, x + mw + 2 * pad), min(H, y + mh + 2 * pad)
    if x1 - x <= 2 * pad or y1 - y <= 2 * pad:
        return
    bg = _random_rgb(rng)
    ink: RGB = (255 - bg[0], 255 - bg[1], 255 - bg[2]) if rng.random() < 0.8 else _random_rgb(rng)
    if rng.random() < 0.8:
        cv2.rectangle(img, (x, y), (x1, y1), bg, -1)
    stamp(img, mask[: y1 - y - 2 * pad, : x1 - x - 2 * pad], x + pad, y + pad, ink)


# ---------------------------------------------------------------- placing a plate


@dataclass(frozen=True)
class CutPlacement:
    """Where a plate cut by the frame's edge goes: the ``edge`` it crosses (``left``,
    ``right``, ``top`` or ``bottom``), the share of its width (or height) ``inside`` the
    frame, and its place ``along`` the edge, 0 to 1 (inside the frame that way)."""

    edge: str
    inside: float
    along: float


CUT_EDGES = ("left", "right", "top", "bottom")


def _cut_centre(
    cut: CutPlacement, lo: np.ndarray, hi: np.ndarray, width: int, height: int
) -> tuple[float, float]:
    """The centre that puts a plate reaching from ``lo`` to ``hi`` ``(x, y)`` around its
    centre across ``cut.edge`` of a ``width`` x ``height`` frame, ``cut.inside`` of it in.

    Raises:
        ValueError: ``cut.edge`` is not one of :data:`CUT_EDGES`.
    """
    inside = cut.inside * (hi - lo)

    def along(axis: int, size: int) -> float:
        first, last = 2 - lo[axis], size - 2 - hi[axis]
        return float(first + cut.along * max(0.0, last - first))

    if cut.edge == "left":
        return float(inside[0] - hi[0]), along(1, height)
    if cut.edge == "right":
        return float(width - inside[0] - lo[0]), along(1, height)
    if cut.edge == "top":
        return along(0, width), float(inside[1] - hi[1])
    if cut.edge == "bottom":
        return along(0, width), float(height - inside[1] - lo[1])
    raise ValueError(f"edge must be one of {CUT_EDGES}, got {cut.edge!r}")


def _place(
    rng: np.random.Generator,
    canvas: np.ndarray,
    protect: np.ndarray,
    style: PlateStyle,
    plate_text: PlateText,
    target_w: float,
    center: tuple[float, float] | None,
    with_car: bool,
    view: tuple[np.ndarray, float] | None = None,
    hieut_share: float = 0.0,
    cut: CutPlacement | None = None,
) -> Corners | None:
    """Render a plate of ``target_w`` pixels, put it in perspective on ``canvas``.

    Pixels where ``protect`` is set (earlier plates) are not painted. Returns the plate
    corners, or ``None`` when it does not fit inside the canvas. ``hieut_share`` as
    :func:`~kplate.synth.plate.render_plate`'s. With ``cut``, the plate is placed across the
    canvas's edge as it says (``center`` unused), its corners partly outside.
    """
    H, W = canvas.shape[:2]
    px_per_mm = max(0.08, target_w * float(rng.uniform(1.0, 1.4)) / style.size_mm[0])
    plate = render_plate(rng, style, plate_text, px_per_mm, hieut_share=hieut_share).image
    if rng.random() < 0.25:
        plate = effects.dirt(rng, plate)
    patch, (ox, oy) = _car_patch(rng, plate, with_car)
    ph, pw = plate.shape[:2]
    rot, dist_k = view if view is not None else _scene_view(rng)
    # patch coordinates centred on the plate centre
    cx0, cy0 = ox + pw / 2, oy + ph / 2
    ph_, pw_ = patch.shape[:2]
    src_patch = np.array([[0, 0], [pw_, 0], [pw_, ph_], [0, ph_]], np.float64)
    src_plate = np.array([[ox, oy], [ox + pw, oy], [ox + pw, oy + ph], [ox, oy + ph]], np.float64)
    centred = lambda a: a - np.array([cx0, cy0])  # noqa: E731
    dist = dist_k * pw
    proj_plate = _project(centred(src_plate), rot, dist)
    proj_patch = _project(centred(src_patch), rot, dist)
    width_now = float(np.linalg.norm(proj_plate[1] - proj_plate[0]))
    scale = target_w / max(width_now, 1e-6)
    proj_plate *= scale
    proj_patch *= scale
    lo, hi = proj_plate.min(0), proj_plate.max(0)
    if hi[0] - lo[0] > W - 4 or hi[1] - lo[1] > H - 4:
        return None
    if cut is not None:
        cx, cy = _cut_centre(cut, lo, hi, W, H)
    elif center is None:
        cx = float(rng.uniform(2 - lo[0], W - 2 - hi[0]))
        cy = float(rng.uniform(2 - lo[1], H - 2 - hi[1]))
    else:
        cx = float(np.clip(center[0], 2 - lo[0], W - 2 - hi[0]))
        cy = float(np.clip(center[1], 2 - lo[1], H - 2 - hi[1]))
    dst_plate = proj_plate + np.array([cx, cy])
    dst_patch = proj_patch + np.array([cx, cy])
    # warp only the part of the canvas the patch covers
    x0 = int(max(0, math.floor(dst_patch[:, 0].min())))
    y0 = int(max(0, math.floor(dst_patch[:, 1].min())))
    x1 = int(min(W, math.ceil(dst_patch[:, 0].max()) + 1))
    y1 = int(min(H, math.ceil(dst_patch[:, 1].max()) + 1))
    if x1 <= x0 or y1 <= y0:
        return None
    M = cv2.getPerspectiveTransform(
        src_patch.astype(np.float32), (dst_patch - [x0, y0]).astype(np.float32)
    )
    size = (x1 - x0, y1 - y0)
    warped = cv2.warpPerspective(
        patch, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpPerspective(
        np.full(patch.shape[:2], 255, np.uint8), M, size, flags=cv2.INTER_LINEAR
    )
    a = alpha.astype(np.float32) / 255.0
    a *= protect[y0:y1, x0:x1] == 0
    a = effects.channels3(a)
    region = canvas[y0:y1, x0:x1]
    blend = region * (1 - a)
    blend += warped * a
    region[:] = blend
    return _as_corners(dst_plate)


def _cut_plate(
    seed: int,
    index: int,
    canvas: np.ndarray,
    protect: np.ndarray,
    share: float,
    hieut_share: float,
) -> Corners | None:
    """In ``share`` of the scenes, one more plate (on its car, mostly) across an edge of
    ``canvas``, not painted where ``protect`` is set; its corners, partly outside the
    canvas, or ``None`` when the scene has none. Drawn from scene ``index``'s own
    ``cut-plates`` stream, and not at all when ``share`` is 0."""
    if share <= 0:
        return None
    rng = sample_rng(seed, index, "cut-plates")
    if rng.random() >= share:
        return None
    cut = CutPlacement(
        str(rng.choice(CUT_EDGES)), float(rng.uniform(*CUT_PLATE_INSIDE)), float(rng.random())
    )
    style = pick_style(rng)
    plate_text = text_for(rng, style)
    lo, hi = np.log(CUT_PLATE_WIDTH)
    target_w = float(np.exp(rng.uniform(lo, hi))) * canvas.shape[1]
    return _place(
        rng,
        canvas,
        protect,
        style,
        plate_text,
        target_w,
        None,
        with_car=rng.random() < 0.75,
        hieut_share=hieut_share,
        cut=cut,
    )


def _as_corners(points: np.ndarray) -> Corners:
    """Four ``(x, y)`` points as a label's corners, plain floats."""
    a, b, c, d = ((float(x), float(y)) for x, y in points)
    return a, b, c, d


def _occlude(rng: np.random.Generator, img: np.ndarray, corners: Corners) -> None:
    """Cover a small part of a plate (a wiper, a hitch, a leaf)."""
    pts = np.array(corners)
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    w, h = x1 - x0, y1 - y0
    ow, oh = w * float(rng.uniform(0.05, 0.18)), h * float(rng.uniform(0.2, 0.7))
    ox = x0 + (float(rng.uniform(-0.05, 0.05)) * w if rng.random() < 0.5 else w - ow)
    oy = y0 + float(rng.uniform(0, h - oh))
    color = _random_rgb(rng)
    cv2.rectangle(img, (int(ox), int(oy)), (int(ox + ow), int(oy + oh)), color, -1)


# ---------------------------------------------------------------- public API


def render_scene(
    seed: int,
    index: int,
    width: int = 640,
    height: int = 640,
    *,
    hieut_share: float | None = None,
    cut_share: float | None = None,
) -> Sample:
    """Render scene ``index`` of ``seed``: background, 0-4 plated cars, distractors, camera.

    ``hieut_share``: the share of plates lettering 하 허 호 in the plate typeface, by default
    :data:`HIEUT_TYPEFACE_SHARE`. ``cut_share``: the share of scenes with one more, unlabelled
    plate cut by the frame's edge, by default :data:`CUT_PLATE_SHARE`.
    """
    hieut = _share(hieut_share, HIEUT_TYPEFACE_SHARE, "hieut_share")
    cut = _share(cut_share, CUT_PLATE_SHARE, "cut_share")
    rng = sample_rng(seed, index, "scenes")
    img = backgrounds.background(rng, width, height)
    for _ in range(int(rng.integers(0, 4)) if rng.random() < 0.7 else 0):
        _draw_text_box(
            rng,
            img,
            int(rng.integers(0, width - 20)),
            int(rng.integers(0, height - 20)),
            int(rng.integers(8, max(9, height // 10))),
        )
    n = int(rng.choice(len(PLATE_COUNT_P), p=PLATE_COUNT_P))
    protect = np.zeros((height, width), np.uint8)
    labels: list[PlateLabel] = []
    # farther (smaller) plates first, so nearer cars are drawn over them
    widths = sorted(
        float(np.exp(rng.uniform(np.log(0.03), np.log(0.6 if n <= 1 else 0.35)))) * width
        for _ in range(n)
    )
    for width0 in widths:
        style = pick_style(rng)
        plate_text = text_for(rng, style)
        target_w = width0
        for _attempt in range(4):
            corners = _place(
                rng,
                img,
                protect,
                style,
                plate_text,
                target_w,
                None,
                with_car=rng.random() < 0.75,
                hieut_share=hieut,
            )
            if corners is not None:
                break
            target_w *= 0.7
        if corners is None:
            continue
        pts = np.array(corners, np.float64)
        cv2.fillConvexPoly(protect, np.round(pts).astype(np.int32), 1)
        labels.append(PlateLabel(plate_text, style.layout, style.color, style.name, corners))
        if rng.random() < 0.08:
            _occlude(rng, img, corners)
        if rng.random() < 0.08:
            c = pts.mean(0)
            img = effects.glare(
                rng, img, (float(c[0]), float(c[1])), float(np.ptp(pts[:, 0])) * 0.6
            )
    _cut_plate(seed, index, img, protect, cut, hieut)
    img = effects.degrade(rng, img)
    return Sample(image=np.ascontiguousarray(img), plates=tuple(labels))


def jitter_corners(
    rng: np.random.Generator,
    corners: np.ndarray,
    amount: float = 0.06,
    expand: tuple[float, float] = (-0.04, 0.08),
) -> np.ndarray:
    """Perturb plate corners like a detector would: per-corner noise and a margin.

    The spread follows the detector's corner error on held-out synthetic scenes (plates 60 px
    wide or more): there an edge is off by a standard deviation of 4.2% of the plate's width
    sideways and 7.3% of its height up or down, as often inward as outward. These defaults give
    3.5% and 6.3%, leaning outward by 1.0% and 2.2% on average, as a crop is better cut wide
    than through a character (the defaults before gave 2.8% and 4.5%, 2.5% and 3.7% outward).
    """
    c = np.asarray(corners, np.float64)
    w = np.linalg.norm(c[1] - c[0])
    h = np.linalg.norm(c[3] - c[0])
    center = c.mean(0)
    e = float(rng.uniform(*expand))
    ey = e + float(rng.uniform(0, 0.05))
    out = center + (c - center) * np.array([1 + e, 1 + ey])
    out += rng.normal(0, 1, size=(4, 2)) * np.array([w * amount / 2, h * amount])
    return out


def _crop_plate_width(rng: np.random.Generator) -> float:
    """A crop's plate width (px), log-uniform: plates as the reader meets them, rectified from
    the full-resolution photo, where even a distant plate usually spans 50 px or more."""
    return float(np.exp(rng.uniform(np.log(CROP_MIN_W), np.log(CROP_MAX_W))))


def _crop_view(rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """The camera of a crop's small scene: a little milder than a full scene's."""
    return _view(rng, max_yaw=30, max_pitch=12, max_roll=6)


def _degrade_crop(rng: np.random.Generator, canvas: np.ndarray, target_w: float) -> np.ndarray:
    """A crop's camera chain: blur scaled to the plate's width (full below 150 px)."""
    return effects.degrade(rng, canvas, strength=0.8, blur_scale=min(1.0, target_w / 150))


def render_crop(
    seed: int,
    index: int,
    size: tuple[int, int] | None = None,
    loose: bool = False,
    *,
    hieut_share: float | None = None,
) -> Sample:
    """Render a rectified plate crop, as the reader sees one after detection.

    The plate is placed in perspective on a small scene, degraded, then warped back with
    jittered corners (detector error, crop margins). ``size=(w, h)`` fixes the output size;
    by default the crop keeps the plate's aspect at a random resolution.

    ``loose``: cut instead as people and other tools crop plates, the upright box around the
    jittered corners, so the plate keeps its tilt (seen by a hand-held camera: more roll than
    a rectified crop's) and the box's corners show what is around it; by default at the
    box's own aspect. Drawn from a random stream of its own, so the
    rectified crops of a seed stay as they were.

    ``hieut_share``: the share of plates lettering 하 허 호 in the plate typeface, by default
    :data:`HIEUT_TYPEFACE_SHARE`.
    """
    hieut = _share(hieut_share, HIEUT_TYPEFACE_SHARE, "hieut_share")
    rng = sample_rng(seed, index, "loose-crops" if loose else "crops")
    style = pick_style(rng)
    plate_text = text_for(rng, style)
    target_w = _crop_plate_width(rng)
    aspect = style.size_mm[1] / style.size_mm[0]
    cw = int(target_w * 1.7) + 8
    ch = int(target_w * aspect * 2.2) + 8 + (int(target_w * 0.6) if loose else 0)  # loose: roll
    canvas = backgrounds.background(rng, cw, ch, photo_share=0.5)
    protect = np.zeros((ch, cw), np.uint8)
    view = _view(rng, max_yaw=35, max_pitch=15, max_roll=15) if loose else _crop_view(rng)
    corners = _place(
        rng,
        canvas,
        protect,
        style,
        plate_text,
        target_w,
        (cw / 2, ch / 2),
        with_car=rng.random() < 0.5,
        view=view,
        hieut_share=hieut,
    )
    if corners is None:  # cannot happen with this canvas size, but stay safe
        raise RuntimeError(f"crop {index} of seed {seed}: plate did not fit")
    if rng.random() < 0.06:
        _occlude(rng, canvas, corners)
    if rng.random() < 0.06:
        c = np.array(corners).mean(0)
        canvas = effects.glare(rng, canvas, (float(c[0]), float(c[1])), target_w * 0.4)
    canvas = _degrade_crop(rng, canvas, target_w)
    quad = jitter_corners(rng, np.array(corners))
    if loose:
        (x0, y0), (x1, y1) = quad.min(0), quad.max(0)
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    if size is None:
        size = _crop_size(rng, target_w, aspect)
        if loose:  # the plate's height, at the box's own aspect
            size = (max(16, round(size[1] * (x1 - x0) / (y1 - y0))), size[1])
    crop = rectify(canvas, quad, size)
    w, h = size
    plate_corners: Corners = ((0.0, 0.0), (float(w), 0.0), (float(w), float(h)), (0.0, float(h)))
    if loose:  # where the plate is in the box
        scale = np.array([w / (quad[1, 0] - quad[0, 0]), h / (quad[3, 1] - quad[0, 1])])
        plate_corners = _as_corners((np.array(corners) - quad[0]) * scale)
    label = PlateLabel(plate_text, style.layout, style.color, style.name, plate_corners)
    return Sample(image=crop, plates=(label,))


def _crop_size(rng: np.random.Generator, target_w: float, aspect: float) -> tuple[int, int]:
    """A random output size for a crop of a plate ``target_w`` px wide at ``aspect``."""
    h = int(np.clip(target_w * aspect * float(rng.uniform(0.9, 1.3)), 16, 160))
    return (max(16, int(h / aspect)), h)


#: Share of :func:`render_non_plate`'s cuts taken beside a plate on its car (the rest: signs).
NON_PLATE_CAR_SHARE = 0.6


def render_non_plate(
    seed: int,
    index: int,
    size: tuple[int, int] | None = None,
    *,
    hieut_share: float | None = None,
) -> Sample:
    """Render a cut with a plate's shape where there is no plate, as the detector's false boxes
    are: beside, above or below a plate on its car (bumper, lamps, grille, badge, sticker), or
    a sign or sticker with non-plate text. The sample has no plate labels.

    The cut gets the same degradation and corner jitter as :func:`render_crop`'s, and the
    plate beside it the same ``hieut_share``.
    """
    hieut = _share(hieut_share, HIEUT_TYPEFACE_SHARE, "hieut_share")
    rng = sample_rng(seed, index, "non-plates")
    style = pick_style(rng)
    target_w = _crop_plate_width(rng)
    aspect = style.size_mm[1] / style.size_mm[0]
    th = target_w * aspect
    if rng.random() < NON_PLATE_CAR_SHARE:
        cw, ch = int(target_w * 4.5) + 8, int(th * 7) + 8
        canvas = backgrounds.background(rng, cw, ch, photo_share=0.5)
        view = _crop_view(rng)
        plate = _place(
            rng,
            canvas,
            np.zeros((ch, cw), np.uint8),
            style,
            text_for(rng, style),
            target_w,
            (cw / 2, ch / 2),
            with_car=True,
            view=view,
            hieut_share=hieut,
        )
        if plate is None:  # cannot happen with this canvas size, but stay safe
            raise RuntimeError(f"non-plate {index} of seed {seed}: plate did not fit")
        pts = np.array(plate)
        side = rng.random()
        if side < 0.5:  # beside the plate: bumper, fog lamps
            shift = (float(rng.choice((-1, 1)) * rng.uniform(1.05, 1.5)) * target_w, 0.0)
        else:  # above (lights, badge, grille) or below
            up = -1.0 if side < 0.85 else 1.0
            shift = (
                float(rng.uniform(-0.3, 0.3)) * target_w,
                up * float(rng.uniform(1.1, 2.6)) * th,
            )
        quad = pts + np.array(shift)
    else:
        cw, ch = int(target_w * 1.7) + 8, int(th * 2.2) + 8
        canvas = backgrounds.background(rng, cw, ch, photo_share=0.5)
        x0 = int(cw / 2 - target_w / 2 * float(rng.uniform(0.8, 1.1)))
        text_h = max(6, int(th * float(rng.uniform(0.3, 0.7))))
        _draw_text_box(rng, canvas, x0, int(ch / 2 - text_h / 2 - text_h // 4), text_h)
        cx, cy = cw / 2, ch / 2
        quad = np.array(
            [
                [cx - target_w / 2, cy - th / 2],
                [cx + target_w / 2, cy - th / 2],
                [cx + target_w / 2, cy + th / 2],
                [cx - target_w / 2, cy + th / 2],
            ]
        )
    canvas = _degrade_crop(rng, canvas, target_w)
    quad = jitter_corners(rng, quad)
    if size is None:
        size = _crop_size(rng, target_w, aspect)
    return Sample(image=rectify(canvas, quad, size))
