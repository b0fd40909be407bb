"""The KServe front (``handler/kserve_front.py``) over real HTTP, in front of a stand-in
TorchServe: a stdlib HTTP server on loopback that reports a READY worker and answers every
prediction with an empty plate list. The full path through real TorchServe is in
``test_serving_integration.py``.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from serving_support import REPO_ROOT, b64, http_stand_in, jpeg_bytes

from handler.kserve_front import (
    DEFAULT_MAX_REQUEST_SIZE,
    ErrorShape,
    json_problem,
    max_request_size,
    shaped_error,
)
from handler.local_serving import free_port

#: max_request_size of the front under test, small so that the tests send little.
LIMIT = 100_000
#: Bytes a refused body could have had: far more than the front may read of it.
HUGE = 200 * 1024 * 1024


#: What the stand-in TorchServe answers a prediction whose X-Request-Id names one of these:
#: (status, content type, body).
TS_ANSWERS: dict[str, tuple[int, str, bytes]] = {
    "handler-400": (
        400,
        "application/json",
        b'{"error": "cannot decode image (5 bytes): Truncated File Read", "code": 400}',
    ),
    "torchserve-503": (
        503,
        "application/json",
        b'{"code": 503, "type": "ServiceUnavailableException", "message": "no worker"}',
    ),
    "text-500": (500, "text/plain", b"worker died\n"),
    "text-200": (200, "text/html", b"<html>not json</html>"),
}


class _FakeTorchServe(BaseHTTPRequestHandler):
    """TorchServe's management answer (a READY worker, unless ``server.ready`` is false) and a
    v1 answer to predictions (or one of ``TS_ANSWERS``, by the request's X-Request-Id)."""

    def do_GET(self) -> None:
        status = "READY" if self.server.ready else "UNLOADING"  # type: ignore[attr-defined]
        self._answer([{"modelName": "kplate", "workers": [{"status": status}]}])

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts.append(len(body))  # type: ignore[attr-defined]
        self.server.content_types.append(self.headers.get("Content-Type"))  # type: ignore[attr-defined]
        self.server.traces.append(  # type: ignore[attr-defined]
            {k: self.headers[k] for k in ("X-Request-Id", "traceparent") if k in self.headers}
        )
        canned = TS_ANSWERS.get(self.headers.get("X-Request-Id", ""))
        if canned is not None:
            self._answer(canned[2], status=canned[0], content_type=canned[1])
            return
        self._answer({"predictions": [[]]})

    def _answer(self, obj: Any, status: int = 200, content_type: str = "application/json") -> None:
        data = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def torchserve() -> Iterator[ThreadingHTTPServer]:
    with http_stand_in(_FakeTorchServe) as server:
        server.posts = []  # type: ignore[attr-defined]
        server.ready = True  # type: ignore[attr-defined]
        server.content_types = []  # type: ignore[attr-defined]
        server.traces = []  # type: ignore[attr-defined]
        yield server


@pytest.fixture(scope="module")
def front(
    torchserve: ThreadingHTTPServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The front as ``make serve`` runs it, reading a config.properties with a small
    max_request_size; yields its base URL."""
    root = tmp_path_factory.mktemp("front")
    address = f"http://127.0.0.1:{torchserve.server_port}"
    config = root / "config.properties"
    config.write_text(
        f"inference_address={address}\nmanagement_address={address}\n"
        f"max_request_size={LIMIT}\n"
        'model_snapshot={"name":"startup.cfg","modelCount":1,'
        '"models":{"kplate":{"1.0":{"marName":"kplate.mar"}}}}\n',
        encoding="utf-8",
    )
    port = free_port()
    log = (root / "front.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "handler.kserve_front", "--ts_config", str(config),
         "--http_port", str(port), "--ready_timeout", "30"],
        cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the front exited:\n{(root / 'front.log').read_text()}")
            try:
                if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the front never got ready:\n{(root / 'front.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def _raw_post(url: str, headers: list[str], chunks: Iterator[bytes]) -> tuple[int, Any, int]:
    """POST over a bare socket, sending ``chunks`` until the server answers: returns the
    status, the JSON body and how many bytes of the body were sent by then."""
    host, port = url.removeprefix("http://").split(":")
    head = ["POST /v1/models/kplate:predict HTTP/1.1", f"Host: {host}", *headers, "", ""]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode())
        sent = 0
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer is there: stop sending
            if not select.select([], [sock], [], 5)[1]:
                break  # the server stopped reading
            try:
                sent += sock.send(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < _expected_length(answer):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head_text, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_text.split(b" ", 2)[1])
    return status, json.loads(body), sent


def _expected_length(answer: bytes) -> int:
    head, sep, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + len(sep) + int(value)
    return len(answer) + 1


def _zeros(total: int, size: int = 16384) -> Iterator[bytes]:
    for _ in range(total // size):
        yield b"0" * size


def _chunked(total: int, size: int = 16384) -> Iterator[bytes]:
    for piece in _zeros(total, size):
        yield b"%x\r\n%s\r\n" % (len(piece), piece)


def test_limit_comes_from_config_properties() -> None:
    assert max_request_size({"max_request_size": "8388608"}) == 8_388_608
    assert max_request_size({}) == DEFAULT_MAX_REQUEST_SIZE


def test_a_body_within_the_limit_is_forwarded(front: str, torchserve: ThreadingHTTPServer) -> None:
    body = {"instances": [{"data": b64(jpeg_bytes())}]}
    response = requests.post(f"{front}/v1/models/kplate:predict", json=body, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[]]}


def _refused_unread(
    front: str, torchserve: ThreadingHTTPServer, headers: list[str], body: Iterator[bytes]
) -> dict[str, Any]:
    """POST ``body`` raw; assert a 413 came before a quarter of it was sent and nothing reached
    TorchServe; return the JSON answer."""
    before = len(torchserve.posts)  # type: ignore[attr-defined]
    status, answer, sent = _raw_post(front, headers, body)
    assert status == 413, answer
    assert sent < HUGE // 4, f"the client could send {sent} bytes before the answer"
    assert len(torchserve.posts) == before  # type: ignore[attr-defined]
    return answer


def test_a_declared_length_over_the_limit_is_refused_unread(
    front: str, torchserve: ThreadingHTTPServer
) -> None:
    headers = ["Content-Type: application/json", f"Content-Length: {HUGE}"]
    body = _refused_unread(front, torchserve, headers, _zeros(HUGE))
    assert body["code"] == 413
    assert str(HUGE) in body["error"] and str(LIMIT) in body["error"]


def test_a_chunked_body_over_the_limit_is_refused_once_past_it(
    front: str, torchserve: ThreadingHTTPServer
) -> None:
    headers = ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    body = _refused_unread(front, torchserve, headers, _chunked(HUGE))
    assert str(LIMIT) in body["error"] and "chunked" in body["error"]


def test_a_chunked_body_within_the_limit_is_forwarded(
    front: str, torchserve: ThreadingHTTPServer
) -> None:
    text = json.dumps({"instances": [{"data": b64(jpeg_bytes())}]}).encode()

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(text), 1000):
            yield text[start : start + 1000]

    response = requests.post(
        f"{front}/v1/models/kplate:predict",
        data=pieces(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [[]]}
    assert torchserve.posts[-1] > 0  # type: ignore[attr-defined]


def _exactly(size: int) -> bytes:
    """A v1 request of exactly ``size`` bytes (JSON padded with spaces)."""
    text = json.dumps({"instances": [{"data": b64(jpeg_bytes())}]}).encode()
    assert len(text) <= size
    return text + b" " * (size - len(text))


def test_a_body_of_exactly_the_limit_is_forwarded(
    front: str, torchserve: ThreadingHTTPServer
) -> None:
    """``max_request_size`` is the largest body TorchServe takes: one of that size is let
    through, whether its length is declared or it comes chunked."""
    body = _exactly(LIMIT)

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(body), 16384):
            yield body[start : start + 16384]

    for data in (body, pieces()):
        before = len(torchserve.posts)  # type: ignore[attr-defined]
        response = requests.post(
            f"{front}/v1/models/kplate:predict", data=data, headers=JSON, timeout=30
        )
        assert response.status_code == 200, response.text
        assert len(torchserve.posts) == before + 1  # type: ignore[attr-defined]


# --- the front's own errors: the handler's shape, {"error": "...", "code": N} ----------------

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}  # what `curl -d` sends


def _assert_shaped(response: requests.Response, status: int) -> str:
    """The answer has ``status`` and exactly the handler's error shape; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert body["code"] == status and isinstance(body["error"], str) and body["error"]
    return str(body["error"])


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/v1/models/kplate:predict", JSON),
        ("/v2/models/kplate/infer", JSON),
        ("/v1/models/kplate:predict", FORM),
        ("/v2/models/kplate/infer", FORM),
    ],
    ids=["v1", "v2", "v1-curl-d", "v2-curl-d"],
)
def test_malformed_json_gets_the_handlers_message(
    front: str, torchserve: ThreadingHTTPServer, path: str, headers: dict[str, str]
) -> None:
    before = len(torchserve.posts)  # type: ignore[attr-defined]
    response = requests.post(f"{front}{path}", data=b"{bad", headers=headers, timeout=30)
    message = _assert_shaped(response, 400)
    # The handler's words for the same body (handler/protocol.py, docs/serving.md).
    assert message == (
        "malformed JSON body: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )
    assert len(torchserve.posts) == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "/v1/models/kplate:predict", b"", 400, "empty request body"),
        ("POST", "/v1/models/kplate:predict", b"[" * 50_000, 400, "malformed JSON body"),
        ("POST", "/v1/models/kplate:predict", b'{"instances": 3}', 400, "instances"),
        ("POST", "/v2/models/kplate/infer", b'{"inputs": 3}', 400, "inputs"),
        ("POST", "/v2/models/kplate/infer", b'{"x": 1}', 400, "inputs: Field required"),
        ("POST", "/v1/models/nope:predict", b"{}", 404, "nope"),
        ("POST", "/v2/models/nope/infer", b'{"inputs": []}', 404, "nope"),
        ("GET", "/v1/models/nope", None, 404, "nope"),
        ("GET", "/v2/models/nope/ready", None, 404, "nope"),
        ("GET", "/nowhere", None, 404, "/v1/models/<name>:predict"),
        ("DELETE", "/v2/health/ready", None, 405, "DELETE"),
        ("GET", "/v2/models/kplate/infer", None, 405, "GET"),
        ("POST", "/v2/models/kplate/versions/2/infer", b'{"inputs": []}', 501, "version"),
        ("POST", "/v1/models/kplate:explain", b"{}", 501, "explain"),
    ],
)
def test_the_fronts_own_errors_have_the_handlers_shape(
    front: str,
    torchserve: ThreadingHTTPServer,
    method: str,
    path: str,
    body: bytes | None,
    status: int,
    fragment: str,
) -> None:
    before = len(torchserve.posts)  # type: ignore[attr-defined]
    response = requests.request(method, f"{front}{path}", data=body, headers=JSON, timeout=30)
    assert fragment in _assert_shaped(response, status)
    assert len(torchserve.posts) == before  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/models/kplate:predict", {"instances": [{"data": "x"}]}),
        ("/v2/models/kplate/infer", {"inputs": 3}),
    ],
)
def test_json_sent_as_a_form_is_read_as_json(
    front: str, torchserve: ThreadingHTTPServer, path: str, body: dict[str, Any]
) -> None:
    """`curl -d '{...}'` sends JSON as application/x-www-form-urlencoded, which TorchServe
    would parse as form fields: the front reads it as JSON."""
    before = len(torchserve.posts)  # type: ignore[attr-defined]
    response = requests.post(f"{front}{path}", data=json.dumps(body), headers=FORM, timeout=30)
    if path.startswith("/v1"):
        assert response.status_code == 200, response.text
        assert torchserve.content_types[-1] == "application/json"  # type: ignore[attr-defined]
    else:
        assert "not a v2 inference request: inputs" in _assert_shaped(response, 400)
        assert len(torchserve.posts) == before  # type: ignore[attr-defined]
    form = requests.post(f"{front}/v1/models/kplate:predict", data={"a": "b"}, timeout=30)
    assert form.status_code == 200  # a real form still goes to TorchServe as it is
    assert torchserve.content_types[-1] == FORM["Content-Type"]  # type: ignore[attr-defined]


