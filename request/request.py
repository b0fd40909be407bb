#!/usr/bin/env python3
"""Send images to the kplate model and show the plates it reads.

    python request/request.py request/samples/scene_000.jpg --kserve
    python request/request.py a.jpg b.jpg --kserve --protocol v2 --json
    python request/request.py a.jpg                       # TorchServe's /predictions/kplate
    base64 -w0 a.jpg | python request/request.py - --kserve

With ``--kserve`` the images go, base64-encoded, to the KServe predict endpoint (v1
``{"instances": [...]}`` or v2 ``{"inputs": [...]}``). Without ``--url`` the client looks for
the InferenceService in the current kubernetes context (``--namespace``, ``--isvc``) and
calls it through the ingress gateway with its ``Host`` header; without a reachable cluster
it calls the local front started by ``make serve`` (``http://127.0.0.1:8080``). Without
``--kserve`` each image goes as raw bytes to TorchServe's ``/predictions/<model>``
(``http://127.0.0.1:8085``).

Every request stays under 6 MB, 16 images and 48 MP in all, and each image under 40 MP (the
served model's ``max_images_per_request``, ``max_request_pixels`` and ``max_pixels``): bigger
images are re-encoded as JPEG and downscaled, and more images are split over several
requests. Plate coordinates, in the printed plates and in ``--json``'s responses alike, are
mapped back to the original image.

Each image is checked here first (read, and decoded with Pillow as the server would): a file
that cannot be read or decoded is reported on stderr by its name and the others are still
sent. A request the server refuses is reported by the names of its files; when the server
names one image of it, that image is left out and the others are sent again. The other
requests go on either way.

Exit status: 0 every image read, 1 requests or Pillow missing (run by an interpreter without
them and no ``.venv`` beside: ``make install`` makes it, and the script then runs in it), 2 bad
arguments, or some image could not be read or decoded here (the others are still sent), 3
server unreachable (stops there), 4 the server refused some image or request with an HTTP error
(the others are still sent; 4 rather than 2 when both happen), 141 the output's reader closed it
first (``| head``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import logging
import math
import os
import re
import socket
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlparse

#: The project's virtual environment (``make install``), which has this client's packages.
VENV = Path(__file__).resolve().parents[1] / ".venv"
EXIT_MISSING_PACKAGES = 1


def _run_in_venv_or_exit(missing: ImportError) -> NoReturn:
    """Run as ``python request/request.py`` by an interpreter without requests and Pillow:
    go on in the project's ``.venv`` when there is one, else say what to install and exit."""
    venv_python = VENV / "bin" / "python"
    in_venv = Path(sys.prefix).resolve() == VENV.resolve()
    if venv_python.is_file() and not in_venv:
        os.execv(venv_python, [str(venv_python), __file__, *sys.argv[1:]])
    sys.stderr.write(
        f"request.py needs the packages requests and Pillow ({missing}): run `make install`, "
        "which installs them into .venv (this script then uses it), "
        "or `pip install requests pillow`\n"
    )
    sys.exit(EXIT_MISSING_PACKAGES)


try:
    import requests
    import urllib3
    from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError
except ImportError as e:
    if __name__ != "__main__":
        raise
    _run_in_venv_or_exit(e)

log = logging.getLogger("kplate.request")

