"""Request parsing and response building of the handler: pure functions, no model, no server."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import yaml
from PIL import Image
from serving_support import REPO_ROOT, b64, jpeg_bytes, png_bytes

from handler import protocol
from handler.protocol import (
    BodyKind,
    ParsedRequest,
    PayloadTooLargeError,
    RequestError,
    build_response,
    decode_images,
    encode_json,
    error_body,
    is_json_content_type,
    parse_request,
)
from handler.settings import HandlerSettings, load_settings
from kplate.errors import ConfigError, ImageTooLargeError, InvalidImageError
from kplate.imageio import EXIF_ORIENTATION, decode_image, to_rgb_array

IMG = jpeg_bytes()
IMG2 = jpeg_bytes(seed=1)
PLATE = {"text": "12가3456", "layout": "one-line"}


# -- every body format ---------------------------------------------------------------------


def test_raw_bytes_is_one_image() -> None:
    parsed = parse_request({"body": IMG}, "application/octet-stream")
    assert parsed == ParsedRequest(BodyKind.RAW, (IMG,), single=True)


def test_raw_bytes_without_content_type() -> None:
    assert parse_request({"body": bytearray(IMG)}).images == (IMG,)


@pytest.mark.parametrize("field", ["data", "file", "image", "file2", "data_1", "image[3]", "FILE"])
def test_multipart_field(field: str) -> None:
    parsed = parse_request({field: IMG})
    assert parsed.kind is BodyKind.MULTIPART
    assert parsed.images == (IMG,)
    assert parsed.single


def test_multipart_several_files_keep_order() -> None:
    parsed = parse_request({"file": IMG, "note": "hello", "file2": IMG2})
    assert parsed.images == (IMG, IMG2)
    assert not parsed.single


def test_multipart_text_fields_beside_the_file_are_not_images() -> None:
    """`curl -F file=@car.jpg -F filename=car.jpg`: the file name is not a second image."""
    parsed = parse_request({"file": IMG, "filename": "car.jpg"})
    assert parsed.images == (IMG,)
    assert parsed.single


@pytest.mark.parametrize("field", ["filename", "datafile", "file-name", "image_url", "data.1"])
def test_other_fields_are_ignored(field: str) -> None:
    with pytest.raises(RequestError, match="no image field"):
        parse_request({field: b64(IMG)})


def test_multipart_base64_text_field() -> None:
    assert parse_request({"data": b64(IMG)}).images == (IMG,)


def test_data_json_already_parsed() -> None:
    parsed = parse_request({"body": {"data": b64(IMG)}}, "application/json")
    assert parsed == ParsedRequest(BodyKind.DATA, (IMG,), single=True)


def test_data_json_as_bytes_and_text() -> None:
    body = json.dumps({"data": b64(IMG)})
    assert parse_request({"body": body.encode()}, "application/json").images == (IMG,)
    assert parse_request({"body": body}, "text/plain").images == (IMG,)


def test_data_list_is_several_images() -> None:
    parsed = parse_request({"body": {"data": [b64(IMG), b64(IMG2)]}})
    assert parsed.images == (IMG, IMG2)
    assert not parsed.single


def test_data_url_and_urlsafe_and_unpadded_base64() -> None:
    text = b64(IMG)
    url_safe = text.replace("+", "-").replace("/", "_").rstrip("=")
    for value in (f"data:image/jpeg;base64,{text}", url_safe, text[:60] + "\n" + text[60:]):
        assert parse_request({"body": {"data": value}}).images == (IMG,)


@pytest.mark.parametrize(
    "instance",
    [
        {"data": b64(IMG)},
        {"b64": b64(IMG)},
        {"image": {"b64": b64(IMG)}},
        {"data": {"b64": b64(IMG)}},
        b64(IMG),
    ],
)
def test_v1_instance_forms(instance: object) -> None:
    parsed = parse_request({"body": {"instances": [instance, {"data": b64(IMG2)}]}})
    assert parsed.kind is BodyKind.V1
    assert parsed.images == (IMG, IMG2)


def test_v2_bytes_input() -> None:
    body = {
        "id": "req-1",
        "inputs": [
            {"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(IMG), b64(IMG2)]}
        ],
    }
    parsed = parse_request({"body": body})
    assert parsed == ParsedRequest(BodyKind.V2, (IMG, IMG2), request_id="req-1")


def test_v2_nested_data_matches_shape() -> None:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "BYTES", "data": [[b64(IMG)]]}]}
    assert parse_request({"body": body}).images == (IMG,)


# -- bad input: a clear 4xx --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "content_type", "fragment"),
    [
        ({"body": b""}, None, "empty request body"),
        ({"body": b"{not json"}, "application/json", "malformed JSON"),
        ({"body": b'{"data": "abc'}, "application/octet-stream", "malformed JSON"),
        ({"body": [1, 2]}, None, "not an array"),
        ({"body": {"foo": 1}}, None, "got keys: foo"),
        ({"body": {"data": 5}}, None, "'data' must be"),
        ({"body": {"data": "@@not base64@@"}}, None, "invalid base64"),
        ({"body": {"data": ""}}, None, "empty image"),
        ({"body": {"instances": {"data": "x"}}}, None, "must be a list"),
        ({"body": {"instances": []}}, None, "is empty"),
        ({"body": {"instances": [{"url": "x"}]}}, None, "instances[0]"),
        ({"body": {"instances": [{"data": b64(IMG)}, {"data": "%%%"}]}}, None, "instances[1]"),
        ({"body": {"inputs": []}}, None, "non-empty list"),
        ({"body": {"inputs": [{"name": "t", "datatype": "FP32", "data": [1.0]}]}}, None, "FP32"),
        (
            {"body": {"inputs": [{"name": "t", "shape": [3], "datatype": "BYTES", "data": ["a"]}]}},
            None,
            "shape [3]",
        ),
        (
            {
                "body": {
                    "inputs": [{"name": "t", "shape": [1.0], "datatype": "BYTES", "data": ["a"]}]
                }
            },
            None,
            "shape must be a list of non-negative integers",
        ),
        (
            {
                "body": {
                    "inputs": [{"name": "t", "shape": [True], "datatype": "BYTES", "data": ["a"]}]
                }
            },
            None,
            "shape must be a list of non-negative integers",
        ),
        (
            {"body": {"inputs": [{"name": "t", "shape": "1", "datatype": "BYTES", "data": ["a"]}]}},
            None,
            "shape must be",
        ),
        ({"note": "hi"}, "multipart/form-data", "no image field"),
        ({"file": b""}, "multipart/form-data", "empty file"),
    ],
)
def test_bad_bodies_are_400(item: dict, content_type: str | None, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_request(item, content_type)
    assert info.value.http_status == 400
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 100_000, "application/octet-stream"),  # RecursionError in the parser
        (b'{"instances":' + b"[" * 100_000, "application/json"),
        ("[" * 100_000, "text/plain"),
        (b'{"data": ' + b"1" * 5000 + b"}", "application/json"),  # over 4,300 digits
    ],
)
def test_json_the_parser_cannot_take_is_400(body: bytes | str, content_type: str) -> None:
    with pytest.raises(RequestError, match="malformed JSON body") as info:
        parse_request({"body": body}, content_type)
    assert info.value.http_status == 400


def test_v2_data_nested_deeper_than_the_stack_is_flattened() -> None:
    data: list = [b64(IMG)]
    for _ in range(5000):
        data = [data]
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": data}]}
    assert parse_request({"body": body}).images == (IMG,)


def test_too_many_images_is_413() -> None:
    with pytest.raises(PayloadTooLargeError) as info:
        parse_request({"body": {"data": [b64(IMG)] * 3}}, max_images=2)
    assert info.value.http_status == 413


def test_oversized_image_is_413_before_decoding() -> None:
    with pytest.raises(PayloadTooLargeError):
        parse_request({"body": {"data": b64(IMG)}}, max_image_bytes=100)
    with pytest.raises(PayloadTooLargeError):
        parse_request({"body": IMG}, max_image_bytes=100)


def test_decode_images_names_the_bad_one() -> None:
    parsed = ParsedRequest(BodyKind.V1, (IMG, IMG[: len(IMG) // 3]))
    with pytest.raises(InvalidImageError, match="image 1"):
        decode_images(parsed, max_pixels=10**7, max_image_bytes=10**7)


def test_decode_images_does_not_number_a_single_image() -> None:
    parsed = ParsedRequest(BodyKind.RAW, (b"not an image",), single=True)
    with pytest.raises(InvalidImageError) as info:
        decode_images(parsed, max_pixels=10**7, max_image_bytes=10**7)
    assert not str(info.value).startswith("image")


def test_decode_images_pixel_limit() -> None:
    parsed = ParsedRequest(BodyKind.RAW, (png_bytes(4000, 4000),), single=True)
    with pytest.raises(ImageTooLargeError) as info:
        decode_images(parsed, max_pixels=1_000_000, max_image_bytes=10**7)
    assert info.value.http_status == 413


def test_request_pixel_budget_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Images each under max_pixels but over the request's budget together: 413 naming the
    total and the limit, and not one of them decoded."""
    decoded: list[bytes] = []
    real_decode = protocol.decode_image

    def counting_decode(raw: bytes, **kwargs: int) -> np.ndarray:
        decoded.append(raw)
        return real_decode(raw, **kwargs)

    monkeypatch.setattr(protocol, "decode_image", counting_decode)
    png = png_bytes(100, 100)
    limits = {"max_pixels": 10**7, "max_image_bytes": 10**7, "max_request_pixels": 40_000}
    arrays = decode_images(ParsedRequest(BodyKind.V1, (png,) * 4), **limits)
    assert len(arrays) == len(decoded) == 4
    decoded.clear()
    with pytest.raises(PayloadTooLargeError) as info:
        decode_images(ParsedRequest(BodyKind.V1, (png,) * 5), **limits)
    assert info.value.http_status == 413
    assert "50000 pixels" in str(info.value) and "40000" in str(info.value)
    assert "per request" in str(info.value)
    assert decoded == []


