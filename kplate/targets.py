"""Pure encode/decode functions between plate geometry and model outputs (no model needed).

Detector maps (stride ``STRIDE``): channel 0 the centre heatmap logit, channels 1-8 the 4
corners as offsets from the cell centre in cells (x0, y0, ..., x3, y3), then the layout and
colour logits. Reader slots: left-aligned character indices, padded with 0.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from kplate.plates import ALL_USE_CHARS, COLORS, LAYOUTS, REGIONS, parse

Quad = np.ndarray  # (4, 2) float, clockwise from top-left


# ---------------------------------------------------------------- reader


@functools.lru_cache(maxsize=8)
def _index(alphabet: str) -> dict[str, int]:
    """Character -> slot class index of ``alphabet`` (built once per alphabet)."""
    return {ch: i for i, ch in enumerate(alphabet)}


@functools.lru_cache(maxsize=8)
def _plate_classes(
    alphabet: str, regions: tuple[str, ...], use_chars: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class indices of the digits, of the use syllables and of each region's two syllables
    (those the alphabet has), for :func:`decode_plate_slots`."""
    index = _index(alphabet)
    digits = np.array([index[d] for d in "0123456789"])
    uses = np.array([index[c] for c in use_chars if c in index])
    pairs = np.array([[index[r[0]], index[r[1]]] for r in regions if all(c in index for c in r)])
    return digits, uses, pairs


def encode_text(text: str, alphabet: str, max_len: int) -> np.ndarray:
    """Text to ``max_len`` slot indices (0 = padding).

    Raises:
        ValueError: a character is not in the alphabet, or the text is too long.
    """
    if len(text) > max_len:
        raise ValueError(f"text {text!r} is longer than {max_len} slots")
    index = _index(alphabet)
    out = np.zeros(max_len, np.int64)
    for i, ch in enumerate(text):
        if ch not in index or ch == alphabet[0]:
            raise ValueError(f"character {ch!r} of {text!r} is not in the reader alphabet")
        out[i] = index[ch]
    return out


def decode_slots(probs: np.ndarray, alphabet: str) -> tuple[str, float]:
    """Slot probabilities ``(max_len, V)`` to ``(text, confidence)``.

    Reading stops at the first padding slot; the confidence is the probability of the least
    certain slot, padding slots included (so a likely extra character lowers it too).
    """
    best = probs.argmax(axis=1)
    conf = float(np.min(probs[np.arange(len(best)), best]))
    chars = []
    for i in best:
        if i == 0:
            break
        chars.append(alphabet[int(i)])
    return "".join(chars), conf


def spells_plate(text: str) -> bool:
    """True when ``text`` is in the language :func:`decode_plate_slots` searches: plate
    shaped, with a region of :data:`~kplate.plates.REGIONS` (or none) and a use syllable of
    :data:`~kplate.plates.ALL_USE_CHARS`."""
    p = parse(text)
    return (
        p is not None and (p.region is None or p.region in REGIONS) and p.use_char in ALL_USE_CHARS
    )


def decode_plate_slots(
    probs: np.ndarray,
    alphabet: str,
    regions: Sequence[str],
    use_chars: Sequence[str],
) -> tuple[str, float] | None:
    """The most probable plate-shaped string under the slot probabilities ``(max_len, V)``.

    Plate-shaped: an optional region of ``regions``, 2 or 3 digits, one of ``use_chars``,
    4 digits, then padding to the last slot. Slots are independent given the image, so the
    best string of each of the four shapes is the best character of the allowed kind in each
    slot (the best region as a pair); the shape with the highest total log-probability wins.
    The confidence is the probability of its least certain slot, as in :func:`decode_slots`.
    Returns ``None`` when no shape fits in the slots.
    """
    n_slots = probs.shape[0]
    logp = np.log(np.clip(probs, 1e-12, 1.0))
    digits, uses, pairs = _plate_classes(alphabet, tuple(regions), tuple(use_chars))
    best: tuple[float, list[int]] | None = None
    for with_region in (False, True):
        if with_region and not len(pairs):
            continue
        for n_type in (2, 3):
            kinds = ["r", "r"] if with_region else []
            kinds += ["d"] * n_type + ["u"] + ["d"] * 4
            if len(kinds) > n_slots:
                continue
            chosen: list[int] = []
            if with_region:
                pair_lp = logp[0, pairs[:, 0]] + logp[1, pairs[:, 1]]
                chosen += [int(i) for i in pairs[int(pair_lp.argmax())]]
            for slot in range(len(chosen), len(kinds)):
                allowed = uses if kinds[slot] == "u" else digits
                chosen.append(int(allowed[int(logp[slot, allowed].argmax())]))
            chosen += [0] * (n_slots - len(kinds))
            total = float(logp[np.arange(n_slots), chosen].sum())
            if best is None or total > best[0]:
                best = (total, chosen)
    if best is None:
        return None
    chosen = best[1]
    conf = float(np.min(probs[np.arange(n_slots), chosen]))
    return "".join(alphabet[i] for i in chosen if i != 0), conf


