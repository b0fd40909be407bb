"""Real TorchServe and the real KServe front, on free loopback ports, from a freshly built .mar.

The module builds ``kplate.mar`` into a temporary folder, renders ``gs/config/config.properties``
onto free loopback ports (everything else as committed: batchSize 4, maxBatchDelay, limits),
starts both servers, and stops them in the fixture's teardown, also when a test fails.
Every body format goes over HTTP and through ``request/request.py``.

Skips only when java or the engine's weights are absent. ``KPLATE_SERVING_PACKAGE`` may point
to another copy of the ``kplate`` package (e.g. one with other weights) to archive instead.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image
from serving_support import (
    REPO_ROOT,
    assert_plate_list,
    b64,
    engine_ready,
    jpeg_bytes,
    png_bytes,
    sample_images,
)

from handler.archive import build_mar
from handler.local_serving import LocalServing, Ports, ServingError, find_java, render_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
REQUEST_CLI = REPO_ROOT / "request" / "request.py"


def _package_dir() -> Path:
    override = os.environ.get("KPLATE_SERVING_PACKAGE")
    return Path(override) if override else REPO_ROOT / "kplate"


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServing]:
    """TorchServe + front from a .mar built for this run; always stopped afterwards."""
    try:
        find_java()
    except ServingError as exc:
        pytest.skip(str(exc))
    package = _package_dir()
    has_weights = all((package / "weights" / n).is_file() for n in ("detector.pt", "reader.pt"))
    if not has_weights or (package == REPO_ROOT / "kplate" and not engine_ready()):
        pytest.skip(f"no engine weights in {package / 'weights'}")
    root = tmp_path_factory.mktemp("serving")
    build_mar(root / "model-store", package_dir=package)
    ports = Ports.free()
    config = render_config(
        REPO_ROOT / "gs" / "config" / "config.properties", root / "config.properties", ports
    )
    server = LocalServing(
        config, root / "model-store", root / "state", front_port=ports.front, env=THREAD_ENV
    )
    try:
        server.start(timeout_s=300)
        yield server
    finally:
        server.stop()
        assert server.running() == {}


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    """The committed samples (synthetic scenes), else generated JPEGs."""
    found = [p.read_bytes() for p in sample_images()]
    return found[:3] if found else [jpeg_bytes(seed=s, width=320, height=240) for s in range(3)]


def _same_up_to_rounding(got: Any, want: Any) -> None:
    """Equal JSON, numbers within float rounding: a batched kernel may round an image's
    numbers differently from the same image alone (texts and every other field exact)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), (got, want)
        for k in want:
            _same_up_to_rounding(got[k], want[k])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), (got, want)
        for g, w in zip(got, want):
            _same_up_to_rounding(g, w)
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        assert got == pytest.approx(want, abs=0.01), (got, want)  # pixels and scores
    else:
        assert got == want


def _json(response: requests.Response) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def test_readiness(serving: LocalServing) -> None:
    front, name = serving.front_url, serving.model_name
    assert _json(requests.get(f"{front}/v1/models/{name}", timeout=10)) == {
        "name": name,
        "ready": True,
    }
    assert _json(requests.get(f"{front}/v2/health/ready", timeout=10))["ready"] is True
    assert requests.get(f"{serving.inference_url}/ping", timeout=10).status_code == 200
    assert requests.get(f"{front}/v1/models/nope", timeout=10).status_code == 404


def test_worker_imports_kplate_from_the_mar(serving: LocalServing) -> None:
    log = (serving.log_dir / "model_log.log").read_text(encoding="utf-8", errors="replace")
    found = re.findall(r"kplate \S+ imported from (\S+)", log)
    assert found, "the handler did not log where kplate came from"
    assert not found[-1].startswith(str(REPO_ROOT)), found[-1]


