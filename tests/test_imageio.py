"""Decoding encoded images: OpenCV's path for plain colour JPEGs gives Pillow's pixels."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from kplate.errors import InvalidImageError
from kplate.imageio import EXIF_ORIENTATION, JPEG_EOI, _decode_plain_jpeg, decode_image
from kplate.synth import render_scene


def _scene() -> Image.Image:
    return Image.fromarray(render_scene(5, 0, 333, 250).image)  # odd width: partial blocks


def _jpeg(image: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", **options)
    return buf.getvalue()


def _takes_opencvs_path(data: bytes) -> bool:
    return _decode_plain_jpeg(data, Image.open(io.BytesIO(data))) is not None


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},
        {"quality": 40, "subsampling": 2},
        {"quality": 95, "subsampling": 1},
        {"quality": 100, "subsampling": 0},
        {"quality": 85, "progressive": True, "optimize": True},
    ],
)
def test_colour_jpegs_decode_to_pillows_pixels(options: dict[str, object]) -> None:
    data = _jpeg(_scene(), **options)
    assert _takes_opencvs_path(data)
    got = decode_image(data)
    assert got.dtype == np.uint8 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _pillow(data))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_other_jpegs_take_pillows_path(mode: str) -> None:
    data = _jpeg(_scene().convert(mode))
    assert not _takes_opencvs_path(data)
    got = decode_image(data)
    assert got.shape == (250, 333, 3)
    np.testing.assert_array_equal(got, _pillow(data))


def test_a_truncated_jpeg_is_an_error_and_trailing_bytes_are_not() -> None:
    data = _jpeg(_scene())
    assert data.endswith(JPEG_EOI)
    assert not _takes_opencvs_path(data[: len(data) * 2 // 3])
    with pytest.raises(InvalidImageError, match="cannot decode"):
        decode_image(data[: len(data) * 2 // 3])
    np.testing.assert_array_equal(decode_image(data + b"camera trailer"), _pillow(data))


def test_a_jpegs_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored sideways: rotate 90 degrees clockwise
    data = _jpeg(_scene(), exif=exif)
    assert not _takes_opencvs_path(data)
    got = decode_image(data)
    assert got.shape == (333, 250, 3)
    np.testing.assert_array_equal(got, np.rot90(_pillow(data), -1))
