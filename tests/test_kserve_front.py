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

from handler.kserve_front import DEFAULT_MAX_REQUEST_SIZE, max_request_size
from handler.local_serving import free_port

#: max_request_size of the front under test, small so that the tests send little.
LIMIT = 100_000
#: Bytes a refused body could have had: far more than the front may read of it.
HUGE = 200 * 1024 * 1024


class _FakeTorchServe(BaseHTTPRequestHandler):
    """TorchServe's management answer (a READY worker) and a v1 answer to predictions."""

    def do_GET(self) -> None:
        self._answer([{"modelName": "kplate", "workers": [{"status": "READY"}]}])

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts.append(len(body))  # type: ignore[attr-defined]
        self._answer({"predictions": [[]]})

    def _answer(self, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def torchserve() -> Iterator[ThreadingHTTPServer]:
    with http_stand_in(_FakeTorchServe) as server:
        server.posts = []  # type: ignore[attr-defined]
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
