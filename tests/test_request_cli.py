"""request/request.py without the model: layout drawing, size limits, endpoints, exit codes.

HTTP behaviour is checked against a real stdlib HTTP server on loopback; the full path
through TorchServe and the KServe front is in ``test_serving_integration.py``.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from serving_support import REPO_ROOT, http_stand_in, jpeg_bytes
from tools import load_module

from handler.local_serving import free_port

cli = load_module("kplate_request_cli", REPO_ROOT / "request" / "request.py")

ONE_LINE = {
    "text": "123가4567", "layout": "one-line", "color": "white", "region": None,
    "type_number": "123", "type_code": "passenger", "use_char": "가", "use": "private",
    "serial": "4567", "box": [10.0, 20.0, 110.0, 45.0], "width": 100.0, "height": 25.0,
    "corners": [[10, 20], [110, 20], [110, 45], [10, 45]], "score": 0.9, "text_score": 0.8,
    "valid": True,
}  # fmt: skip
TWO_LINE = {
    **ONE_LINE, "text": "서울12가3456", "layout": "two-line", "color": "green",
    "region": "서울", "type_number": "12", "serial": "3456",
}  # fmt: skip


def test_one_line_drawing() -> None:
    assert cli.plate_lines(ONE_LINE) == ["123가 4567"]
    drawing = cli.draw_plate(ONE_LINE)
    rows = drawing.splitlines()
    assert rows[0].startswith("┌") and rows[2].startswith("└")
    assert "│" in rows[1] and "123가 4567" in rows[1]
    assert cli.display_width(rows[0]) == cli.display_width(rows[1])
    assert "passenger" in drawing and "private" in drawing and "valid" in drawing


def test_two_line_drawing_stacks_serial() -> None:
    assert cli.plate_lines(TWO_LINE) == ["서울 12 가", "3456"]
    rows = cli.draw_plate(TWO_LINE).splitlines()
    assert "서울 12 가" in rows[1] and "3456" in rows[2]
    assert len({cli.display_width(r) for r in rows[:4]}) == 1


def test_unparsed_text_is_shown_as_read() -> None:
    plate = {**ONE_LINE, "text": "12X", "type_number": None, "use_char": None, "serial": None}
    assert cli.plate_lines(plate) == ["12X"]


def test_display_width_counts_hangul_double() -> None:
    assert cli.display_width("12가") == 4


def _noise_jpeg(size: int) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def test_fit_image_keeps_small_and_shrinks_big() -> None:
    small = jpeg_bytes()
    kept = cli.fit_image("a.jpg", small, 10_000_000)
    assert kept.data is small and kept.scale == 1.0
    big = _noise_jpeg(600)
    fitted = cli.fit_image("b.jpg", big, 40_000)
    assert len(fitted.data) <= 40_000 < len(big)
    assert fitted.scale > 1.0
    with Image.open(io.BytesIO(fitted.data)) as im:
        assert im.width == pytest.approx(600 / fitted.scale, abs=1)


def test_fit_image_rejects_non_images() -> None:
    with pytest.raises(cli.ClientError) as info:
        cli.fit_image("x.txt", b"x" * 100, 10)
    assert info.value.exit_code == cli.EXIT_INPUT


def test_requests_are_split_under_the_limit() -> None:
    images = [cli.Prepared(f"{i}", b"x" * 3000, 1.0, b"") for i in range(5)]
    groups = list(cli.chunks(images, 9000))
    assert [len(g) for g in groups] == [2, 2, 1]
    for group in groups:
        assert len(json.dumps(cli.kserve_body(group, "v1"))) < 9000


def test_requests_carry_at_most_the_servers_image_count() -> None:
    """Twenty small images fit one request's bytes, not the server's 16 images a request."""
    images = [cli.Prepared(f"{i}", b"x" * 10, 1.0, b"") for i in range(20)]
    assert [len(g) for g in cli.chunks(images, 10**6)] == [16, 4]
    assert [len(g) for g in cli.chunks(images, 10**6, max_images=7)] == [7, 7, 6]


def test_the_clients_limits_are_the_served_models() -> None:
    served = yaml.safe_load((REPO_ROOT / "handler" / "model-config.yaml").read_text())["handler"]
    assert served["max_images_per_request"] == cli.MAX_IMAGES_PER_REQUEST
    assert served["max_pixels"] == cli.MAX_IMAGE_PIXELS
    assert served["max_request_pixels"] == cli.MAX_REQUEST_PIXELS


def test_requests_stay_under_the_servers_pixel_budget() -> None:
    """Five well-compressed 12 MP photos fit one request's bytes but would be 60 MP: the
    server would refuse all five."""
    photos = [cli.Prepared(f"{i}", b"x" * 10, 1.0, b"", pixels=12_000_000) for i in range(5)]
    assert [len(g) for g in cli.chunks(photos, 10**6)] == [4, 1]


def test_an_image_over_the_servers_pixel_limit_is_downscaled_to_fit() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (90, 120, 200)).save(buf, "PNG")  # a small file, many pixels
    small = buf.getvalue()
    prepared = cli.fit_image("big.png", small, 10**6, max_pixels=60_000)
    with Image.open(io.BytesIO(prepared.data)) as sent:
        assert sent.format == "JPEG" and sent.width * sent.height <= 60_000
        assert prepared.pixels == sent.width * sent.height
        assert prepared.scale == pytest.approx(400 / sent.width)
    assert prepared.original == small
    kept = cli.fit_image("ok.png", small, 10**6, max_pixels=120_000)
    assert (kept.data, kept.scale, kept.pixels) == (small, 1.0, 120_000)


def test_annotated_names_are_unique() -> None:
    assert cli.annotated_names(["car.jpg"]) == ["car_plates.jpg"]
    assert cli.annotated_names(["car.jpg", "car.png", "-", "car.jpeg"]) == [
        "car_plates.jpg", "car-2_plates.jpg", "stdin_plates.jpg", "car-3_plates.jpg"
    ]  # fmt: skip
    # a numbered name never takes the name of another input
    assert cli.annotated_names(["car.jpg", "car-2.jpg", "car.png"]) == [
        "car_plates.jpg", "car-2_plates.jpg", "car-3_plates.jpg"
    ]  # fmt: skip


def test_kserve_bodies() -> None:
    images = [cli.Prepared("a", b"abc", 1.0, b"abc")]
    assert cli.kserve_body(images, "v1") == {"instances": [{"data": "YWJj"}]}
    v2 = cli.kserve_body(images, "v2")["inputs"][0]
    assert v2 == {"name": "image", "shape": [1], "datatype": "BYTES", "data": ["YWJj"]}


def test_rescale_maps_back_to_the_original() -> None:
    (plate,) = cli.rescale([ONE_LINE], 2.0)
    assert plate["box"] == [20.0, 40.0, 220.0, 90.0]
    assert plate["corners"][1] == [220.0, 40.0]
    assert (plate["width"], plate["height"]) == (200.0, 50.0)
    assert cli.rescale([ONE_LINE], 1.0)[0] is ONE_LINE


def test_read_input_stdin_and_missing_file(tmp_path: Path) -> None:
    data = jpeg_bytes()
    text = io.StringIO("data:image/jpeg;base64," + base64.b64encode(data).decode())
    assert cli.read_input("-", text) == ("-", data)
    with pytest.raises(cli.ClientError, match="not base64"):
        cli.read_input("-", io.StringIO("%%%"))
    with pytest.raises(cli.ClientError, match="no such file") as info:
        cli.read_input(str(tmp_path / "nope.jpg"))
    assert info.value.exit_code == 2


def test_read_input_says_a_folder_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(cli.ClientError, match="is a directory") as info:
        cli.read_input(str(tmp_path))
    assert info.value.exit_code == 2


def test_images_are_checked_as_the_server_decodes_them() -> None:
    """Small images, sent unchanged, are decoded here too: the server's formats only."""
    from kplate.imageio import FORMATS

    assert cli.SERVER_FORMATS == FORMATS
    for data, reason in [
        (b"# README\n", "not an image the server reads"),
        (jpeg_bytes()[:300], "cannot decode image"),
        (b"", "empty image"),
    ]:
        with pytest.raises(cli.ClientError, match=reason) as info:
            cli.fit_image("x.jpg", data, 10_000_000, source="dir/x.jpg")
        assert info.value.exit_code == cli.EXIT_INPUT and "dir/x.jpg: " in str(info.value)