def test_every_body_format_over_http(serving: LocalServing, images: list[bytes]) -> None:
    img, other = images[0], images[1]
    ts = f"{serving.inference_url}/predictions/{serving.model_name}"
    v1_ts = f"{serving.inference_url}/v1/models/{serving.model_name}:predict"
    v1 = f"{serving.front_url}/v1/models/{serving.model_name}:predict"
    v2 = f"{serving.front_url}/v2/models/{serving.model_name}/infer"
    headers = {"Content-Type": "application/octet-stream"}

    raw = _json(requests.post(ts, data=img, headers=headers, timeout=60))
    assert_plate_list(raw)
    assert _json(requests.post(ts, files={"data": ("a.jpg", img, "image/jpeg")}, timeout=60)) == raw
    assert _json(requests.post(ts, files={"file": ("a.jpg", img, "image/jpeg")}, timeout=60)) == raw
    two_files = _json(
        requests.post(ts, files={"file": ("a.jpg", img), "file2": ("b.jpg", other)}, timeout=60)
    )
    assert two_files[0] == raw and len(two_files) == 2
    assert _json(requests.post(ts, json={"data": b64(img)}, timeout=60)) == raw

    instances = [{"data": b64(img)}, {"b64": b64(other)}, {"image": {"b64": b64(img)}}]
    for url in (v1, v1_ts):
        body = _json(requests.post(url, json={"instances": instances}, timeout=60))
        assert list(body) == ["predictions"]
        assert body["predictions"][0] == raw == body["predictions"][2]
        assert_plate_list(body["predictions"][1])

    request = {
        "id": "it-1",
        "inputs": [
            {"name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(img), b64(other)]}
        ],
    }
    out = _json(requests.post(v2, json=request, timeout=60))
    assert out["model_name"] == serving.model_name
    assert out["id"] == "it-1"
    (tensor,) = out["outputs"]
    assert tensor["datatype"] == "BYTES" and tensor["shape"] == [2]
    assert json.loads(tensor["data"][0]) == raw
    # The front's v1 answer is TorchServe's, unchanged.
    assert _json(requests.post(v1, json={"instances": [{"data": b64(img)}]}, timeout=60)) == {
        "predictions": [raw]
    }


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        ({"instances": [{"data": "***"}]}, 400, "base64"),
        ({"instances": [{"data": b64(b"\xff\xd8\xff\xe0 truncated")}]}, 400, "decode"),
        ({"instances": [{"data": b64(png_bytes(8000, 6000))}]}, 413, "pixels"),
        ({"instances": [{"data": b64(b"")}]}, 400, "empty"),
        ({"instances": "x"}, 400, "list"),
        ({"wrong": 1}, 400, "instances"),
    ],
)
def test_bad_input_is_4xx_with_json_through_the_front(
    serving: LocalServing, body: Any, status: int, fragment: str
) -> None:
    url = f"{serving.front_url}/v1/models/{serving.model_name}:predict"
    response = requests.post(url, json=body, timeout=60)
    assert response.status_code == status, response.text
    assert fragment in _json(response)["error"]


