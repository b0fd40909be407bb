"""KServe-protocol front for TorchServe, built on the ``kserve`` SDK's ``ModelServer``.

It does locally what ``kserve_wrapper`` does in a ``pytorch/torchserve-kfs`` pod: read the
model names and TorchServe's addresses from ``config.properties``, wait until a TorchServe
worker of each model is ``READY`` (management API), then serve on port 8080

* ``GET  /v1/models/<name>``           ready when a TorchServe worker is ready,
* ``POST /v1/models/<name>:predict``   forwarded to TorchServe's ``/v1/models/<name>:predict``,
* ``GET  /v2/health/ready``            ready when every model is,
* ``POST /v2/models/<name>/infer``     forwarded to TorchServe's ``/v2/models/<name>/infer``.

The kplate handler parses KServe bodies itself (no ``service_envelope``), so the front
forwards bodies unchanged. TorchServe's 4xx answers (bad image, bad base64, too large) come
back with their status and JSON message instead of the SDK's generic 500. A body over
TorchServe's own ``max_request_size`` is refused with 413 before it is read (by its
``Content-Length``, or, for a chunked body, as soon as the bytes read pass the limit).

Every error the front answers itself has the handler's shape, ``{"error": "...", "code": N}``
(``handler/protocol.py``'s ``error_body``): a body that is not JSON (400, ``malformed JSON
body: ...``, the handler's words), a v2 body that is not an inference request (400), an
unknown model or route (404), a wrong method (405), a body over the limit (413), TorchServe
unreachable (503) and anything unforeseen (500). TorchServe's own answers keep their status
and body; one without a ``code`` gets it.

Usage::

    python -m handler.kserve_front --ts_config gs/config/config.properties [--http_port 8080]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("kplate.front")

DEFAULT_CONFIG_PATH = "/mnt/models/config/config.properties"
DEFAULT_INFERENCE_ADDRESS = "http://127.0.0.1:8085"
DEFAULT_MANAGEMENT_ADDRESS = "http://127.0.0.1:8085"
#: TorchServe's ``max_request_size`` when config.properties does not set one.
DEFAULT_MAX_REQUEST_SIZE = 6_553_500
#: Headers worth passing on to TorchServe.
FORWARDED_HEADERS = ("x-request-id", "traceparent", "tracestate", "x-b3-traceid")
#: What the front serves, for the answer to an unknown route.
ROUTES = (
    "GET /v1/models/<name>, POST /v1/models/<name>:predict, GET /v2/health/ready, "
    "GET /v2/models/<name>/ready, POST /v2/models/<name>/infer"
)
#: Error bodies the front reads back to put into shape are small; larger ones pass as they are.
MAX_ERROR_BODY = 1 << 20


def error_body(status: int, message: str) -> dict[str, Any]:
    """The JSON body of an error, shaped like the handler's: ``{"error": ..., "code": ...}``."""
    return {"error": message, "code": int(status)}


class FrontError(Exception):
    """A request the front refuses itself (before TorchServe sees it), with its status."""

    def __init__(self, status: int, message: str) -> None:
        """Keep the HTTP status and the message of the ``{"error", "code"}`` answer."""
        super().__init__(message)
        self.status = status
        self.message = message


class PredictorError(Exception):
    """TorchServe answered with a non-2xx status; the front answers with the same."""

    def __init__(self, status: int, body: Any) -> None:
        """Keep TorchServe's status code and (JSON) body."""
        super().__init__(f"TorchServe answered {status}: {body}")
        self.status = status
        self.body = body


class PredictorUnavailableError(PredictorError):
    """TorchServe could not be reached or timed out (503)."""

    def __init__(self, message: str) -> None:
        """Wrap a transport error as a 503 with a JSON message."""
        super().__init__(503, {"error": message, "code": 503})


def read_properties(path: Path) -> dict[str, str]:
    """Parse a Java properties file the way ``kserve_wrapper`` does (``key=value`` lines)."""
    props: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "!")) or "=" not in stripped:
            continue
        key, value = stripped.split("=", 1)
        props[key.strip()] = value.strip()
    return props


def max_request_size(props: Mapping[str, str]) -> int:
    """The largest request body TorchServe accepts: ``max_request_size`` in bytes."""
    return int(props.get("max_request_size", DEFAULT_MAX_REQUEST_SIZE))