def test_named_image() -> None:
    """The server's messages about one image of a request (handler/protocol.py)."""
    assert cli.named_image("image 1: cannot decode image", 2) == (1, "cannot decode image")
    assert cli.named_image("instances[1]: empty image", 2) == (1, "empty image")
    assert cli.named_image("input 'image'[3]: invalid base64", 4) == (3, "invalid base64")
    assert cli.named_image("image 2: cannot decode image", 2) is None  # no such image
    assert cli.named_image("cannot decode image (12 bytes)", 2) is None


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([str(tmp_path / "nope.jpg"), "--kserve", "--url", "http://127.0.0.1:9"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "a.jpg"
    image.write_bytes(jpeg_bytes())
    url = f"http://127.0.0.1:{free_port()}"
    assert cli.main([str(image), "--kserve", "--url", url, "--timeout", "5"]) == 3
    assert "unreachable" in capsys.readouterr().err


def test_a_named_isvc_not_found_warns_before_the_local_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    caplog.set_level(logging.INFO, logger="kplate.request")
    args = cli.build_parser().parse_args(["x.jpg", "--kserve", "--namespace", "kplate"])
    assert cli.choose_endpoint(args) == cli.Endpoint(cli.LOCAL_FRONT, None)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "InferenceService kplate/kplate not found" in warning
    assert "no kubernetes context" in warning and cli.LOCAL_FRONT in warning
    caplog.clear()
    # the defaults: the local front without a warning, logged under -v with why
    args = cli.build_parser().parse_args(["x.jpg", "--kserve"])
    assert cli.choose_endpoint(args) == cli.Endpoint(cli.LOCAL_FRONT, None)
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert f"endpoint {cli.LOCAL_FRONT}" in caplog.text and "no kubernetes context" in caplog.text


def test_no_cluster_falls_back_to_the_local_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = cli.build_parser().parse_args(["x.jpg", "--kserve"])
    assert cli.choose_endpoint(args) == cli.Endpoint(cli.LOCAL_FRONT, None)
    args = cli.build_parser().parse_args(["x.jpg"])
    assert cli.choose_endpoint(args) == cli.Endpoint(cli.LOCAL_TORCHSERVE, None)


def test_dead_cluster_falls_back_quickly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "dead", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}
                ],
                "contexts": [{"name": "dead", "context": {"cluster": "dead", "user": "u"}}],
                "current-context": "dead",
                "users": [{"name": "u", "user": {"token": "x"}}],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    args = cli.build_parser().parse_args(["x.jpg", "--kserve", "--timeout", "3"])
    assert cli.choose_endpoint(args) == cli.Endpoint(cli.LOCAL_FRONT, None)