def test_a_body_over_the_limit_has_the_handlers_shape(front: str) -> None:
    response = requests.post(
        f"{front}/v1/models/kplate:predict", data=b"0" * (LIMIT + 1), headers=JSON, timeout=30
    )
    assert "max_request_size" in _assert_shaped(response, 413)


def test_not_ready_has_the_handlers_shape(front: str, torchserve: ThreadingHTTPServer) -> None:
    torchserve.ready = False  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 30
        while True:  # the front asks TorchServe at most once a second
            response = requests.get(f"{front}/v1/models/kplate", timeout=30)
            if response.status_code != 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert "not ready" in _assert_shaped(response, 503)
    finally:
        torchserve.ready = True  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while requests.get(f"{front}/v1/models/kplate", timeout=30).status_code != 200:
            assert time.monotonic() < deadline, "the front did not get ready again"
            time.sleep(0.3)


def _predict(front: str, answer: str, path: str = "/v1/models/kplate:predict") -> requests.Response:
    body: dict[str, Any] = {"instances": [{"data": b64(jpeg_bytes())}]}
    if path.startswith("/v2"):
        body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["x"]}]}
    return requests.post(f"{front}{path}", json=body, headers={"X-Request-Id": answer}, timeout=30)


def test_trace_headers_reach_torchserve(front: str, torchserve: ThreadingHTTPServer) -> None:
    trace = {"X-Request-Id": "abc-1", "traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    bodies: dict[str, Any] = {
        "/v1/models/kplate:predict": {"instances": [{"data": b64(jpeg_bytes())}]},
        "/v2/models/kplate/infer": {
            "inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": ["x"]}]
        },
    }
    for path, body in bodies.items():
        requests.post(f"{front}{path}", json=body, headers=trace, timeout=30)
        assert torchserve.traces[-1] == trace, path  # type: ignore[attr-defined]


