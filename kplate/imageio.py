"""Image decoding with limits: pure functions, no model."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Union

import cv2
import numpy as np

# The *ImagePlugin modules are imported for their registration: Image.open(formats=FORMATS)
# knows only the formats whose plugin is loaded.
from PIL import (  # noqa: F401
    BmpImagePlugin,
    GifImagePlugin,
    Image,
    ImageOps,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
    WebPImagePlugin,
)

from kplate.errors import ImageTooLargeError, InvalidImageError

log = logging.getLogger(__name__)

#: Default pixel limit: a 4000x3000 photo is 12 MP; 40 MP leaves room and stops bombs.
DEFAULT_MAX_PIXELS = 40_000_000
#: The EXIF tag of the camera's orientation (1: upright).
EXIF_ORIENTATION = 0x0112
#: Default encoded-size limit in bytes.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: The JPEG end-of-image marker: a file that does not end with it may be truncated.
JPEG_EOI = b"\xff\xd9"
#: Pillow formats decoded from bytes (JPEG's includes the multi-picture JPEGs some phones
#: write). Others are refused before any of their parsers runs.
FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: Pillow modes of more than 8 bits a channel (16-bit grey PNG and TIFF, 32-bit integer,
#: float), which ``convert("RGB")`` would clip at 255 instead of scaling.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

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
            img = Image.open(io.BytesIO(raw), formats=FORMATS)
            check_size(*img.size, max_pixels)
            plain = _decode_plain_jpeg(raw, img)
            if plain is not None:
                return plain
            img.load()
            return to_rgb_array(img, max_pixels=max_pixels)
    except (ImageTooLargeError, InvalidImageError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from exc
    except Image.UnidentifiedImageError as exc:
        raise InvalidImageError(
            f"cannot decode image ({len(raw)} bytes): not an image of a supported format "
            f"({', '.join(FORMATS)})"
        ) from exc
    except Exception as exc:  # PIL raises many types for truncated or corrupt data
        raise InvalidImageError(f"cannot decode image ({len(raw)} bytes): {exc}") from exc


def header_size(data: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(width, height)`` from an encoded image's header, without decoding its pixels (so
    limits on many images can be checked before any is decoded); ``None`` when the header
    cannot be read as one of :data:`FORMATS` (:func:`decode_image` then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(data)), formats=FORMATS) as img:
                width, height = img.size
    except Exception:  # noqa: BLE001 - an unreadable header is decode_image's to report
        return None
    return int(width), int(height)


def _decode_plain_jpeg(raw: bytes, header: Image.Image) -> np.ndarray | None:
    """A colour JPEG decoded by OpenCV straight into an RGB array, or ``None`` when the file
    needs Pillow's path: not a YCbCr/RGB JPEG, an EXIF orientation to apply, or no
    end-of-image marker at the end (a truncated file, which Pillow rejects; OpenCV would
    pad it with grey). Both decode with libjpeg-turbo: the pixels are Pillow's
    (tests/test_imageio.py), at about three quarters of the time, since Pillow's own
    4-bytes-a-pixel image must be copied out to an array."""
    if header.format != "JPEG" or header.mode != "RGB" or not raw.endswith(JPEG_EOI):
        return None
    if orientation(header) != 1:
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
        check_size(*image.size, max_pixels)
        if orientation(image) != 1:  # else exif_transpose would copy
            image = ImageOps.exif_transpose(image) or image
        if image.mode in WIDE_MODES:
            return to_rgb_array(to_8bit(np.asarray(image)), max_pixels=max_pixels)
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
        check_size(arr.shape[1], arr.shape[0], max_pixels, f"array image {arr.shape}")
        return np.ascontiguousarray(arr[:, :, :3])
    raise InvalidImageError(f"unsupported image type {type(image).__name__}")


def check_size(width: int, height: int, max_pixels: int, what: str = "image") -> None:
    """Raise unless a ``width`` x ``height`` image (``what``, for the message) has pixels, and
    at most ``max_pixels``.

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        InvalidImageError: no pixels.
    """
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{what} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if width == 0 or height == 0:
        raise InvalidImageError(f"{what} has no pixels: {width}x{height}")


def orientation(image: Image.Image) -> int:
    """The EXIF orientation of ``image`` (1, upright, when absent or unreadable: a camera's
    malformed EXIF block does not make its pixels unusable)."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception as exc:  # noqa: BLE001 - Pillow raises SyntaxError, struct.error ...
        log.debug("unreadable EXIF block ignored: %s", exc)
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def to_8bit(values: np.ndarray) -> np.ndarray:
    """A grey image of more than 8 bits (Pillow's ``I;16``, ``I`` or ``F`` modes) as ``uint8``:
    values up to 255 are kept, up to 65535 taken as 16-bit and divided by 257, and wider ones
    stretched from their minimum to their maximum."""
    v = np.asarray(values, np.float64)
    if v.size == 0:
        return np.zeros(v.shape, np.uint8)
    v = np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(v.min()), float(v.max())
    if lo >= 0 and hi <= 255:
        pass
    elif lo >= 0 and hi <= 65535:
        v = v / 257.0
    else:
        v = (v - lo) * (255.0 / max(hi - lo, 1e-12))
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)
