"""Image decoding with limits: pure functions, no model."""

from __future__ import annotations

import io
import warnings
from typing import Union

import cv2
import numpy as np
from PIL import Image, ImageOps

from kplate.errors import ImageTooLargeError, InvalidImageError

#: Default pixel limit: a 4000x3000 photo is 12 MP; 40 MP leaves room and stops bombs.
DEFAULT_MAX_PIXELS = 40_000_000
#: The EXIF tag of the camera's orientation (1: upright).
EXIF_ORIENTATION = 0x0112
#: Default encoded-size limit in bytes.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: The JPEG end-of-image marker: a file that does not end with it may be truncated.
JPEG_EOI = b"\xff\xd9"

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
            plain = _decode_plain_jpeg(raw, img)
            if plain is not None:
                return plain
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


def _decode_plain_jpeg(raw: bytes, header: Image.Image) -> np.ndarray | None:
    """A colour JPEG decoded by OpenCV straight into an RGB array, or ``None`` when the file
    needs Pillow's path: not a YCbCr/RGB JPEG, an EXIF orientation to apply, or no
    end-of-image marker at the end (a truncated file, which Pillow rejects; OpenCV would
    pad it with grey). Both decode with libjpeg-turbo: the pixels are Pillow's
    (tests/test_imageio.py), at about three quarters of the time, since Pillow's own
    4-bytes-a-pixel image must be copied out to an array."""
    if header.format != "JPEG" or header.mode != "RGB" or not raw.endswith(JPEG_EOI):
        return None
    if header.getexif().get(EXIF_ORIENTATION, 1) != 1:
        return None
    flags = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), flags)
    if bgr is None or bgr.shape[:2] != (header.height, header.width):
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
