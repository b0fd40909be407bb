"""Request parsing and response building for the kplate handler: pure functions, no model.

TorchServe hands the handler one mapping per request: ``{"body": ...}`` for a plain body
(bytes, or already-parsed JSON when the content type is ``application/json``, or ``str`` for
``text/*``), or one entry per field for a multipart/form upload. Accepted bodies:

========================  ==========================================  ==========================
body                      example                                     response
========================  ==========================================  ==========================
raw image bytes           ``Content-Type: application/octet-stream``  plate list
multipart/form upload     field ``data`` or ``file`` (``file2`` ...)  plate list (one file) or
                                                                      list of plate lists
``{"data": ...}``         ``{"data": "<b64>"}`` or a list of them     plate list or list of lists
KServe v1                 ``{"instances": [{"data": "<b64>"}]}``,     ``{"predictions": [...]}``
                          ``{"b64": ...}``, ``{"image": {"b64": ...}}``
Open Inference (v2)       ``{"inputs": [{"datatype": "BYTES", ...}]}`` v2 response, one BYTES
                                                                      output of JSON plate lists
========================  ==========================================  ==========================

Every problem raises a :class:`kplate.errors.KplateError` whose ``http_status`` is the 4xx
the request gets, with :func:`error_body` as its JSON message.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from kplate.errors import ImageTooLargeError, KplateError
from kplate.imageio import check_size, decode_image, header_size

#: Multipart fields that carry images: ``data``, ``file``, ``image``, each optionally numbered
#: (``file2``, ``file_2``, ``file[2]``). Other fields (``filename``, ``note``) are ignored.
IMAGE_FIELD_RE = re.compile(r"^(data|file|image)(\d+|_\d+|\[\d+\])?$", re.IGNORECASE)
_DATA_URL_RE = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")

PlateDict = Mapping[str, Any]


class RequestError(KplateError, ValueError):
    """The request body is malformed or does not carry images the way the protocol says."""

    http_status = 400


class PayloadTooLargeError(ImageTooLargeError):
    """The request carries too many images or an image above the byte limit."""

    http_status = 413


class EngineError(KplateError, RuntimeError):
    """The engine failed on one request's images while the others went through."""

    http_status = 500


class UnexpectedError(KplateError, RuntimeError):
    """An unforeseen failure while reading one request; it fails that request alone."""

    http_status = 500


class BodyKind(str, Enum):
    """Which body format a request used; it decides the response format."""

    RAW = "raw"
    MULTIPART = "multipart"
    DATA = "data"
    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True)
class ParsedRequest:
    """The images one request carries, still encoded.

    Attributes:
        kind: the body format.
        images: encoded image bytes, in request order.
        single: the request sent one image as a scalar (raw body, one multipart file,
            ``{"data": "<b64>"}``); its plain response is that image's plate list.
        request_id: the v2 request ``id``, echoed in the response.
    """

    kind: BodyKind
    images: tuple[bytes, ...]
    single: bool = False
    request_id: str | None = None


@dataclass
class BatchState:
    """Per-request state of one ``handle`` call, between preprocess, inference and postprocess.

    Attributes:
        parsed: the parsed request, ``None`` where parsing failed.
        arrays: the decoded images of each request (empty where it failed).
        errors: the error of each failed request, by index.
        plates: the plate dicts of each image, by request index.
    """

    parsed: list[ParsedRequest | None] = field(default_factory=list)
    arrays: list[list[np.ndarray]] = field(default_factory=list)
    errors: dict[int, KplateError] = field(default_factory=dict)
    plates: dict[int, list[list[dict[str, Any]]]] = field(default_factory=dict)