def test_one_image_over_max_pixels_is_refused_before_any_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(protocol, "decode_image", pytest.fail)
    parsed = ParsedRequest(BodyKind.V1, (png_bytes(100, 100), png_bytes(4000, 4000)))
    with pytest.raises(ImageTooLargeError, match=r"image 1: image is 4000x4000 = 16000000"):
        decode_images(parsed, max_pixels=1_000_000, max_image_bytes=10**7)


def test_default_request_budget_takes_four_phone_photos() -> None:
    settings = HandlerSettings()
    assert settings.max_request_pixels >= 4 * 4000 * 3000
    assert settings.max_request_pixels < settings.max_images_per_request * settings.max_pixels


def test_decode_images_gives_rgb_arrays() -> None:
    arrays = decode_images(
        ParsedRequest(BodyKind.V1, (IMG, IMG2)), max_pixels=10**7, max_image_bytes=10**7
    )
    assert [a.shape for a in arrays] == [(120, 160, 3), (120, 160, 3)]


def test_decoding_applies_the_exif_orientation() -> None:
    """A phone photo stored sideways (EXIF orientation 6: rotate 90 degrees clockwise) comes
    out upright; photos without the tag come out as stored."""
    pixels = np.zeros((40, 100, 3), np.uint8)
    pixels[:, :50] = 255  # left half white
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    for tag, shape in ((exif, (100, 40, 3)), (Image.Exif(), (40, 100, 3))):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG", exif=tag)
        for arr in (decode_image(buf.getvalue()), to_rgb_array(Image.open(buf))):
            assert arr.shape == shape
            if shape == (100, 40, 3):  # the white left half is now on top
                assert arr[:45].mean() > 250 and arr[55:].mean() < 5