#: Bytes after an image's end that the stand-in server refuses it for (400, naming the image
#: as the server does), or its whole request for (413, naming none).
REJECT, WHOLE = b"REJECT-ME", b"WHOLE-REQUEST"


def _sent_images(request: dict[str, Any], body: bytes) -> list[bytes]:
    if "instances" in request:
        return [base64.b64decode(i["data"]) for i in request["instances"]]
    if "inputs" in request:
        return [base64.b64decode(d) for d in request["inputs"][0]["data"]]
    return [body]


class _Handler(BaseHTTPRequestHandler):
    """Answers like the front: a 400 naming the first image that ends with REJECT (as the
    server names one image of several), a 413 for a request with an image ending with WHOLE,
    else the plates."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.seen.append((self.path, self.headers.get("Host"), body))  # type: ignore[attr-defined]
        request = json.loads(body) if body.startswith(b"{") else {}
        images = _sent_images(request, body)
        rejected = [i for i, image in enumerate(images) if image.endswith(REJECT)]
        answer: Any
        if any(image.endswith(WHOLE) for image in images):
            status, answer = 413, {"error": "the request's images have too many pixels"}
        elif rejected and not request:  # TorchServe's own error body
            status, answer = 400, {"code": 400, "message": "cannot decode image (stand-in)"}
        elif rejected:
            where = (
                f"input 'image'[{rejected[0]}]" if "inputs" in request else f"image {rejected[0]}"
            )
            message = "cannot decode image (stand-in)"
            message = f"{where}: {message}" if len(images) > 1 else message
            status, answer = 400, {"error": message, "code": 400}
        elif "inputs" in request:
            n = len(request["inputs"][0]["data"])
            lists = [json.dumps([ONE_LINE], ensure_ascii=False)] * n
            output = {"name": "plates", "shape": [n], "datatype": "BYTES", "data": lists}
            status, answer = 200, {"model_name": "kplate", "id": "1", "outputs": [output]}
        elif "instances" in request:
            n = len(request["instances"])
            status, answer = 200, {"predictions": [[ONE_LINE]] * n}
        else:  # raw bytes to /predictions
            status, answer = 200, [ONE_LINE]
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def http_server() -> Iterator[HTTPServer]:
    with http_stand_in(_Handler) as server:
        server.seen = []  # type: ignore[attr-defined]
        yield server


def test_http_error_exits_4_with_the_server_message(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "bad.jpg"
    image.write_bytes(jpeg_bytes() + REJECT)
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([str(image), "--kserve", "--url", url]) == 4
    err = capsys.readouterr().err
    assert f"error: {image}: HTTP 400 from {url}" in err and "cannot decode image" in err


def test_files_that_cannot_be_read_are_named_and_the_others_sent(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """README.md, an empty file, a truncated JPEG, a folder, a missing file: each named on
    stderr with why; the good image still goes and its plates are printed; exit 2."""
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes())
    readme = tmp_path / "README.md"
    readme.write_text("# kplate\n")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg_bytes()[:300])
    folder = tmp_path / "samples"
    folder.mkdir()
    missing = tmp_path / "nope.jpg"
    files = [good, readme, empty, truncated, folder, missing]
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([*map(str, files), "--kserve", "--url", url]) == cli.EXIT_INPUT
    captured = capsys.readouterr()
    assert captured.out.startswith("good.jpg: 1 plate\n")
    err = captured.err.splitlines()
    assert err == [
        f"error: {readme}: not an image the server reads (JPEG, PNG, WEBP, BMP, TIFF, GIF)",
        f"error: {empty}: empty file",
        err[2],
        f"error: {folder}: is a directory: give the image files in it (e.g. {folder}/*.jpg)",
        f"error: {missing}: no such file",
    ]
    assert err[2].startswith(f"error: {truncated}: cannot decode image: ")
    ((_, _, body),) = http_server.seen  # type: ignore[attr-defined]
    assert len(json.loads(body)["instances"]) == 1


def test_when_no_image_can_be_read_nothing_is_sent(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{http_server.server_port}"
    files = [str(tmp_path), str(tmp_path / "nope.jpg")]
    assert cli.main([*files, "--kserve", "--url", url]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "is a directory" in err and "no such file" in err and "nothing sent" in err
    assert http_server.seen == []  # type: ignore[attr-defined]


def _cars(tmp_path: Path, marks: dict[int, bytes] | None = None) -> list[Path]:
    """Twenty one-plate JPEGs, ``car0.jpg`` ...; ``marks`` appends bytes to some of them (what
    the stand-in server refuses)."""
    files = [tmp_path / f"car{i}.jpg" for i in range(20)]
    for i, f in enumerate(files):
        f.write_bytes(jpeg_bytes(seed=i) + (marks or {}).get(i, b""))
    return files


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_an_image_the_server_refuses_is_named_and_the_others_read(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    """The server refuses a request for one image it names ("image 3: ..."): that file is
    named, and the other images of the request are sent again and read."""
    files = _cars(tmp_path, {3: REJECT, 18: REJECT})
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([*map(str, files), "--kserve", "--url", url, "--protocol", protocol]) == 4
    captured = capsys.readouterr()
    assert captured.out.count(": 1 plate\n") == 18
    assert "car3.jpg:" not in captured.out and "car18.jpg:" not in captured.out
    err = captured.err.splitlines()
    assert len(err) == 2
    for line, name in zip(err, ("car3.jpg", "car18.jpg")):
        assert line.startswith(f"error: {tmp_path / name}: HTTP 400 from {url}")
        assert line.endswith(": cannot decode image (stand-in)")  # "image N: " dropped
    key = "instances" if protocol == "v1" else "inputs"
    sent = [json.loads(body)[key] for _, _, body in http_server.seen]  # type: ignore[attr-defined]
    counts = [len(x) if protocol == "v1" else len(x[0]["data"]) for x in sent]
    assert counts == [16, 15, 4, 3]


def test_a_request_refused_as_a_whole_names_its_files_and_the_others_go_on(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _cars(tmp_path, {17: WHOLE})
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([*map(str, files), "--kserve", "--url", url]) == 4
    captured = capsys.readouterr()
    assert captured.out.count(": 1 plate\n") == 16 and "car16.jpg" not in captured.out
    (line,) = captured.err.splitlines()
    names = ", ".join(str(f) for f in files[16:])
    assert line.startswith(f"error: {names}: HTTP 413 from {url}")
    assert "none of these images was read" in line


def test_torchserve_requests_go_on_after_a_refused_image(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = [tmp_path / f"{name}.jpg" for name in "abc"]
    for i, file in enumerate(files):
        file.write_bytes(jpeg_bytes(seed=i) + (REJECT if i == 1 else b""))
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([*map(str, files), "--url", url]) == 4
    captured = capsys.readouterr()
    assert "a.jpg: 1 plate" in captured.out and "c.jpg: 1 plate" in captured.out
    assert captured.err == (
        f"error: {files[1]}: HTTP 400 from {url}/predictions/kplate: "
        "cannot decode image (stand-in)\n"
    )


def test_verbose_logs_the_endpoint_the_requests_and_the_time(
    http_server: HTTPServer, tmp_path: Path
) -> None:
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes())
    url = f"http://127.0.0.1:{http_server.server_port}"
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "request" / "request.py"), str(image), "--kserve",
         "--url", url, "-v"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"endpoint {url}: --url" in done.stderr
    assert f"1 image(s) in 1 request(s) to {url}/v1/models/kplate:predict" in done.stderr
    assert "HTTP 200 in " in done.stderr and "1 of 1 image(s) read in " in done.stderr


def test_success_prints_drawings_and_saves_annotated(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes(width=300, height=200))
    url = f"http://127.0.0.1:{http_server.server_port}"
    out_dir = tmp_path / "annotated"
    code = cli.main(
        [str(image), "--kserve", "--url", url, "--host", "kplate.default.example.com",
         "--save-annotated", str(out_dir)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "car.jpg: 1 plate" in out and "123가 4567" in out
    path, host, _ = http_server.seen[-1]  # type: ignore[attr-defined]
    assert path == "/v1/models/kplate:predict"
    assert host == "kplate.default.example.com"
    with Image.open(out_dir / "car_plates.jpg") as annotated:
        assert annotated.size == (300, 200)


def test_more_images_than_a_request_may_carry_go_in_several_requests(
    http_server: HTTPServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _cars(tmp_path)
    url = f"http://127.0.0.1:{http_server.server_port}"
    assert cli.main([*map(str, files), "--kserve", "--url", url]) == 0
    sent = [len(json.loads(body)["instances"]) for _, _, body in http_server.seen]  # type: ignore[attr-defined]
    assert sent == [16, 4]
    assert capsys.readouterr().out.count(": 1 plate\n") == 20


@pytest.mark.parametrize("mode", ["v1", "v2", "torchserve"])
def test_json_coordinates_are_mapped_back_to_the_original(
    http_server: HTTPServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """An image the client downscaled before sending: --json prints the server's response
    with the plate coordinates in the original image's pixels, as the plain output does."""
    monkeypatch.setattr(cli, "MAX_REQUEST_BYTES", 60_000)
    image = tmp_path / "big.jpg"
    image.write_bytes(_noise_jpeg(600))
    url = f"http://127.0.0.1:{http_server.server_port}"
    args = {"v1": ["--kserve"], "v2": ["--kserve", "--protocol", "v2"], "torchserve": []}[mode]
    assert cli.main([str(image), "--url", url, "--json", *args]) == 0
    (_, _, sent), *_ = http_server.seen  # type: ignore[attr-defined]
    if mode == "torchserve":
        sent_image = sent
    else:
        request = json.loads(sent)
        encoded = (
            request["instances"][0]["data"] if mode == "v1" else request["inputs"][0]["data"][0]
        )
        sent_image = base64.b64decode(encoded)
    with Image.open(io.BytesIO(sent_image)) as im:
        scale = 600 / im.width
    assert scale > 1.5
    body = json.loads(capsys.readouterr().out)
    if mode == "v1":
        (plates,) = body["predictions"]
    elif mode == "v2":
        plates = json.loads(body["outputs"][0]["data"][0])
        assert body["model_name"] == "kplate" and body["outputs"][0]["name"] == "plates"
    else:
        plates = body
    (plate,) = plates
    assert plate["box"] == [round(v * scale, 1) for v in (10.0, 20.0, 110.0, 45.0)]
    assert plate["corners"][2] == [round(110 * scale, 1), round(45 * scale, 1)]
    assert plate["text"] == ONE_LINE["text"]