def json_problem(body: bytes | str) -> str | None:
    """What is wrong with a body that should be JSON, in the handler's words (its
    ``protocol._loads``); ``None`` when it parses."""
    if not body.strip():
        return "empty request body"
    try:
        json.loads(body)
    except RecursionError:
        return "malformed JSON body: nested too deeply"
    except ValueError as exc:
        return f"malformed JSON body: {exc}"
    return None


def shaped_error(status: int, content: bytes) -> dict[str, Any] | None:
    """``content`` of an error answer as ``{"error": str, "code": status}``; ``None`` when it
    already has that shape (then it goes out unchanged).

    ``{"error": ...}`` (the kserve SDK's handlers) gets its ``code``; ``{"detail": ...}``
    (FastAPI's) and ``{"message": ...}`` become the ``error``; other text is the ``error``.
    """
    try:
        body: Any = orjson.loads(content) if content.strip() else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        if isinstance(body.get("error"), str) and body.get("code") == status:
            return None
        for key in ("error", "detail", "message"):
            if key in body:
                value = body[key]
                text = value if isinstance(value, str) else orjson.dumps(value).decode()
                return error_body(status, text)
    text = content.decode("utf-8", errors="replace").strip()
    return error_body(status, text or HTTPStatus(status).phrase)


class ErrorShape:
    """ASGI middleware: every 4xx/5xx the application sends goes out as
    ``{"error": "...", "code": N}``, and an exception no handler took becomes a logged 500
    in that shape.

    The kserve SDK installs its exception handlers when the server starts (over any installed
    before) and answers ``{"error": ...}`` without a ``code``; FastAPI answers ``{"detail":
    ...}``. Answers below 400 pass untouched, unbuffered.
    """

    def __init__(self, app: ASGIApp) -> None:
        """Wrap ``app``."""
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Call the application, reshaping its error answers on the way out."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []
        started = False

        async def reshape(message: Message) -> None:
            nonlocal start, started
            if message["type"] == "http.response.start":
                started = True
                if message["status"] < 400:
                    await send(message)
                else:
                    start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False) and sum(map(len, chunks)) <= MAX_ERROR_BODY:
                return
            await self._send_shaped(send, start, b"".join(chunks), message.get("more_body", False))
            start = None

        try:
            await self.app(scope, receive, reshape)
        except Exception as exc:
            if started:
                raise
            logger.exception("%s %s failed", scope.get("method"), scope.get("path"))
            await _send_json(send, 500, error_body(500, f"internal error in the front: {exc!r}"))

    @staticmethod
    async def _send_shaped(send: Send, start: Message, content: bytes, more: bool) -> None:
        status = int(start["status"])
        shaped = None if more else shaped_error(status, content)
        if shaped is None:
            await send(start)
            await send({"type": "http.response.body", "body": content, "more_body": more})
            return
        keep = [
            (k, v)
            for k, v in start.get("headers", [])
            if k.lower() not in (b"content-type", b"content-length")
        ]
        await _send_json(send, status, shaped, keep)


