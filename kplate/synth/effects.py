"""Photometric degradations: blur, noise, light, glare, dirt, infrared night images, JPEG."""

from __future__ import annotations

import functools

import cv2
import numpy as np


def channels3(mask: np.ndarray) -> np.ndarray:
    """A 2-D ``mask`` repeated into 3 contiguous channels.

    Arithmetic between an ``(h, w, 3)`` image and an ``(h, w, 1)`` view broadcasts over a last
    axis of length 3, which numpy runs several times slower than the same sums on contiguous
    arrays; the values are the same either way.
    """
    return np.asarray(cv2.merge((mask, mask, mask)))


def motion_blur(rng: np.random.Generator, img: np.ndarray, max_len: int = 9) -> np.ndarray:
    """Linear motion blur with a random direction."""
    n = int(rng.integers(3, max_len + 1))
    k = np.zeros((n, n), np.float32)
    k[n // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((n / 2 - 0.5, n / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    k = np.asarray(cv2.warpAffine(k, rot, (n, n)), np.float32)
    k /= max(k.sum(), 1e-6)
    return cv2.filter2D(img, -1, k)


def defocus(rng: np.random.Generator, img: np.ndarray, max_sigma: float = 2.0) -> np.ndarray:
    """Gaussian defocus blur."""
    return cv2.GaussianBlur(img, (0, 0), float(rng.uniform(0.5, max_sigma)))


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed block of unit Gaussian noise; samples take random windows of it (fast)."""
    return np.random.default_rng(12345).normal(0, 1, size=(1024, 1024, 3)).astype(np.float32)


def noise(rng: np.random.Generator, img: np.ndarray, max_sigma: float = 10.0) -> np.ndarray:
    """Additive Gaussian sensor noise."""
    sigma = float(rng.uniform(1.0, max_sigma))
    bank = _noise_bank()
    h, w = img.shape[:2]
    reps = (-(-h // bank.shape[0]), -(-w // bank.shape[1]), 1)
    if reps != (1, 1, 1):
        bank = np.tile(bank, reps)
    y0 = int(rng.integers(0, bank.shape[0] - h + 1))
    x0 = int(rng.integers(0, bank.shape[1] - w + 1))
    n = bank[y0 : y0 + h, x0 : x0 + w, : img.shape[2]]
    return np.clip(cv2.scaleAdd(n, sigma, img.astype(np.float32)), 0, 255).astype(np.uint8)


def light(rng: np.random.Generator, img: np.ndarray, low: bool = False) -> np.ndarray:
    """Brightness, contrast and gamma; ``low`` gives dusk and garage light."""
    gain = float(rng.uniform(0.35, 0.7)) if low else float(rng.uniform(0.8, 1.2))
    bias = float(rng.uniform(-20, 20))
    gamma = float(rng.uniform(0.8, 1.6)) if low else float(rng.uniform(0.85, 1.15))
    lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255 * gain + bias, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def color_shift(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """White-balance shift per channel."""
    gains = rng.uniform(0.92, 1.08, size=3)
    lut = np.clip(np.arange(256)[:, None] * gains[None, :], 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut.reshape(256, 1, 3))


def infrared(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Infrared night camera: grayscale, high contrast, dark surroundings."""
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    g = (g - g.mean()) * float(rng.uniform(1.1, 1.8)) + float(rng.uniform(70, 130))
    g = np.clip(g, 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def glare(
    rng: np.random.Generator, img: np.ndarray, center: tuple[float, float], radius: float
) -> np.ndarray:
    """A bright elliptical highlight (sun or headlight reflection)."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    axes = (
        max(1, int(radius * rng.uniform(0.3, 1.0))),
        max(1, int(radius * rng.uniform(0.15, 0.5))),
    )
    cv2.ellipse(
        mask, (int(center[0]), int(center[1])), axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1
    )
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), max(1.0, radius * 0.25)), np.float32)
    strength = float(rng.uniform(80, 200))
    return np.clip(img.astype(np.float32) + channels3(mask) * strength, 0, 255).astype(np.uint8)


def dirt(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Brownish smudges and specks (applied to a plate before it is placed)."""
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    mask = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(2, 12))):
        c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(1, max(2, w // 6))), int(rng.integers(1, max(2, h // 4))))
        cv2.ellipse(
            mask, c, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.2, 0.7)), -1
        )
    mask = np.asarray(cv2.GaussianBlur(mask, (0, 0), max(1.0, w / 80)), np.float32)
    brown = np.array([90, 70, 50], np.float32)
    mask3 = channels3(mask)
    out = out * (1 - mask3) + brown * mask3
    return np.clip(out, 0, 255).astype(np.uint8)


def jpeg(rng: np.random.Generator, img: np.ndarray, low: int = 25, high: int = 95) -> np.ndarray:
    """Round-trip through JPEG at a random quality."""
    q = int(rng.integers(low, high + 1))
    ok, buf = cv2.imencode(
        ".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q]
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("JPEG decoding failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def degrade(
    rng: np.random.Generator, img: np.ndarray, strength: float = 1.0, blur_scale: float = 1.0
) -> np.ndarray:
    """The camera chain applied to a whole image: light, blur, noise, IR, JPEG.

    ``blur_scale`` scales the blur lengths, so a small rendering of a plate is blurred as much
    as its full-resolution photograph would be, relative to its size.
    """
    if rng.random() < 0.1 * strength:
        img = infrared(rng, img)
    elif rng.random() < 0.5:
        img = color_shift(rng, img)
    img = light(rng, img, low=rng.random() < 0.15 * strength)
    r = rng.random()
    if r < 0.15 * strength:
        img = motion_blur(rng, img, max(3, round(9 * blur_scale)))
    elif r < 0.45 * strength:
        img = defocus(rng, img, max(0.6, 1.6 * blur_scale))
    if rng.random() < 0.6:
        img = noise(rng, img, 10.0 * strength)
    if rng.random() < 0.7:
        img = jpeg(rng, img)
    return img