#: Hard cap of one request body (6 MB), JSON framing included.
MAX_REQUEST_BYTES = 6_000_000
#: Room for the JSON around the base64 text of the images.
JSON_OVERHEAD = 2_048
#: Images in one request: the served model's ``max_images_per_request``
#: (handler/model-config.yaml) answers 413 above it.
MAX_IMAGES_PER_REQUEST = 16
#: Pixels of one image and of all images of one request: the served model's ``max_pixels``
#: and ``max_request_pixels`` (handler/model-config.yaml) answer 413 above them. Bigger images
#: are downscaled here, and requests split: five well-compressed 12 MP photos fit 6 MB together
#: but not 48 MP, and the server refused all five.
MAX_IMAGE_PIXELS = 40_000_000
MAX_REQUEST_PIXELS = 48_000_000
#: The formats the server decodes (``kplate.imageio.FORMATS``; tests/test_request_cli.py
#: checks that the two agree): others are refused here, before any request.
SERVER_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
#: The InferenceService looked for with ``--kserve`` and no ``--url``.
DEFAULT_NAMESPACE, DEFAULT_ISVC = "default", "kplate"
LOCAL_FRONT = "http://127.0.0.1:8080"
LOCAL_TORCHSERVE = "http://127.0.0.1:8085"
EXIT_OK, EXIT_INPUT, EXIT_UNREACHABLE, EXIT_HTTP, EXIT_BROKEN_PIPE = 0, 2, 3, 4, 141
KOREAN_FONTS = (
    "/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf",
    "/usr/share/fonts/truetype/nanum/NanumGothic.ttf",
    "/usr/share/fonts/truetype/unfonts-core/UnDotumBold.ttf",
    "/usr/share/fonts/truetype/baekmuk/dotum.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/System/Library/Fonts/AppleSDGothicNeo.ttc",
    "C:/Windows/Fonts/malgun.ttf",
)


class ClientError(Exception):
    """A failure with a message for the user and an exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        """Keep the message and the exit status."""
        super().__init__(message)
        self.exit_code = exit_code


class ServerError(ClientError):
    """The server answered with an HTTP error status (exit 4)."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        """Keep the URL, the status and the server's message."""
        super().__init__(f"{url}: HTTP {status}: {detail}", EXIT_HTTP)
        self.url, self.status, self.detail = url, status, detail


@dataclass
class Failure:
    """Images of one request that were not read: the message names their files."""

    message: str
    exit_code: int = EXIT_HTTP


@dataclass
class Prepared:
    """One image ready to send.

    Attributes:
        name: file name (or ``-``) for display.
        data: encoded bytes that will be sent.
        scale: original size / sent size (1.0 when sent unchanged).
        original: the image file's bytes, for ``--save-annotated``.
        source: the path as given (or ``-``), for messages; ``name`` when empty.
        pixels: width x height of the image sent.
    """

    name: str
    data: bytes
    scale: float
    original: bytes
    source: str = ""
    pixels: int = 0

    @property
    def label(self) -> str:
        """The path as given, for messages."""
        return self.source or self.name


@dataclass
class Answer:
    """The plates of the images of one request and the response as ``--json`` prints it,
    both with the coordinates mapped back to the original images."""

    images: list[Prepared]
    plates: list[list[dict[str, Any]]]
    raw: Any


@dataclass(frozen=True)
class Endpoint:
    """Where to send: the base URL and the ``Host`` header (KServe behind an ingress)."""

    url: str
    host: str | None = None


# -- images ------------------------------------------------------------------------------------


def read_input(path: str, stdin: Any = None) -> tuple[str, bytes]:
    """Read an image file, or base64 text from standard input for ``-``.

    Raises:
        ClientError: missing, empty or unreadable file, a directory, or bad base64 (exit 2).
    """
    if path == "-":
        text = (stdin or sys.stdin).read().strip()
        if "," in text[:100] and text.startswith("data:"):
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ClientError(f"standard input is not base64: {exc}", EXIT_INPUT) from exc
        if not data:
            raise ClientError("standard input is empty", EXIT_INPUT)
        return "-", data
    file = Path(path)
    if file.is_dir():
        example = Path(path) / "*.jpg"
        raise ClientError(
            f"{path}: is a directory: give the image files in it (e.g. {example})", EXIT_INPUT
        )
    if not file.is_file():
        raise ClientError(f"{path}: no such file", EXIT_INPUT)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ClientError(f"{path}: cannot read: {exc.strerror or exc}", EXIT_INPUT) from exc
    if not data:
        raise ClientError(f"{path}: empty file", EXIT_INPUT)
    return file.name, data


