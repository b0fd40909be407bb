"""Image decoding with limits: pure functions, no model."""

from __future__ import annotations

import io
import warnings
from typing import Union

import numpy as np
from PIL import Image, ImageOps

from kplate.errors import ImageTooLargeError, InvalidImageError

#: Default pixel limit: a 4000x3000 photo is 12 MP; 40 MP leaves room and stops bombs.
DEFAULT_MAX_PIXELS = 40_000_000
#: The EXIF tag of the camera's orientation (1: upright).
EXIF_ORIENTATION = 0x0112
#: Default encoded-size limit in bytes.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024

ImageInput = Union[
    Image.Image, np.ndarray, bytes, bytearray, memoryview
]  # Python 3.9: no `|` at run time


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> np.ndarray:
    """Decode encoded image bytes to an RGB ``uint8`` array of shape ``(H, W, 3)``.

    EXIF orientation is applied, so phone photos come out upright.

    Raises:
        InvalidImageError: empty, truncated or undecodable bytes.
        ImageTooLargeError: more than ``max_bytes`` bytes or ``max_pixels`` pixels.
    """
    raw = bytes(data)
    if not raw:
        raise InvalidImageError("empty image: the request carried 0 bytes")
    if len(raw) > max_bytes:
        raise ImageTooLargeError(f"image is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageTooLargeError(
                    f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}"
                )
            img.load()
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"cannot decode image ({len(raw)} bytes): not a known image format"
        ) from exc
    except Exception as exc:  # PIL raises many types for truncated or corrupt data
        raise InvalidImageError(f"cannot decode image ({len(raw)} bytes): {exc}") from exc
    return to_rgb_array(img)


def to_rgb_array(image: ImageInput, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Convert a PIL image, array or encoded bytes to an RGB ``uint8`` ``(H, W, 3)`` array.

    Arrays are taken as RGB (``(H, W)`` gray and ``(H, W, 4)`` RGBA are converted).
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # else exif_transpose would copy
            image = ImageOps.exif_transpose(image) or image
        if image.mode != "RGB":
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8)
    if isinstance(image, np.ndarray):
        arr = image
        if arr.dtype != np.uint8:
            raise InvalidImageError(f"array images must be uint8, got {arr.dtype}")
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise InvalidImageError(f"array images must be HxW, HxWx3 or HxWx4, got {arr.shape}")
        if arr.shape[0] * arr.shape[1] > max_pixels:
            raise ImageTooLargeError(f"array image {arr.shape} exceeds {max_pixels} pixels")
        if arr.shape[0] == 0 or arr.shape[1] == 0:
            raise InvalidImageError(f"array image has no pixels: {arr.shape}")
        return np.ascontiguousarray(arr[:, :, :3])
    raise InvalidImageError(f"unsupported image type {type(image).__name__}")
