"""Decoding encoded images: OpenCV's path for plain colour JPEGs gives Pillow's pixels."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kplate.errors import ImageTooLargeError, InvalidImageError
from kplate.imageio import (
    EXIF_ORIENTATION,
    JPEG_EOI,
    _decode_plain_jpeg,
    check_size,
    decode_image,
    orientation,
    to_8bit,
    to_rgb_array,
)
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


def _png(image: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG", **options)
    return buf.getvalue()


def test_exif_orientation_8_turns_the_image_counter_clockwise() -> None:
    image = Image.new("RGB", (4, 2))
    image.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    got = decode_image(_png(image, exif=exif))
    assert got.shape == (4, 2, 3) and tuple(got[3, 0]) == (255, 0, 0)


def test_a_malformed_exif_block_is_ignored_not_fatal() -> None:
    """A PNG whose eXIf chunk is not TIFF data: Pillow's getexif raises SyntaxError; the
    pixels are still good, so the image decodes upright."""
    png = _png(Image.new("RGB", (8, 6), (200, 10, 10)))
    body = b"garbage!!"
    chunk = struct.pack(">I", len(body)) + b"eXIf" + body
    chunk += struct.pack(">I", zlib.crc32(b"eXIf" + body) & 0xFFFFFFFF)
    data = png[:33] + chunk + png[33:]  # after the signature and IHDR
    with pytest.raises(SyntaxError):
        Image.open(io.BytesIO(data)).getexif()
    out = decode_image(data)
    assert out.shape == (6, 8, 3) and tuple(out[0, 0]) == (200, 10, 10)
    assert orientation(Image.open(io.BytesIO(data))) == 1


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_images_are_scaled_not_clipped(fmt: str) -> None:
    values = np.array([[0, 257 * 100], [30000, 65535]], np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, fmt)
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    out = decode_image(buf.getvalue())
    assert out.shape == (2, 2, 3)
    assert out[:, :, 0].tolist() == [[0, 100], [117, 255]]


def test_16_bit_values_map_to_8_bits_by_257() -> None:
    assert to_8bit(np.array([0, 257, 51400, 65535], np.uint16)).tolist() == [0, 1, 200, 255]


def test_rgba_arrays_lose_their_alpha_not_a_colour() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = (1, 2, 3), 255
    out = to_rgb_array(rgba)
    assert out.shape == (2, 2, 3) and tuple(out[0, 0]) == (1, 2, 3)


def test_the_size_limits_are_inclusive() -> None:
    check_size(100, 100, 10_000)
    assert to_rgb_array(Image.new("RGB", (100, 100)), max_pixels=10_000).shape == (100, 100, 3)
    data = _png(Image.new("RGB", (4, 4)))
    assert decode_image(data, max_bytes=len(data)).shape == (4, 4, 3)
    with pytest.raises(ImageTooLargeError):
        decode_image(data, max_bytes=len(data) - 1)


def test_to_8bit_keeps_8_bit_values_and_stretches_wider_ones() -> None:
    assert to_8bit(np.array([0.0, 128.0, 255.0])).tolist() == [0, 128, 255]
    assert to_8bit(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 128, 255]
    assert to_8bit(np.array([0, 70000, 140000], np.int32)).tolist() == [0, 128, 255]


def test_formats_outside_the_list_are_refused_before_their_parser_runs() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, "PPM")  # Pillow reads PPM; the service does not
    with pytest.raises(InvalidImageError, match="supported format"):
        decode_image(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buf, "WEBP", lossless=True)
    assert tuple(decode_image(buf.getvalue())[0, 0]) == (1, 2, 3)


def test_pil_images_get_the_size_checks_arrays_get() -> None:
    with pytest.raises(ImageTooLargeError):
        to_rgb_array(Image.new("RGB", (100, 100)), max_pixels=100 * 99)
    with pytest.raises(InvalidImageError, match="no pixels"):
        to_rgb_array(Image.new("RGB", (0, 5)))