# -- responses ---------------------------------------------------------------------------------


def test_v1_response() -> None:
    parsed = ParsedRequest(BodyKind.V1, (IMG, IMG2))
    body = build_response(parsed, [[PLATE], []], model_name="kplate")
    assert body == {"predictions": [[PLATE], []]}


def test_v2_response_echoes_id_and_holds_json_lists() -> None:
    parsed = ParsedRequest(BodyKind.V2, (IMG, IMG2), request_id="abc")
    body = build_response(parsed, [[PLATE], []], model_name="kplate", output_name="plates")
    assert body["model_name"] == "kplate"
    assert body["id"] == "abc"
    (output,) = body["outputs"]
    assert output["name"] == "plates"
    assert output["datatype"] == "BYTES"
    assert output["shape"] == [2]
    assert [json.loads(x) for x in output["data"]] == [[PLATE], []]


def test_v2_response_falls_back_to_request_id() -> None:
    parsed = ParsedRequest(BodyKind.V2, (IMG,))
    assert build_response(parsed, [[]], model_name="m", fallback_id="ts-1")["id"] == "ts-1"


def test_plain_responses_mirror_the_request() -> None:
    single = ParsedRequest(BodyKind.RAW, (IMG,), single=True)
    assert build_response(single, [[]], model_name="m") == []
    several = ParsedRequest(BodyKind.MULTIPART, (IMG, IMG2))
    assert build_response(several, [[PLATE], []], model_name="m") == [[PLATE], []]


def test_result_count_must_match() -> None:
    with pytest.raises(ValueError, match="2 results for 1 images"):
        build_response(ParsedRequest(BodyKind.V1, (IMG,)), [[], []], model_name="m")


def test_error_body_and_json_encoding() -> None:
    body = error_body(RequestError("bad base64"))
    assert body == {"error": "bad base64", "code": 400}
    assert json.loads(encode_json({"text": "서울12가3456"})) == {"text": "서울12가3456"}
    assert "서울".encode() in encode_json({"text": "서울"})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/cloudevents+json", True),
        ("application/octet-stream", False),
        (None, False),
    ],
)
def test_json_content_type(value: str | None, expected: bool) -> None:
    assert is_json_content_type(value) is expected


# -- settings ----------------------------------------------------------------------------------


def test_shipped_model_config_loads() -> None:
    config = yaml.safe_load((REPO_ROOT / "handler" / "model-config.yaml").read_text())
    settings = load_settings(config)
    assert settings == HandlerSettings.model_validate(config["handler"])
    assert settings.max_images_per_request >= 1


def test_settings_defaults_and_typos() -> None:
    assert load_settings(None) == HandlerSettings()
    assert load_settings({"minWorkers": 1}) == HandlerSettings()
    with pytest.raises(ConfigError, match="max_image"):
        load_settings({"handler": {"max_image": 5}})
    with pytest.raises(ConfigError):
        load_settings({"handler": {"max_pixels": 0}})
    with pytest.raises(ConfigError, match="mapping"):
        load_settings({"handler": [1]})


@pytest.mark.parametrize(
    "section",
    [{"max_images_per_request": 257}, {"max_images_per_request": 0}, {"max_image_bytes": 1023}],
)
def test_settings_out_of_range_are_refused(section: dict[str, int]) -> None:
    with pytest.raises(ConfigError, match=next(iter(section))):
        load_settings({"handler": section})