def open_image(data: bytes, source: str) -> Image.Image:
    """The image decoded as the server decodes it (one of :data:`SERVER_FORMATS`, whole).

    Raises:
        ClientError: the bytes are not such an image, or a truncated or corrupt one (exit 2).
    """
    if not data:
        raise ClientError(f"{source}: empty image", EXIT_INPUT)
    try:
        image = Image.open(io.BytesIO(data), formats=SERVER_FORMATS)
        image.load()
    except UnidentifiedImageError as exc:
        raise ClientError(
            f"{source}: not an image the server reads ({', '.join(SERVER_FORMATS)})", EXIT_INPUT
        ) from exc
    except Image.DecompressionBombError as exc:
        raise ClientError(f"{source}: too many pixels ({exc})", EXIT_INPUT) from exc
    except Exception as exc:  # Pillow raises many types for truncated or corrupt data
        raise ClientError(f"{source}: cannot decode image: {exc}", EXIT_INPUT) from exc
    return image


def fit_image(
    name: str,
    data: bytes,
    max_bytes: int,
    source: str = "",
    max_pixels: int = MAX_IMAGE_PIXELS,
) -> Prepared:
    """Check that ``data`` decodes as the server decodes it; return it unchanged when it fits
    ``max_bytes`` and ``max_pixels``, else a smaller JPEG that does. ``source``: the path as
    given, for messages.

    Raises:
        ClientError: the bytes are not an image the server reads (exit 2).
    """
    decoded = open_image(data, source or name)
    pixels = decoded.width * decoded.height
    if len(data) <= max_bytes and pixels <= max_pixels:
        return Prepared(name, data, 1.0, data, source, pixels)
    image = ImageOps.exif_transpose(decoded).convert("RGB")
    base, scale = image, min(1.0, 0.999 * math.sqrt(max_pixels / pixels))
    while True:
        size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
        if size != image.size:
            image = base.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        if buf.tell() <= max_bytes or min(image.size) <= 64:
            break
        scale *= 0.75
    sent = buf.getvalue()
    log.info("%s: %dx%d, %d bytes, re-encoded to %dx%d, %d bytes", name, *base.size, len(data),
             *image.size, len(sent))  # fmt: skip
    return Prepared(name, sent, base.width / image.width, data, source, image.width * image.height)


def chunks(
    images: Sequence[Prepared],
    max_payload: int,
    max_images: int = MAX_IMAGES_PER_REQUEST,
    max_pixels: int = MAX_REQUEST_PIXELS,
) -> Iterator[list[Prepared]]:
    """Group images so that each request's base64 payload stays under ``max_payload`` and
    it carries at most ``max_images`` images of at most ``max_pixels`` in all."""
    group: list[Prepared] = []
    size = pixels = 0
    for image in images:
        encoded = 4 * ((len(image.data) + 2) // 3) + 64
        full = size + encoded > max_payload or pixels + image.pixels > max_pixels
        if group and (full or len(group) >= max_images):
            yield group
            group, size, pixels = [], 0, 0
        group.append(image)
        size += encoded
        pixels += image.pixels
    if group:
        yield group


# -- endpoints ---------------------------------------------------------------------------------


def discover_kserve(namespace: str, isvc: str, timeout: float) -> tuple[Endpoint | None, str]:
    """Find the InferenceService in the current kubernetes context: its endpoint (``None``
    when not found) and how it was found, or why not.

    The URL is the ingress gateway's address when it has one (``istio-ingressgateway``),
    with the InferenceService's host name as ``Host`` header, else ``status.url`` itself.
    """
    try:
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException
    except ImportError:
        return None, "the kubernetes package is not installed"
    try:
        config.load_kube_config()
    except (ConfigException, OSError, TypeError) as exc:
        try:
            config.load_incluster_config()
        except ConfigException:
            return None, f"no kubernetes context ({_first_line(exc)}) and not in a cluster"
    api_server = client.Configuration.get_default_copy().host
    if not _api_server_reachable(api_server, timeout):
        return None, f"the kubernetes API server {api_server} is not reachable"
    api = client.CustomObjectsApi()
    try:
        obj = api.get_namespaced_custom_object(
            "serving.kserve.io",
            "v1beta1",
            namespace,
            "inferenceservices",
            isvc,
            _request_timeout=timeout,
        )
    except client.ApiException as exc:
        return None, f"no InferenceService {namespace}/{isvc} at {api_server} ({exc.reason})"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return None, f"the kubernetes API at {api_server} failed ({type(exc).__name__})"
    status = obj.get("status") if isinstance(obj, dict) else None
    url = (status or {}).get("url")
    if not url:
        return None, f"InferenceService {namespace}/{isvc} has no URL yet (not ready?)"
    host = urlparse(url).netloc
    gateway = _ingress_gateway(client, timeout)
    if gateway:
        return Endpoint(gateway, host), f"{url}, through the ingress gateway"
    return Endpoint(url.rstrip("/"), None), f"{url} (no ingress gateway address)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _api_server_reachable(host: str, timeout: float) -> bool:
    """A TCP connect to the API server, so a dead cluster costs one timeout, not retries."""
    url = urlparse(host)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "localhost", port), timeout=timeout):
            return True
    except OSError:
        return False