async def _send_json(
    send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *(headers or []),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before it is read.

    A declared ``Content-Length`` over the limit is refused at once, without reading a byte
    of the body. A body without one (chunked) is read up to the limit and refused as soon as
    it passes it; one within the limit is handed on to the application unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Wrap ``app``; ``max_bytes`` is the largest body let through."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body's size, then call the application (or answer 413)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            # The HTTP server stops a body at its Content-Length: no need to count.
            if declared > self.max_bytes:
                await self._reject(send, f"request body is {declared} bytes")
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(send, f"chunked request body passed {size} bytes")
                return
            if not message.get("more_body", False):
                break
        pending = iter(messages)

        async def replay() -> Message:
            return next(pending, None) or await receive()

        await self.app(scope, replay, send)

    async def _reject(self, send: Send, what: str) -> None:
        message = f"{what}; the limit is {self.max_bytes} (max_request_size)"
        logger.info("refused: %s", message)
        await _send_json(send, 413, error_body(413, message), [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def model_names(props: Mapping[str, str]) -> list[str]:
    """Model names of ``model_snapshot`` (``["model"]`` when there is none, like the wrapper)."""
    snapshot = json.loads(props.get("model_snapshot", "{}") or "{}")
    names = list(snapshot.get("models", {}))
    return names or ["model"]


def loopback_url(address: str) -> str:
    """The address to call: loopback where TorchServe binds every interface (``0.0.0.0``)."""
    return address.replace("://0.0.0.0", "://127.0.0.1").rstrip("/")


def workers_ready(description: Any) -> bool:
    """True when TorchServe's ``GET /models/<name>`` lists a ``READY`` worker."""
    if not isinstance(description, list) or not description:
        return False
    default = next((v for v in description if isinstance(v, dict)), {})
    workers = default.get("workers") or []
    return any(isinstance(w, dict) and w.get("status") == "READY" for w in workers)


def _import_kserve() -> Any:
    """Import the SDK lazily: ``kserve.model_server`` parses ``sys.argv`` when imported."""
    import kserve

    return kserve


def build_model_class() -> type:
    """The ``kserve.Model`` subclass (built lazily so this module imports without kserve)."""
    kserve = _import_kserve()
    from kserve.protocol.infer_type import InferRequest, InferResponse

    class TorchServeModel(kserve.Model):  # type: ignore[name-defined]
        """Forwards KServe v1/v2 requests for one model to TorchServe over HTTP."""

        def __init__(
            self,
            name: str,
            inference_address: str,
            management_address: str,
            *,
            timeout_s: float = 120.0,
            ready_cache_s: float = 1.0,
        ) -> None:
            super().__init__(name)
            self.inference_address = loopback_url(inference_address)
            self.management_address = loopback_url(management_address)
            self.timeout_s = timeout_s
            self.ready_cache_s = ready_cache_s
            self._client: httpx.AsyncClient | None = None
            self._checked_at = 0.0
            self._healthy = False

        @property
        def client(self) -> httpx.AsyncClient:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self.timeout_s)
            return self._client

        def load(self, wait_s: float = 300.0, interval_s: float = 1.0) -> bool:
            """Block until a TorchServe worker of this model is ready (at most ``wait_s``)."""
            url = f"{self.management_address}/models/{self.name}"
            deadline = time.monotonic() + wait_s
            with httpx.Client(timeout=5.0) as client:
                while True:
                    try:
                        response = client.get(url)
                        if response.status_code == 200 and workers_ready(response.json()):
                            break
                        logger.info("model %s: no ready worker yet", self.name)
                    except (httpx.HTTPError, ValueError) as exc:
                        logger.info("TorchServe management API not reachable yet: %s", exc)
                    if time.monotonic() > deadline:
                        self.ready = False
                        return False
                    time.sleep(interval_s)
            self.ready = True
            self._healthy, self._checked_at = True, time.monotonic()
            logger.info("model %s: TorchServe worker ready", self.name)
            return True

        async def healthy(self) -> bool:
            """Ready only while TorchServe reports a ready worker (checked at most 1/s)."""
            if not self.ready:
                return False
            now = time.monotonic()
            if now - self._checked_at >= self.ready_cache_s:
                url = f"{self.management_address}/models/{self.name}"
                try:
                    response = await self.client.get(url, timeout=2.0)
                    self._healthy = response.status_code == 200 and workers_ready(response.json())
                except (httpx.HTTPError, ValueError):
                    self._healthy = False
                self._checked_at = now
            return self._healthy

        async def predict(
            self,
            payload: Any,
            headers: dict[str, str] | None = None,
            response_headers: dict[str, str] | None = None,
        ) -> Any:
            """Send the request to TorchServe; its 4xx/5xx become :class:`PredictorError`."""
            headers = headers or {}
            forward = {k: headers[k] for k in FORWARDED_HEADERS if k in headers}
            if isinstance(payload, InferRequest):
                body, json_length = payload.to_rest()
                if json_length is not None:
                    raise FrontError(
                        400,
                        "the binary tensor extension is not supported: send the images as "
                        "base64 strings in a BYTES tensor",
                    )
                url = f"{self.inference_address}/v2/models/{self.name}/infer"
                result = await self._post(url, orjson.dumps(body), "application/json", forward)
                try:
                    return InferResponse.from_rest(result)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise PredictorError(
                        502, error_body(502, f"TorchServe sent a non-v2 answer ({exc!r})")
                    ) from exc
            url = f"{self.inference_address}/v1/models/{self.name}:predict"
            if isinstance(payload, (bytes, bytearray)):
                content_type = headers.get("content-type", "application/octet-stream")
                return await self._post(url, bytes(payload), content_type, forward)
            return await self._post(url, orjson.dumps(payload), "application/json", forward)

        async def _post(
            self, url: str, content: bytes, content_type: str, headers: dict[str, str]
        ) -> Any:
            try:
                response = await self.client.post(
                    url, content=content, headers={**headers, "content-type": content_type}
                )
            except httpx.TimeoutException as exc:
                raise PredictorUnavailableError(f"TorchServe timed out: {exc}") from exc
            except httpx.TransportError as exc:
                raise PredictorUnavailableError(f"TorchServe unreachable at {url}: {exc}") from exc
            try:
                body: Any = response.json()
            except ValueError:
                if response.is_success:
                    raise PredictorError(
                        502, error_body(502, "TorchServe sent an answer that is not JSON")
                    ) from None
                body = error_body(
                    response.status_code, response.text.strip() or response.reason_phrase
                )
            if not response.is_success:
                raise PredictorError(response.status_code, body)
            return body

        def stop(self) -> None:
            """Close the HTTP client on shutdown."""
            if self._client is not None:
                client, self._client = self._client, None
                try:
                    asyncio.get_running_loop().create_task(client.aclose())
                except RuntimeError:
                    asyncio.run(client.aclose())

    return TorchServeModel


async def predictor_error_handler(_: Any, exc: Exception) -> Any:
    """FastAPI exception handler: TorchServe's status and JSON body, passed through (one
    that lacks the handler's ``{"error", "code"}`` shape is put into it by :class:`ErrorShape`,
    as every error answer is)."""
    from fastapi.responses import JSONResponse

    if not isinstance(exc, PredictorError):
        raise exc
    return JSONResponse(status_code=exc.status, content=exc.body)


async def front_error_handler(_: Any, exc: Exception) -> Any:
    """FastAPI exception handler of :class:`FrontError`: its status, the handler's shape."""
    from fastapi.responses import JSONResponse

    if not isinstance(exc, FrontError):
        raise exc
    return JSONResponse(status_code=exc.status, content=error_body(exc.status, exc.message))


async def validation_error_handler(_: Any, exc: Exception) -> Any:
    """FastAPI's request validation (the v2 body): 400 like the handler's, not 422.

    A body that is not JSON gets the handler's ``malformed JSON body: ...``; one that is not
    an inference request names the fields at fault.
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    if not isinstance(exc, RequestValidationError):
        raise exc
    errors = list(exc.errors())
    message = None
    if any(e.get("type") == "json_invalid" for e in errors) and isinstance(exc.body, (str, bytes)):
        message = json_problem(exc.body)
    if message is None:
        message = v2_problem(errors)
    return JSONResponse(status_code=400, content=error_body(400, message))


def v2_problem(errors: Sequence[Mapping[str, Any]]) -> str:
    """The message of a v2 body that is not an inference request, from pydantic's errors."""
    problems = []
    for e in errors:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if loc[:1] == ["bytes"]:
            continue  # the SDK's other branch (a binary body): not what was sent
        where = ".".join(loc[1:] if loc[:1] == ["InferenceRequest"] else loc)
        problems.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "not a v2 inference request: " + "; ".join(problems or ["invalid body"])


def sent_as_form(headers: Mapping[str, str] | None, body: bytes | str) -> bool:
    """The body came as ``application/x-www-form-urlencoded`` (``curl -d``'s default) but
    starts like JSON."""
    content_type = (headers or {}).get("content-type", "").split(";")[0].strip().lower()
    start = body.lstrip()[:1]
    return content_type == "application/x-www-form-urlencoded" and start in (
        b"{", b"[", "{", "[",
    )  # fmt: skip


async def http_error_handler(request: Any, exc: Exception) -> Any:
    """Starlette's 404 (no such route) and 405 (wrong method), in the handler's shape."""
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    if not isinstance(exc, HTTPException):
        raise exc
    status = exc.status_code
    route = f"{request.method} {request.url.path}"
    if status == 404:
        message = f"no route {route}: the front serves {ROUTES}"
    elif status == 405:
        message = f"method {request.method} is not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse(
        status_code=status, content=error_body(status, message), headers=exc.headers
    )


def build_parser() -> argparse.ArgumentParser:
    """The front's CLI: the ``kserve`` ModelServer flags plus TorchServe's whereabouts."""
    from kserve.model_server import parser as kserve_parser

    parser = argparse.ArgumentParser(
        description="KServe v1/v2 front for TorchServe", parents=[kserve_parser]
    )
    parser.add_argument(
        "--ts_config",
        type=Path,
        default=Path(os.environ.get("CONFIG_PATH", DEFAULT_CONFIG_PATH)),
        help="TorchServe config.properties (model names and addresses are read from it)",
    )
    parser.add_argument("--inference_address", default=None, help="overrides the config's")
    parser.add_argument("--management_address", default=None, help="overrides the config's")
    parser.add_argument(
        "--max_request_size",
        type=int,
        default=None,
        help="largest request body in bytes (413 above); default: the config's "
        f"max_request_size, else TorchServe's default {DEFAULT_MAX_REQUEST_SIZE}",
    )
    parser.add_argument(
        "--ready_timeout", type=float, default=300.0, help="seconds to wait for TorchServe"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="log the SDK's per-request timing lines (kserve.trace); off by default: at "
        "hundreds of requests per second they cost more than the forwarding",
    )
    parser.set_defaults(enable_grpc=False, http_port=8080, enable_latency_logging=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the front; returns the exit status (1 when TorchServe never got ready)."""
    args = build_parser().parse_args(argv)
    kserve = _import_kserve()
    from fastapi.exceptions import RequestValidationError
    from kserve.errors import InvalidInput
    from kserve.model_server import app
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.rest.v2_datamodels import InferenceRequest
    from pydantic import ValidationError
    from starlette.exceptions import HTTPException

    props = read_properties(args.ts_config)
    inference = args.inference_address or props.get("inference_address", DEFAULT_INFERENCE_ADDRESS)
    management = args.management_address or props.get(
        "management_address", DEFAULT_MANAGEMENT_ADDRESS
    )
    names = [args.model_name] if args.model_name != "model" else model_names(props)
    model_class = build_model_class()
    models = []
    for name in names:
        model = model_class(
            name, inference, management, timeout_s=args.predictor_request_timeout_seconds
        )
        if not model.load(wait_s=args.ready_timeout):
            logger.error("model %s: no TorchServe worker ready after %ss", name, args.ready_timeout)
            return 1
        models.append(model)

    class FrontDataPlane(DataPlane):
        """``/v2/health/ready`` is true only while every model has a ready worker; a JSON body
        that does not parse is refused in the handler's words, and JSON sent as a form
        (``curl -d``) is read as JSON."""

        def decode(
            self,
            body: Any,
            headers: Any,
            protocol_version: str = "v1",
            model_name: str | None = None,
        ) -> Any:
            if isinstance(body, (bytes, str)) and sent_as_form(headers, body):
                # `curl -d` sends JSON as a form: read it as JSON, as the handler reads a raw
                # body that starts like JSON (TorchServe would parse it as form fields).
                problem = json_problem(body)
                if problem is not None:
                    raise FrontError(400, problem)
                if protocol_version.lower() == "v2":
                    try:
                        body = InferenceRequest.model_validate_json(body)
                    except ValidationError as exc:
                        raise FrontError(400, v2_problem(exc.errors())) from None
                else:
                    headers = {**headers, "content-type": "application/json"}
            try:
                return super().decode(body, headers, protocol_version, model_name)
            except InvalidInput:
                problem = json_problem(body) if isinstance(body, (bytes, str)) else None
                if problem is None:
                    raise
                raise FrontError(400, problem) from None

        async def ready(self) -> bool:
            registry = self.model_registry.get_models()
            return bool(registry) and all(
                [await self.model_registry.is_model_ready(n) for n in registry]
            )

    app.add_exception_handler(PredictorError, predictor_error_handler)
    app.add_exception_handler(FrontError, front_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    body_limit = args.max_request_size or max_request_size(props)
    app.add_middleware(BodySizeLimit, max_bytes=body_limit)
    # Added last, so it runs outside BodySizeLimit: it sees every answer of the application.
    app.add_middleware(ErrorShape)
    server = kserve.ModelServer(
        http_port=args.http_port,
        workers=1,
        enable_grpc=False,
        enable_docs_url=False,
        enable_latency_logging=args.enable_latency_logging,
    )
    if not args.trace:
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.dataplane = FrontDataPlane(model_registry=server.registered_models)
    logger.info(
        "KServe front on :%d -> TorchServe %s (models %s, bodies up to %d bytes)",
        args.http_port,
        inference,
        names,
        body_limit,
    )
    server.start(models)
    return 0


if __name__ == "__main__":
    sys.exit(main())