def test_annotated_images_of_inputs_sharing_a_stem_are_all_kept(
    http_server: HTTPServer, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "car.jpg").write_bytes(jpeg_bytes(width=300, height=200))
    (tmp_path / "b" / "car.jpg").write_bytes(jpeg_bytes(width=200, height=300))
    url = f"http://127.0.0.1:{http_server.server_port}"
    out_dir = tmp_path / "annotated"
    files = [str(tmp_path / "a" / "car.jpg"), str(tmp_path / "b" / "car.jpg")]
    assert cli.main([*files, "--kserve", "--url", url, "--save-annotated", str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["car-2_plates.jpg", "car_plates.jpg"]
    with (
        Image.open(out_dir / "car_plates.jpg") as first,
        Image.open(out_dir / "car-2_plates.jpg") as second,
    ):
        assert (first.size, second.size) == ((300, 200), (200, 300))


def _bare_python() -> list[str]:
    """The base interpreter without any site-packages (``-I -S``): no requests, no Pillow, as
    the ``python`` of a fresh machine."""
    base = Path(sys.base_prefix) / "bin" / "python3"
    if not base.is_file():
        pytest.skip(f"no base interpreter at {base}")
    return [str(base), "-I", "-S"]


def test_run_by_a_python_without_its_packages_goes_on_in_the_venv() -> None:
    script = REPO_ROOT / "request" / "request.py"
    if not (REPO_ROOT / ".venv" / "bin" / "python").is_file():
        pytest.skip("no .venv: `make install` makes it")
    bare = _bare_python()
    probe = subprocess.run([*bare, "-c", "import PIL"], capture_output=True, check=False)
    assert probe.returncode != 0, "the bare interpreter was meant to lack Pillow"
    done = subprocess.run(
        [*bare, str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "usage: request.py" in done.stdout and "--kserve" in done.stdout


def test_without_its_packages_or_a_venv_it_says_what_to_install(tmp_path: Path) -> None:
    copy = tmp_path / "request" / "request.py"
    copy.parent.mkdir()
    shutil.copy(REPO_ROOT / "request" / "request.py", copy)
    done = subprocess.run(
        [*_bare_python(), str(copy), "x.jpg", "--kserve"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and not done.stdout
    assert "needs the packages requests and Pillow" in done.stderr
    assert "make install" in done.stderr and "Traceback" not in done.stderr


def test_output_into_a_closed_pipe_stops_quietly(http_server: HTTPServer, tmp_path: Path) -> None:
    """`request.py ... | head`: the reader gone before the output, no traceback."""
    image = tmp_path / "car.jpg"
    image.write_bytes(jpeg_bytes(width=300, height=200))
    url = f"http://127.0.0.1:{http_server.server_port}"
    proc = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "request" / "request.py"), str(image), "--kserve",
         "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "Traceback" not in err and "Exception ignored" not in err