def _ingress_gateway(client: Any, timeout: float) -> str | None:
    try:
        svc = client.CoreV1Api().read_namespaced_service(
            "istio-ingressgateway", "istio-system", _request_timeout=timeout
        )
    except (client.ApiException, urllib3.exceptions.HTTPError, OSError):
        return None
    ingress = (svc.status.load_balancer.ingress or []) if svc.status.load_balancer else []
    if not ingress:
        return None
    address = ingress[0].ip or ingress[0].hostname
    port = next((p.port for p in svc.spec.ports or [] if p.name == "http2"), 80)
    return f"http://{address}:{port}"


def choose_endpoint(args: argparse.Namespace) -> Endpoint:
    """The endpoint from ``--url``, the cluster, or the local default; logged with why, and
    a warning when an InferenceService named by ``--namespace`` or ``--isvc`` is not found."""
    named = args.namespace is not None or args.isvc is not None
    namespace = args.namespace or DEFAULT_NAMESPACE
    isvc = args.isvc or DEFAULT_ISVC
    if args.url:
        endpoint = Endpoint(args.url.rstrip("/"), args.host)
        log.info("endpoint %s%s: --url", endpoint.url, _host_note(endpoint))
        return endpoint
    if not args.kserve:
        if named:
            log.warning("warning: --namespace and --isvc are used with --kserve only")
        endpoint = Endpoint(LOCAL_TORCHSERVE, args.host)
        log.info("endpoint %s%s: TorchServe on this machine (no --kserve)", endpoint.url,
                 _host_note(endpoint))  # fmt: skip
        return endpoint
    found, how = discover_kserve(namespace, isvc, min(args.timeout, 5.0))
    if found:
        log.info("endpoint %s%s: InferenceService %s/%s, %s", found.url, _host_note(found),
                 namespace, isvc, how)  # fmt: skip
        return found
    endpoint = Endpoint(LOCAL_FRONT, args.host)
    if named:
        log.warning("warning: InferenceService %s/%s not found: %s; sending to the local "
                    "front %s instead", namespace, isvc, how, endpoint.url)  # fmt: skip
    else:
        log.info("endpoint %s%s: the local front (`make serve`), since %s", endpoint.url,
                 _host_note(endpoint), how)  # fmt: skip
    return endpoint


def _host_note(endpoint: Endpoint) -> str:
    return f" (Host: {endpoint.host})" if endpoint.host else ""


# -- requests ----------------------------------------------------------------------------------