def test_bad_input_over_every_path(serving: LocalServing) -> None:
    v1 = f"{serving.front_url}/v1/models/{serving.model_name}:predict"
    v2 = f"{serving.front_url}/v2/models/{serving.model_name}/infer"
    ts = f"{serving.inference_url}/predictions/{serving.model_name}"
    bad_json = requests.post(
        v1, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert bad_json.status_code == 400 and "error" in _json(bad_json)
    bad_ts = requests.post(
        ts, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert bad_ts.status_code == 400 and "malformed JSON" in _json(bad_ts)["error"]
    empty = requests.post(ts, data=b"", headers={"Content-Type": "image/jpeg"}, timeout=30)
    assert 400 <= empty.status_code < 500
    v2_bad = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@"]}]}
    response = requests.post(v2, json=v2_bad, timeout=30)
    assert response.status_code == 400 and "base64" in _json(response)["error"]
    too_big = requests.post(ts, data=b"\0" * (9 * 1024 * 1024), timeout=60)
    assert too_big.status_code == 413


def test_concurrent_v1_requests_are_batched(serving: LocalServing, images: list[bytes]) -> None:
    url = f"{serving.front_url}/v1/models/{serving.model_name}:predict"
    bodies = [{"instances": [{"data": b64(images[i % len(images)])}]} for i in range(16)]
    before = len(_batch_lines(serving))
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(lambda b: requests.post(url, json=b, timeout=120), bodies))
    assert [r.status_code for r in responses] == [200] * 16
    sizes = [n for n, _ in _batch_lines(serving, skip=before, until=16)]
    assert sum(sizes) >= 16
    expected = {
        i: _json(requests.post(url, json=bodies[i], timeout=60)) for i in range(len(images))
    }
    for i, response in enumerate(responses):
        _same_up_to_rounding(response.json(), expected[i % len(images)])
    assert max(sizes) > 1, f"no batch larger than 1: {sizes}"
    assert max(sizes) <= 4
    metrics = requests.get(f"{serving.metrics_url}/metrics", timeout=10).text
    assert "ts_inference_requests_total" in metrics
    batches = _metric(metrics, "KplateBatches")
    batched = _metric(metrics, "KplateBatchedRequests")
    assert batched > batches > 0


def test_a_bad_item_fails_alone_in_a_batch(serving: LocalServing, images: list[bytes]) -> None:
    ts = f"{serving.inference_url}/predictions/{serving.model_name}"
    payloads = [images[0], b"not an image", images[1], b"\xff\xd8\xff", images[2], images[0]]
    for _ in range(5):
        before = len(_batch_lines(serving))
        with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
            responses = list(
                pool.map(
                    lambda p: requests.post(
                        ts, data=p, headers={"Content-Type": "image/jpeg"}, timeout=120
                    ),
                    payloads,
                )
            )
        assert [r.status_code for r in responses] == [200, 400, 200, 400, 200, 200]
        for r in responses:
            body = _json(r)
            if r.status_code == 200:
                assert_plate_list(body)
            else:
                assert body["code"] == 400 and "decode" in body["error"]
        calls = _batch_lines(serving, skip=before, until=len(payloads))
        mixed = [(n, failed) for n, failed in calls if n > 1 and 0 < failed < n]
        if mixed:
            return
    pytest.fail("never saw a batch mixing good and bad requests")


def test_request_cli_against_the_servers(serving: LocalServing, tmp_path: Path) -> None:
    samples = sample_images()[:2]
    if not samples:
        samples = [tmp_path / "a.jpg"]
        samples[0].write_bytes(jpeg_bytes(width=320, height=240))
    files = [str(p) for p in samples]
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "none"), **THREAD_ENV}
    env.pop("KUBERNETES_SERVICE_HOST", None)

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(REQUEST_CLI), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    v1 = cli(*files, "--kserve", "--url", serving.front_url, "--json")
    assert v1.returncode == 0, v1.stderr
    (v1_body,) = [json.loads(v1.stdout)]
    assert len(v1_body["predictions"]) == len(files)

    v2 = cli(*files, "--kserve", "--protocol", "v2", "--url", serving.front_url, "--json")
    assert v2.returncode == 0, v2.stderr
    v2_lists = [json.loads(x) for x in json.loads(v2.stdout)["outputs"][0]["data"]]
    assert v2_lists == v1_body["predictions"]

    direct = cli(files[0], "--url", serving.inference_url)
    assert direct.returncode == 0, direct.stderr
    assert f"{samples[0].name}: " in direct.stdout

    piped = cli("-", "--kserve", "--url", serving.front_url, stdin=b64(samples[0].read_bytes()))
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.splitlines()[0].startswith("-: ")

    out_dir = tmp_path / "annotated"
    saved = cli(files[0], "--kserve", "--url", serving.front_url, "--save-annotated", str(out_dir))
    assert saved.returncode == 0, saved.stderr
    assert (out_dir / f"{samples[0].stem}_plates.jpg").is_file()

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    failed = cli(str(broken), files[0], "--kserve", "--url", serving.front_url)
    assert failed.returncode == 2, failed.stderr  # refused here, the other image read
    assert f"{broken}: cannot decode image" in failed.stderr
    assert failed.stdout.startswith(f"{samples[0].name}: ")
    huge = tmp_path / "huge.png"  # a small file of 48 MP: over the server's 40 MP an image
    huge.write_bytes(png_bytes(8000, 6000))
    fitted = cli(str(huge), files[0], "--kserve", "--url", serving.front_url)
    assert fitted.returncode == 0, fitted.stderr  # downscaled here, not refused there
    assert fitted.stdout.startswith("huge.png: ") and f"{samples[0].name}: " in fitted.stdout


def test_request_cli_downscales_big_images(serving: LocalServing, tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (1800, 1800, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 6_000_000
    done = subprocess.run(
        [sys.executable, str(REQUEST_CLI), str(big), "--kserve", "--url", serving.front_url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, **THREAD_ENV},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("big.png: ")


# -- helpers -----------------------------------------------------------------------------------

_BATCH_RE = re.compile(r"kplate batch: (\d+) requests, \d+ images, (\d+) failed")


def _batch_lines(serving: LocalServing, skip: int = 0, until: int = 0) -> list[tuple[int, int]]:
    """``(requests, failed)`` of the worker's ``handle`` calls after the first ``skip``.

    The worker's log reaches the file shortly after the responses: wait (at most 15 s) until
    the calls account for ``until`` requests.
    """
    deadline = time.monotonic() + 15
    while True:
        text = (serving.log_dir / "model_log.log").read_text(encoding="utf-8", errors="replace")
        lines = [(int(n), int(f)) for n, f in _BATCH_RE.findall(text)][skip:]
        if sum(n for n, _ in lines) >= until or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def _metric(text: str, name: str) -> float:
    values = [
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
    ]
    assert values, f"{name} not in /metrics"
    return sum(values)