def decode_reading(
    probs: np.ndarray, alphabet: str, repair_min_score: float | None
) -> tuple[str, float]:
    """The reader's text and confidence: the best character of each slot
    (:func:`decode_slots`), or, when those do not spell a plate of known region and use
    syllable (:func:`spells_plate`), the most probable such string
    (:func:`decode_plate_slots`) if its confidence is at least ``repair_min_score``
    (``None``: never repaired)."""
    text, score = decode_slots(probs, alphabet)
    if repair_min_score is None or spells_plate(text):
        return text, score
    repaired = decode_plate_slots(probs, alphabet, REGIONS, ALL_USE_CHARS)
    if repaired is None or repaired[1] < repair_min_score:
        return text, score
    return repaired


# ---------------------------------------------------------------- detector


def encode_detections(
    quads: Sequence[Quad],
    layouts: Sequence[str],
    colors: Sequence[str],
    out_hw: tuple[int, int],
    stride: int,
) -> dict[str, np.ndarray]:
    """Training targets for one image.

    Returns ``heat`` ``(h, w)`` Gaussian peaks at plate centres, and per plate ``index``
    (flat cell index), ``offsets`` ``(8,)`` in cells, ``scale`` (plate diagonal in cells),
    ``layout`` and ``color`` class indices. Plates whose centre falls outside are dropped.
    """
    h, w = out_hw
    heat = np.zeros((h, w), np.float32)
    idx, offs, scales, lays, cols = [], [], [], [], []
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for q, lay, col in zip(quads, layouts, colors):
        c = np.asarray(q, np.float32) / stride
        center = c.mean(0)
        cx, cy = int(np.floor(center[0])), int(np.floor(center[1]))
        if not (0 <= cx < w and 0 <= cy < h):
            continue
        bw = float(c[:, 0].max() - c[:, 0].min())
        bh = float(c[:, 1].max() - c[:, 1].min())
        sx, sy = max(0.5, bw / 6), max(0.5, bh / 6)
        g = np.exp(-(((xs - cx) ** 2) / (2 * sx * sx) + ((ys - cy) ** 2) / (2 * sy * sy)))
        np.maximum(heat, g, out=heat)
        idx.append(cy * w + cx)
        offs.append((c - np.array([cx + 0.5, cy + 0.5], np.float32)).reshape(-1))
        scales.append(max(1.0, float(np.hypot(bw, bh))))
        lays.append(LAYOUTS.index(lay))
        cols.append(COLORS.index(col))
    n = len(idx)
    return {
        "heat": heat,
        "index": np.array(idx, np.int64).reshape(n),
        "offsets": np.array(offs, np.float32).reshape(n, 8),
        "scale": np.array(scales, np.float32).reshape(n),
        "layout": np.array(lays, np.int64).reshape(n),
        "color": np.array(cols, np.int64).reshape(n),
    }


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def quad_iou_boxes(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the axis-aligned hulls of two quads (or two ``[x1, y1, x2, y2]`` boxes)."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ba = a if a.shape == (4,) else np.r_[a.min(0), a.max(0)]
    bb = b if b.shape == (4,) else np.r_[b.min(0), b.max(0)]
    iw = max(0.0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
    ih = max(0.0, min(ba[3], bb[3]) - max(ba[1], bb[1]))
    inter = iw * ih
    union = (ba[2] - ba[0]) * (ba[3] - ba[1]) + (bb[2] - bb[0]) * (bb[3] - bb[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def decode_detections(
    out: np.ndarray,
    stride: int,
    score_threshold: float,
    nms_iou: float,
    max_plates: int,
) -> list[tuple[Quad, float, int, int]]:
    """One image's raw detector output ``(C, h, w)`` to ``[(quad_px, score, layout, color)]``.

    Peaks are local maxima of the heatmap (3x3) above the threshold; overlapping quads are
    suppressed by box IoU, best score first.
    """
    heat = _sigmoid(out[0])
    h, w = heat.shape
    pad = np.pad(heat, 1, constant_values=0)
    neigh = np.max(
        np.stack([pad[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]), axis=0
    )
    peaks = np.argwhere((heat >= neigh) & (heat >= score_threshold))
    order = np.argsort(-heat[peaks[:, 0], peaks[:, 1]]) if len(peaks) else np.array([], np.int64)
    kept: list[tuple[Quad, float, int, int]] = []
    n_layout = len(LAYOUTS)
    for k in order:
        cy, cx = peaks[k]
        offs = out[1:9, cy, cx].reshape(4, 2)
        quad = (offs + np.array([cx + 0.5, cy + 0.5])) * stride
        if any(quad_iou_boxes(quad, q) > nms_iou for q, *_ in kept):
            continue
        lay = int(out[9 : 9 + n_layout, cy, cx].argmax())
        col = int(out[9 + n_layout :, cy, cx].argmax())
        kept.append((quad.astype(np.float64), float(heat[cy, cx]), lay, col))
        if len(kept) >= max_plates:
            break
    return kept


def order_quad(quad: np.ndarray) -> np.ndarray:
    """Reorder 4 points clockwise from top-left (by angle around the centre)."""
    q = np.asarray(quad, np.float64)
    c = q.mean(0)
    ang = np.arctan2(q[:, 1] - c[1], q[:, 0] - c[0])
    q = q[np.argsort(ang)]  # clockwise in image coordinates (y down), starting near -pi
    start = int(np.argmin(q.sum(1)))
    return np.roll(q, -start, axis=0)


def rectify(img: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Warp the quadrilateral ``corners`` (TL, TR, BR, BL) of ``img`` to a ``size=(w, h)`` image."""
    w, h = size
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    M = cv2.getPerspectiveTransform(np.asarray(corners, np.float32), dst)
    return cv2.warpPerspective(
        img, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


_UNIT_SQUARE = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)


def expand_quad(quad: np.ndarray, margins: Sequence[float]) -> Quad:
    """``quad`` (TL, TR, BR, BL) moved out by ``margins = (left, top, right, bottom)``,
    fractions of its own width and height, in its own perspective (negative: cut in)."""
    left, top, right, bottom = (float(m) for m in margins)
    if not any((left, top, right, bottom)):
        return np.asarray(quad, np.float64)
    H = cv2.getPerspectiveTransform(_UNIT_SQUARE, np.asarray(quad, np.float32))
    pts = np.array(
        [[-left, -top], [1 + right, -top], [1 + right, 1 + bottom], [-left, 1 + bottom]],
        np.float32,
    )
    return cv2.perspectiveTransform(pts[None], H)[0].astype(np.float64)


@dataclass(frozen=True)
class Window:
    """The image rectangle ``[x0, x1) x [y0, y1)`` resampled onto a ``canvas = (w, h)``."""

    x0: int
    y0: int
    x1: int
    y1: int
    canvas: tuple[int, int]

    @property
    def scale(self) -> np.ndarray:
        """Canvas pixels per image pixel, ``(sx, sy)``."""
        return np.array(
            [self.canvas[0] / (self.x1 - self.x0), self.canvas[1] / (self.y1 - self.y0)]
        )

    def to_canvas(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, np.float64) - [self.x0, self.y0]) * self.scale

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        return np.asarray(pts, np.float64) / self.scale + [self.x0, self.y0]


def zoom_window(quad: np.ndarray, plate_width: float, canvas: tuple[int, int]) -> Window:
    """The window, centred on ``quad``, that shows its hull about ``plate_width`` canvas
    pixels wide. When that shrinks the image, a canvas pixel is a whole number of image
    pixels (the plate then shows up to 1.5 times wider), so area-averaging is exact and fast.
    """
    q = np.asarray(quad, np.float64)
    span = max(1.0, float(q[:, 0].max() - q[:, 0].min())) / plate_width  # image px per canvas px
    cx, cy = q.mean(0)
    if span >= 1:
        k = round(span)
        x0, y0 = round(cx - canvas[0] * k / 2), round(cy - canvas[1] * k / 2)
        return Window(x0, y0, x0 + canvas[0] * k, y0 + canvas[1] * k, canvas)
    half_w, half_h = canvas[0] / 2 * span, canvas[1] / 2 * span
    x0, y0 = int(np.floor(cx - half_w)), int(np.floor(cy - half_h))
    x1, y1 = int(np.ceil(cx + half_w)), int(np.ceil(cy + half_h))
    return Window(x0, y0, max(x0 + 1, x1), max(y0 + 1, y1), canvas)


def cut_window(img: np.ndarray, window: Window) -> np.ndarray:
    """``window`` of ``img`` resized to its canvas; what lies outside the image is black."""
    H, W = img.shape[:2]
    w = window
    xa, ya, xb, yb = max(0, w.x0), max(0, w.y0), min(W, w.x1), min(H, w.y1)
    if (xa, ya, xb, yb) == (w.x0, w.y0, w.x1, w.y1):
        region = img[ya:yb, xa:xb]
    else:
        region = np.zeros((w.y1 - w.y0, w.x1 - w.x0, *img.shape[2:]), img.dtype)
        if xa < xb and ya < yb:
            region[ya - w.y0 : yb - w.y0, xa - w.x0 : xb - w.x0] = img[ya:yb, xa:xb]
    shrink = region.shape[1] > w.canvas[0]
    return cv2.resize(
        region, w.canvas, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )


def match(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], iou_threshold: float
) -> list[int]:
    """Greedy matching in ``preds`` order (best score first): for each prediction, the index of
    the unmatched ground truth with the highest box IoU >= ``iou_threshold``, else -1."""
    used: set[int] = set()
    out = []
    for p in preds:
        best, best_iou = -1, iou_threshold
        for g, gt in enumerate(gts):
            iou = quad_iou_boxes(p, gt)
            if g not in used and iou >= best_iou:
                best, best_iou = g, iou
        if best >= 0:
            used.add(best)
        out.append(best)
    return out