def kserve_body(images: Sequence[Prepared], protocol: str) -> dict[str, Any]:
    """The KServe v1 or v2 JSON body for ``images``."""
    data = [base64.b64encode(i.data).decode("ascii") for i in images]
    if protocol == "v2":
        return {
            "inputs": [{"name": "image", "shape": [len(data)], "datatype": "BYTES", "data": data}]
        }
    return {"instances": [{"data": d} for d in data]}


def post(
    url: str, *, timeout: float, host: str | None, json_body: Any = None, data: bytes | None = None
) -> Any:
    """POST and return the JSON answer.

    Raises:
        ClientError: unreachable (exit 3), or an answer that is not JSON (exit 4).
        ServerError: an HTTP error status (exit 4).
    """
    headers = {"Host": host} if host else {}
    if data is not None:
        headers["Content-Type"] = "application/octet-stream"
    started = time.monotonic()
    try:
        response = requests.post(url, json=json_body, data=data, headers=headers, timeout=timeout)
    except requests.Timeout as exc:
        raise ClientError(f"{url}: no answer within {timeout:g}s", EXIT_UNREACHABLE) from exc
    except requests.ConnectionError as exc:
        hint = " (start it with `make serve`)" if "127.0.0.1" in url else ""
        raise ClientError(f"{url}: server unreachable{hint}", EXIT_UNREACHABLE) from exc
    log.info("POST %s: %d bytes sent, HTTP %d in %.2f s", url, len(response.request.body or b""),
             response.status_code, time.monotonic() - started)  # fmt: skip
    try:
        body = response.json()
    except ValueError:
        body = None
    if not response.ok:
        message = body.get("error") or body.get("message") if isinstance(body, dict) else None
        message = message or response.text.strip()[:500] or response.reason
        raise ServerError(url, response.status_code, str(message))
    if body is None:
        raise ClientError(f"{url}: the answer is not JSON", EXIT_HTTP)
    return body


#: How the server's error message names one image of a request (handler/protocol.py):
#: ``image 1: ...``, ``instances[1]: ...`` (v1) or ``input 'image'[1]: ...`` (v2).
IMAGE_INDEX_RE = re.compile(r"(?:image (\d+)|instances\[(\d+)\]|input '[^']*'\[(\d+)\]): ")


def named_image(detail: str, count: int) -> tuple[int, str] | None:
    """The index of the image of a ``count``-image request that the server's message names,
    and the message without it; ``None`` when it names none."""
    match = IMAGE_INDEX_RE.match(detail)
    if not match:
        return None
    index = int(next(g for g in match.groups() if g is not None))
    return (index, detail[match.end() :]) if index < count else None


def recognise(
    images: Sequence[Prepared], endpoint: Endpoint, args: argparse.Namespace
) -> Iterator[Answer | Failure]:
    """Send the images; yield, request by request, their plates (an :class:`Answer`) or a
    :class:`Failure` that names the files the server refused or answered wrongly.

    When the server refuses a request for one image it names, that image fails alone and the
    others of the request are sent again.

    Raises:
        ClientError: the server unreachable (exit 3): nothing more is sent.
    """
    if not args.kserve:
        url = f"{endpoint.url}/predictions/{args.model_name}"
        log.info("%d image(s), one request each, to %s", len(images), url)
        for image in images:
            try:
                body = post(url, timeout=args.timeout, host=endpoint.host, data=image.data)
                found = rescale(_as_plate_list(body, url), image.scale)
            except ClientError as exc:
                if exc.exit_code != EXIT_HTTP:
                    raise
                yield Failure(_refused([image], exc))
                continue
            yield Answer([image], [found], found)
        return
    if args.protocol == "v2":
        url = f"{endpoint.url}/v2/models/{args.model_name}/infer"
    else:
        url = f"{endpoint.url}/v1/models/{args.model_name}:predict"
    groups = list(chunks(images, MAX_REQUEST_BYTES - JSON_OVERHEAD))
    log.info("%d image(s) in %d request(s) to %s", len(images), len(groups), url)
    for group in groups:
        yield from _send_group(list(group), url, endpoint, args)