def is_json_content_type(content_type: str | None) -> bool:
    """True for ``application/json`` and ``application/*+json`` (parameters ignored)."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


def parse_request(
    item: Mapping[str, Any],
    content_type: str | None = None,
    *,
    max_images: int = 16,
    max_image_bytes: int = 8 * 1024 * 1024,
) -> ParsedRequest:
    """Turn one TorchServe request mapping into the encoded images it carries.

    Args:
        item: ``data[i]`` as TorchServe passes it to ``handle``.
        content_type: the request's ``Content-Type`` header, if known.
        max_images: images one request may carry.
        max_image_bytes: encoded size limit of one image.

    Returns:
        The parsed request.

    Raises:
        RequestError: malformed body, bad base64, missing fields (400).
        PayloadTooLargeError: too many images or an image above ``max_image_bytes`` (413).
    """
    if not isinstance(item, Mapping):
        raise RequestError(f"unexpected request object {type(item).__name__}")
    if "body" in item:
        parsed = _parse_body(item["body"], content_type, max_image_bytes)
    else:
        parsed = _parse_form(item, max_image_bytes)
    if not parsed.images:
        raise RequestError("the request carries no image")
    if len(parsed.images) > max_images:
        raise PayloadTooLargeError(
            f"the request carries {len(parsed.images)} images; the limit is {max_images}"
        )
    return parsed


def decode_images(
    parsed: ParsedRequest,
    *,
    max_pixels: int,
    max_image_bytes: int,
    max_request_pixels: int | None = None,
) -> list[np.ndarray]:
    """Decode every image of a request to RGB arrays, naming the bad one on failure.

    The image sizes are read from the headers first: an image over ``max_pixels``, or images
    adding up to more than ``max_request_pixels``, are refused before any pixel is decoded.

    Raises:
        KplateError: ``InvalidImageError`` (400) or ``ImageTooLargeError`` (413), with the
            image's index in the message when the request carries several;
            ``PayloadTooLargeError`` (413) when the images together exceed
            ``max_request_pixels``.
    """
    total = 0
    for index, raw in enumerate(parsed.images):
        with _naming(parsed, index):
            size = header_size(raw)
            if size is None:
                continue  # not readable as an image: decode_image says why, below
            check_size(*size, max_pixels)
            total += size[0] * size[1]
    if max_request_pixels is not None and total > max_request_pixels:
        raise PayloadTooLargeError(
            f"the request's {len(parsed.images)} images have {total} pixels in all; the "
            f"limit per request is {max_request_pixels} (send fewer or smaller images per "
            "request)"
        )
    arrays = []
    for index, raw in enumerate(parsed.images):
        with _naming(parsed, index):
            arrays.append(decode_image(raw, max_pixels=max_pixels, max_bytes=max_image_bytes))
    return arrays


@contextmanager
def _naming(parsed: ParsedRequest, index: int) -> Iterator[None]:
    """Re-raise a :class:`KplateError` about image ``index`` with that index in its message,
    when the request carries several images."""
    try:
        yield
    except KplateError as exc:
        if len(parsed.images) == 1:
            raise
        raise type(exc)(f"image {index}: {exc}") from exc


def build_response(
    parsed: ParsedRequest,
    plates: Sequence[Sequence[PlateDict]],
    *,
    model_name: str,
    output_name: str = "plates",
    fallback_id: str | None = None,
) -> Any:
    """The JSON-serialisable response for one request.

    Args:
        parsed: the request as parsed by :func:`parse_request`.
        plates: one list of plate dicts (DOMAIN.md format) per image, in request order; an
            image without plates has an empty list.
        model_name: the served model's name (v2 ``model_name``).
        output_name: the v2 output tensor's name.
        fallback_id: v2 ``id`` when the request sent none (TorchServe's request id).

    Returns:
        ``{"predictions": [...]}`` for v1, a v2 response for v2, else the plate list (single
        image) or the list of plate lists.
    """
    if len(plates) != len(parsed.images):
        raise ValueError(f"{len(plates)} results for {len(parsed.images)} images")
    per_image = [list(p) for p in plates]
    if parsed.kind is BodyKind.V1:
        return {"predictions": per_image}
    if parsed.kind is BodyKind.V2:
        return {
            "model_name": model_name,
            "id": parsed.request_id or fallback_id or str(uuid.uuid4()),
            "outputs": [
                {
                    "name": output_name,
                    "shape": [len(per_image)],
                    "datatype": "BYTES",
                    "data": [json.dumps(p, ensure_ascii=False) for p in per_image],
                }
            ],
        }
    return per_image[0] if parsed.single else per_image


def error_body(exc: KplateError) -> dict[str, Any]:
    """The JSON message a failed request gets: ``{"error": ..., "code": ...}``."""
    return {"error": str(exc), "code": int(exc.http_status)}


def encode_json(obj: Any) -> bytes:
    """UTF-8 JSON bytes, Hangul kept readable."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


# ---------------------------------------------------------------------------------------------
# body formats


def _parse_body(body: Any, content_type: str | None, max_bytes: int) -> ParsedRequest:
    if isinstance(body, Mapping):
        return _parse_json_object(body, max_bytes)
    if isinstance(body, list):
        raise RequestError(
            "a JSON body must be an object with 'instances', 'inputs' or 'data', not an array"
        )
    if isinstance(body, str):
        text = body.strip()
        if text[:1] in ("{", "["):
            return _parse_body(_loads(text), content_type, max_bytes)
        return ParsedRequest(BodyKind.DATA, (_b64decode(text, "body", max_bytes),), single=True)
    if isinstance(body, (bytes, bytearray, memoryview)):
        raw = bytes(body)
        if not raw.strip():
            raise RequestError("empty request body")
        if is_json_content_type(content_type) or raw.lstrip()[:1] in (b"{", b"["):
            return _parse_body(_loads(raw), content_type, max_bytes)
        _check_size(len(raw), "body", max_bytes)
        return ParsedRequest(BodyKind.RAW, (raw,), single=True)
    if body is None:
        raise RequestError("empty request body")
    raise RequestError(f"unsupported JSON body of type {type(body).__name__}")


def _loads(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise RequestError("malformed JSON body: nested too deeply") from exc
    except ValueError as exc:
        # JSONDecodeError and UnicodeDecodeError are ValueErrors, and so is an integer
        # literal over Python's 4,300-digit conversion limit.
        raise RequestError(f"malformed JSON body: {exc}") from exc


def _parse_form(item: Mapping[str, Any], max_bytes: int) -> ParsedRequest:
    fields = [(name, value) for name, value in item.items() if IMAGE_FIELD_RE.match(str(name))]
    if not fields:
        names = ", ".join(sorted(str(k) for k in item)) or "none"
        raise RequestError(
            f"multipart/form body has no image field ('data' or 'file'); fields: {names}"
        )
    images: list[bytes] = []
    for name, value in fields:
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            if not raw:
                raise RequestError(f"form field {name!r}: empty file")
            _check_size(len(raw), f"form field {name!r}", max_bytes)
            images.append(raw)
        elif isinstance(value, str):
            images.append(_b64decode(value, f"form field {name!r}", max_bytes))
        else:
            raise RequestError(f"form field {name!r}: unsupported value {type(value).__name__}")
    return ParsedRequest(BodyKind.MULTIPART, tuple(images), single=len(images) == 1)


def _parse_json_object(obj: Mapping[str, Any], max_bytes: int) -> ParsedRequest:
    if "instances" in obj:
        return _parse_v1(obj["instances"], max_bytes)
    if "inputs" in obj:
        return _parse_v2(obj, max_bytes)
    if "data" in obj:
        data = obj["data"]
        if isinstance(data, str):
            return ParsedRequest(BodyKind.DATA, (_b64decode(data, "data", max_bytes),), True)
        if isinstance(data, list):
            return ParsedRequest(
                BodyKind.DATA,
                tuple(_b64decode(v, f"data[{i}]", max_bytes) for i, v in enumerate(data)),
            )
        raise RequestError(f"'data' must be a base64 string or a list of them, not {_kind(data)}")
    keys = ", ".join(sorted(str(k) for k in obj)) or "none"
    raise RequestError(
        f"unrecognised JSON body: expected 'instances' (KServe v1), 'inputs' (v2) or 'data'; "
        f"got keys: {keys}"
    )


def _parse_v1(instances: Any, max_bytes: int) -> ParsedRequest:
    if not isinstance(instances, list):
        raise RequestError(f"'instances' must be a list, not {_kind(instances)}")
    if not instances:
        raise RequestError("'instances' is empty")
    images: list[bytes] = []
    for i, inst in enumerate(instances):
        where = f"instances[{i}]"
        value: Any
        if isinstance(inst, str):
            value = inst
        elif isinstance(inst, Mapping):
            if "data" in inst:
                value = inst["data"]
            elif "b64" in inst:
                value = inst["b64"]
            elif "image" in inst:
                image = inst["image"]
                value = image.get("b64") if isinstance(image, Mapping) else image
            else:
                keys = ", ".join(sorted(str(k) for k in inst)) or "none"
                raise RequestError(
                    f"{where}: expected 'data', 'b64' or 'image': {{'b64': ...}}; got keys: {keys}"
                )
        else:
            raise RequestError(f"{where}: expected an object or a base64 string, not {_kind(inst)}")
        if isinstance(value, Mapping) and "b64" in value:
            value = value["b64"]
        images.append(_b64decode(value, where, max_bytes))
    return ParsedRequest(BodyKind.V1, tuple(images))


def _parse_v2(obj: Mapping[str, Any], max_bytes: int) -> ParsedRequest:
    inputs = obj["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise RequestError("'inputs' must be a non-empty list of tensors")
    request_id = obj.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"'id' must be a string, not {_kind(request_id)}")
    images: list[bytes] = []
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Mapping):
            raise RequestError(f"inputs[{i}]: expected a tensor object, not {_kind(tensor)}")
        name = tensor.get("name", i)
        datatype = str(tensor.get("datatype", "")).upper()
        if datatype != "BYTES":
            raise RequestError(
                f"input {name!r}: datatype {datatype or 'missing'}; send images as a BYTES "
                "tensor of base64 strings"
            )
        data = tensor.get("data")
        flat = list(_flatten(data)) if isinstance(data, list) else [data]
        if not flat:
            raise RequestError(f"input {name!r}: 'data' is empty")
        shape = tensor.get("shape")
        if shape is not None:
            if not isinstance(shape, list) or not all(
                type(d) is int and d >= 0
                for d in shape  # exactly int: not bool, not float
            ):
                raise RequestError(
                    f"input {name!r}: shape must be a list of non-negative integers, got "
                    f"{shape!r:.100}"
                )
            expected = int(np.prod(shape)) if shape else 1
            if expected != len(flat):
                raise RequestError(
                    f"input {name!r}: shape {shape} holds {expected} elements, data has {len(flat)}"
                )
        images.extend(_b64decode(v, f"input {name!r}[{j}]", max_bytes) for j, v in enumerate(flat))
    return ParsedRequest(BodyKind.V2, tuple(images), request_id=request_id)


def _flatten(data: list[Any]) -> Iterator[Any]:
    """The leaves of nested lists, in order; iterative, so deep nesting cannot overflow."""
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            yield v
        else:
            stack.pop()


def _b64decode(value: Any, where: str, max_bytes: int) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a base64 string, not {_kind(value)}")
    text = _WHITESPACE_RE.sub("", _DATA_URL_RE.sub("", value.strip(), count=1))
    if not text:
        raise RequestError(f"{where}: empty image")
    _check_size(len(text) * 3 // 4, where, max_bytes)
    text = text.replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: invalid base64 ({exc})") from exc
    if not raw:
        raise RequestError(f"{where}: empty image")
    return raw


def _check_size(size: int, where: str, max_bytes: int) -> None:
    if size > max_bytes:
        raise PayloadTooLargeError(f"{where}: image is {size} bytes; the limit is {max_bytes}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
