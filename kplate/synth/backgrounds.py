"""Background photographs shipped by installed packages, plus procedural clutter.

Photographs come from Debian's ``mate-backgrounds`` (nature and desktop photos, installed by
``make install``) and from the sample images inside the ``scikit-image`` wheel (brick, grass,
gravel, street and object photos). Both are optional: without them the generator falls back to
procedural backgrounds only, and says so once in the log.
"""

from __future__ import annotations

import functools
import logging
import struct
from pathlib import Path

import cv2
import numpy as np

from kplate.synth.effects import channels3

log = logging.getLogger(__name__)

DEBIAN_DIRS: tuple[Path, ...] = (Path("/usr/share/backgrounds/mate"),)
SKIMAGE_FILES: tuple[str, ...] = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "grass.png",
    "gravel.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "horse.png",
    "page.png",
    "text.png",
    "coins.png",
)
#: Longest side of a cached background; scenes take random crops of these.
CACHE_SIDE = 1024


def background_files() -> list[Path]:
    """All background photo files found on this machine, in an order that does not depend on
    where packages are installed: Debian's by path, then scikit-image's samples by name.

    (Sorting full paths put the samples, inside the virtual environment, after
    ``/usr/share`` for a clone under ``/work`` and before it under ``/tmp`` or ``/home``: the
    same seed rendered other images. The shipped weights were trained with Debian's first:
    their validation figures come back only in that order.)
    """
    # several Debian files are the same photo at different sizes: keep one per stem
    seen: dict[str, Path] = {}
    for d in DEBIAN_DIRS:
        if not d.is_dir():
            continue
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            stem = p.stem.split("_")[0] if p.parent.name == "abstract" else p.stem
            seen.setdefault(f"{p.parent.name}/{stem}", p)
    samples: list[Path] = []
    try:
        import skimage

        sk = Path(skimage.__file__).parent / "data"
        samples = sorted(
            (sk / n for n in SKIMAGE_FILES if (sk / n).is_file()), key=lambda p: p.name
        )
    except ImportError:
        pass
    return sorted(seen.values()) + samples


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_png_profile(data: bytes) -> bytes:
    """Drop a PNG's ``iCCP`` colour-profile chunk, if any; other bytes are kept as they are.

    The decoder ignores the profile anyway, but libpng prints a warning for the malformed
    profiles some packaged wallpapers carry, on every load.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    out, pos = [data[:8]], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length  # length, type, data, CRC
        if data[pos + 4 : pos + 8] != b"iCCP":
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def _read(path: Path) -> np.ndarray | None:
    """Decode ``path`` at half resolution (BGR), or ``None`` when it cannot be decoded."""
    buf = np.frombuffer(strip_png_profile(path.read_bytes()), np.uint8)
    img: np.ndarray | None = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_REDUCED_COLOR_2)
    return img


@functools.lru_cache(maxsize=1)
def load_backgrounds() -> tuple[np.ndarray, ...]:
    """Load every background photo once per process, downscaled to ``CACHE_SIDE``."""
    out = []
    for p in background_files():
        img = _read(p)
        if img is None:
            log.warning("skipping unreadable background %s", p)
            continue
        scale = CACHE_SIDE / max(img.shape[:2])
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if not out:
        log.warning("no background photographs found; using procedural backgrounds only")
    return tuple(out)


def photo_crop(
    rng: np.random.Generator, photos: tuple[np.ndarray, ...], w: int, h: int
) -> np.ndarray:
    """A random crop of a random photo, resized to ``w x h``, randomly flipped."""
    src = photos[int(rng.integers(len(photos)))]
    H, W = src.shape[:2]
    frac = float(rng.uniform(0.3, 1.0))
    cw = max(8, int(W * frac))
    ch = max(8, min(H, int(cw * h / w)))
    cw = min(W, int(ch * w / h))
    x0 = int(rng.integers(0, W - cw + 1))
    y0 = int(rng.integers(0, H - ch + 1))
    crop = cv2.resize(src[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        crop = cv2.flip(crop, 1)
    return crop


def procedural(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Gradients, blocks, lines and blobs: a road, wall or car-park look-alike."""
    c0 = rng.integers(30, 220, size=3).astype(np.float32)
    c1 = rng.integers(30, 220, size=3).astype(np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    # one row of the gradient per image row, widened after the cast (the values are the same)
    img = np.ascontiguousarray(np.broadcast_to((c0 * (1 - t) + c1 * t).astype(np.uint8), (h, w, 3)))
    for _ in range(int(rng.integers(3, 14))):
        color = tuple(int(c) for c in rng.integers(0, 255, size=3))
        kind = rng.random()
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind < 0.4:
            x2, y2 = x + int(rng.integers(10, w // 2 + 11)), y + int(rng.integers(10, h // 2 + 11))
            cv2.rectangle(img, (x, y), (x2, y2), color, -1)
        elif kind < 0.7:
            x2, y2 = int(rng.integers(0, w)), int(rng.integers(0, h))
            cv2.line(img, (x, y), (x2, y2), color, int(rng.integers(1, 8)), lineType=cv2.LINE_AA)
        else:
            axes = (int(rng.integers(5, w // 4 + 6)), int(rng.integers(5, h // 4 + 6)))
            cv2.ellipse(img, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, color, -1)
    noise = rng.normal(0, float(rng.uniform(2, 12)), size=(h // 4 + 1, w // 4 + 1, 1)).astype(
        np.float32
    )
    noise = np.asarray(cv2.resize(noise, (w, h)), np.float32)
    out = np.add(img, channels3(noise), dtype=np.float32)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def background(rng: np.random.Generator, w: int, h: int, photo_share: float = 0.65) -> np.ndarray:
    """A ``h x w x 3`` RGB background: a photo crop or procedural clutter."""
    photos = load_backgrounds()
    if photos and rng.random() < photo_share:
        return photo_crop(rng, photos, w, h)
    return procedural(rng, w, h)