def _send_group(
    group: list[Prepared], url: str, endpoint: Endpoint, args: argparse.Namespace
) -> Iterator[Answer | Failure]:
    while group:
        try:
            body = post(
                url,
                timeout=args.timeout,
                host=endpoint.host,
                json_body=kserve_body(group, args.protocol),
            )
            answer = _kserve_answer(body, group, url, args.protocol)
        except ServerError as exc:
            named = named_image(exc.detail, len(group))
            if named is None:
                yield Failure(_refused(group, exc))
                return
            index, detail = named
            yield Failure(_refused([group.pop(index)], ServerError(url, exc.status, detail)))
            if group:
                log.info("sending the other %d image(s) of that request again", len(group))
            continue
        except ClientError as exc:
            if exc.exit_code != EXIT_HTTP:
                raise
            yield Failure(_refused(group, exc))
            return
        yield answer
        return


def _refused(images: Sequence[Prepared], exc: ClientError) -> str:
    """The message of a request that failed, naming its files."""
    names = ", ".join(i.label for i in images)
    if isinstance(exc, ServerError):
        message = f"HTTP {exc.status} from {exc.url}: {exc.detail}"
    else:
        message = str(exc)
    if len(images) > 1:
        return f"{names}: {message} (one request: none of these images was read)"
    return f"{names}: {message}"


def _kserve_answer(body: Any, group: list[Prepared], url: str, protocol: str) -> Answer:
    """The plates of a KServe answer, mapped back to the original images.

    Raises:
        ClientError: not the answer expected (exit 4).
    """
    lists: Any
    if protocol == "v2":
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not outputs:
            raise ClientError(f"{url}: v2 answer without outputs", EXIT_HTTP)
        lists = [json.loads(x) if isinstance(x, str) else x for x in outputs[0]["data"]]
    else:
        lists = body.get("predictions") if isinstance(body, dict) else None
    if not isinstance(lists, list) or len(lists) != len(group):
        raise ClientError(f"{url}: expected {len(group)} results, got {lists!r:.200}", EXIT_HTTP)
    mapped = [rescale(_as_plate_list(x, url), i.scale) for x, i in zip(lists, group)]
    return Answer(list(group), mapped, _with_plates(body, mapped, protocol))


def _with_plates(body: dict[str, Any], plates: list[list[dict[str, Any]]], protocol: str) -> Any:
    """A KServe response with its plate lists replaced by ``plates`` (mapped back to the
    original images); the response itself when they are the same."""
    if protocol == "v2":
        output = body["outputs"][0]
        sent = [json.loads(x) if isinstance(x, str) else x for x in output["data"]]
        if sent == plates:
            return body
        data = [json.dumps(p, ensure_ascii=False) if isinstance(x, str) else p
                for p, x in zip(plates, output["data"])]  # fmt: skip
        return {**body, "outputs": [{**output, "data": data}, *body["outputs"][1:]]}
    if body["predictions"] == plates:
        return body
    return {**body, "predictions": plates}