def test_torchserve_errors_pass_through_unchanged(front: str) -> None:
    response = _predict(front, "handler-400")
    assert response.status_code == 400
    assert response.json() == json.loads(TS_ANSWERS["handler-400"][2])


def test_torchserve_errors_without_the_shape_get_it(front: str) -> None:
    assert _assert_shaped(_predict(front, "torchserve-503"), 503) == "no worker"
    assert _assert_shaped(_predict(front, "text-500"), 500) == "worker died"


def test_an_answer_torchserve_should_not_give_is_a_502(front: str) -> None:
    assert "not JSON" in _assert_shaped(_predict(front, "text-200"), 502)
    # The stand-in answers a v2 request with a v1 body.
    assert "non-v2" in _assert_shaped(_predict(front, "", "/v2/models/kplate/infer"), 502)


def test_error_shape_middleware() -> None:
    """Errors of the application, the kserve SDK's and FastAPI's shapes included, and an
    exception no handler took, all leave as {"error", "code"}; other answers untouched."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route
    from starlette.testclient import TestClient

    async def sdk(_: Any) -> Response:
        return JSONResponse({"error": "Model with name x does not exist."}, status_code=404)

    async def fastapi(_: Any) -> Response:
        return JSONResponse({"detail": "Not Found"}, status_code=404)

    async def text(_: Any) -> Response:
        return PlainTextResponse("oops", status_code=502)

    async def fine(_: Any) -> Response:
        return JSONResponse({"detail": "kept"}, status_code=200)

    async def boom(_: Any) -> Response:
        raise RuntimeError("unforeseen")

    routes = [Route(f"/{f.__name__}", f) for f in (sdk, fastapi, text, fine, boom)]
    # As in the front: inside Starlette's outermost ServerErrorMiddleware.
    app = Starlette(routes=routes, middleware=[Middleware(ErrorShape)])
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/sdk").json() == {
            "error": "Model with name x does not exist.",
            "code": 404,
        }
        assert client.get("/fastapi").json() == {"error": "Not Found", "code": 404}
        assert client.get("/text").json() == {"error": "oops", "code": 502}
        assert client.get("/fine").json() == {"detail": "kept"}
        answer = client.get("/boom")
        assert answer.status_code == 500
        assert answer.json() == {
            "error": "internal error in the front: RuntimeError('unforeseen')",
            "code": 500,
        }


def test_shaped_error_and_json_problem() -> None:
    shaped = b'{"error": "x", "code": 400}'
    assert shaped_error(400, shaped) is None
    assert shaped_error(413, shaped) == {"error": "x", "code": 413}
    assert shaped_error(422, b'{"detail": [{"msg": "m"}]}') == {
        "error": '[{"msg":"m"}]',
        "code": 422,
    }
    assert shaped_error(503, b"") == {"error": "Service Unavailable", "code": 503}
    assert json_problem(b'{"a": 1}') is None
    assert json_problem(b"  ") == "empty request body"
    assert json_problem("{bad") == (
        "malformed JSON body: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)"
    )