def _as_plate_list(value: Any, url: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise ClientError(f"{url}: expected a plate list, got {value!r:.200}", EXIT_HTTP)
    return value


def rescale(plates: list[dict[str, Any]], scale: float) -> list[dict[str, Any]]:
    """Map plate coordinates from the sent image back to the original (the same list when
    the image was sent unchanged)."""
    if scale == 1.0:
        return plates
    out = []
    for plate in plates:
        p = dict(plate)
        p["box"] = [round(v * scale, 1) for v in plate["box"]]
        p["corners"] = [[round(x * scale, 1), round(y * scale, 1)] for x, y in plate["corners"]]
        p["width"] = round(plate["width"] * scale, 1)
        p["height"] = round(plate["height"] * scale, 1)
        out.append(p)
    return out


# -- display -----------------------------------------------------------------------------------


def display_width(text: str) -> int:
    """Terminal columns of ``text`` (Hangul takes two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def plate_lines(plate: dict[str, Any]) -> list[str]:
    """The plate's text laid out like the plate: one line, or region/type/use over serial."""
    parts = plate.get("type_number"), plate.get("use_char"), plate.get("serial")
    if not all(parts):
        return [str(plate.get("text", ""))]
    type_number, use_char, serial = parts
    region = plate.get("region") or ""
    if plate.get("layout") == "two-line":
        return [" ".join(x for x in (region, type_number, use_char) if x), str(serial)]
    return [f"{region}{type_number}{use_char} {serial}".strip()]


def draw_plate(plate: dict[str, Any]) -> str:
    """A box drawing of the plate followed by its fields."""
    lines = plate_lines(plate)
    inner = max(display_width(line) for line in lines) + 4
    rows = ["┌" + "─" * inner + "┐"]
    for line in lines:
        pad = inner - display_width(line)
        rows.append("│" + " " * (pad // 2) + line + " " * (pad - pad // 2) + "│")
    rows.append("└" + "─" * inner + "┘")
    box = ", ".join(f"{v:g}" for v in plate["box"])
    fields = [
        f"text {plate.get('text')}  ({'valid' if plate.get('valid') else 'not a legal pattern'})",
        f"{plate.get('layout')}, {plate.get('color')}; region {plate.get('region') or '-'}; "
        f"type {plate.get('type_number')} ({plate.get('type_code') or '-'}); "
        f"use {plate.get('use_char')} ({plate.get('use') or '-'}); serial {plate.get('serial')}",
        f"box [{box}]  score {plate.get('score', 0):.2f}  text score "
        f"{plate.get('text_score', 0):.2f}",
    ]
    return "\n".join(rows + ["  " + f for f in fields])


def korean_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """A font with Hangul glyphs when one is installed, else PIL's default."""
    for path in KOREAN_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    for pattern in ("*Nanum*.ttf", "*Un*.ttf", "*CJK*.tt?"):
        found = sorted(Path("/usr/share/fonts").rglob(pattern))
        if found:
            return ImageFont.truetype(str(found[0]), size)
    log.warning("no Korean font found: Hangul labels will not render (apt-get install fonts-nanum)")
    return ImageFont.load_default()


def annotate(original: bytes, plates: list[dict[str, Any]], out: Path) -> Path:
    """Write the image with each plate's outline and text label."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(original))).convert("RGB")
    draw = ImageDraw.Draw(image)
    size = max(14, image.height // 30)
    font = korean_font(size)
    for plate in plates:
        corners = [tuple(p) for p in plate["corners"]]
        draw.polygon(corners, outline=(0, 255, 0), width=max(2, size // 8))
        x1, y1 = plate["box"][0], plate["box"][1]
        label = " / ".join(plate_lines(plate))
        left, top, right, bottom = draw.textbbox((x1, y1 - size - 6), label, font=font)
        draw.rectangle((left - 3, top - 3, right + 3, bottom + 3), fill=(0, 0, 0))
        draw.text((x1, y1 - size - 6), label, font=font, fill=(255, 255, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, quality=92)
    return out


# -- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        description="Read Korean licence plates with the served kplate model.",
        epilog="Each image is checked here first: a file that cannot be read or decoded is "
        "reported on stderr and the others are still sent. Exit status: 0 every image read; "
        "2 bad arguments, or some image could not be read or decoded; 3 server unreachable; "
        "4 the server refused some image or request (its files are named, the other requests "
        "still go; 4 rather than 2 when both happen). -v logs the endpoint chosen and why, "
        "and each request.",
    )
    parser.add_argument(
        "images", nargs="+", help="image files (not directories), or - for base64 on stdin"
    )
    parser.add_argument(
        "--kserve", action="store_true", help="use the KServe predict endpoint (base64 JSON)"
    )
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v1", help="KServe protocol")
    parser.add_argument("--url", help="base URL (default: cluster, then the local servers)")
    parser.add_argument("--host", help="Host header, e.g. kplate.default.example.com")
    parser.add_argument("--model-name", default="kplate", help="model name in the URL path")
    parser.add_argument(
        "--namespace",
        help=f"InferenceService namespace (default: {DEFAULT_NAMESPACE}); when given and the "
        "InferenceService is not found, a warning before the local front is used",
    )
    parser.add_argument(
        "--isvc", help=f"InferenceService name (default: {DEFAULT_ISVC}; as --namespace)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    parser.add_argument("--json", action="store_true", help="print the raw response(s)")
    parser.add_argument(
        "--save-annotated", type=Path, metavar="DIR", help="write images with plates drawn"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log the endpoint chosen and why, each request and its time",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Do the work; returns the exit status, raising :class:`ClientError` on a failure that
    stops it (bad arguments, server unreachable). An image that cannot be read, or that the
    server refuses, is reported on stderr and the others go on."""
    if args.images.count("-") > 1:
        raise ClientError("- (standard input) can be given once", EXIT_INPUT)
    started = time.monotonic()
    max_image = (MAX_REQUEST_BYTES - JSON_OVERHEAD) * 3 // 4 if args.kserve else MAX_REQUEST_BYTES
    status = EXIT_OK
    prepared: list[Prepared] = []
    for path in args.images:
        try:
            name, data = read_input(path)
            prepared.append(fit_image(name, data, max_image, source=path))
        except ClientError as exc:
            report(str(exc))
            status = max(status, exc.exit_code)
    if not prepared:
        if len(args.images) > 1:
            report("no image could be read: nothing sent")
        return status
    endpoint = choose_endpoint(args)
    names = {id(i): n for i, n in zip(prepared, annotated_names([i.name for i in prepared]))}
    read = 0
    for outcome in recognise(prepared, endpoint, args):
        if isinstance(outcome, Failure):
            report(outcome.message)
            status = max(status, outcome.exit_code)
            continue
        read += len(outcome.images)
        if args.json:
            print(json.dumps(outcome.raw, ensure_ascii=False, indent=2))
        for image, found in zip(outcome.images, outcome.plates):
            if not args.json:
                print(f"{image.name}: {len(found)} plate{'s' if len(found) != 1 else ''}")
                for plate in found:
                    print(draw_plate(plate))
            if args.save_annotated:
                out = annotate(image.original, found, args.save_annotated / names[id(image)])
                print(f"annotated: {out}", file=sys.stderr)
    log.info("%d of %d image(s) read in %.2f s", read, len(args.images),
             time.monotonic() - started)  # fmt: skip
    return status


def report(message: str) -> None:
    """One error line on stderr."""
    print(f"error: {message}", file=sys.stderr)


def annotated_names(names: Sequence[str]) -> list[str]:
    """``<stem>_plates.jpg`` for each input (``stdin`` for ``-``), numbered ``<stem>-2``,
    ``<stem>-3``, ... where inputs share a stem (``a/car.jpg`` and ``b/car.jpg``), so no
    annotated image overwrites another."""
    stems = [Path(n).stem if n != "-" else "stdin" for n in names]
    taken = {s for s in stems if stems.count(s) == 1}
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        name = stem
        if stems.count(stem) > 1:
            while True:
                seen[stem] = seen.get(stem, 0) + 1
                name = stem if seen[stem] == 1 else f"{stem}-{seen[stem]}"
                if name not in taken:
                    break
        taken.add(name)
        out.append(f"{name}_plates.jpg")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s"
    )
    try:
        return run(args)
    except ClientError as exc:
        report(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # `request.py ... | head`: stop quietly; stdout to /dev/null for the exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
