"""The TorchServe handler with TorchServe's own Context, without starting the server.

The context is ``ts.context.Context`` with one ``RequestProcessor`` per request, filled the
way ``ts.service.Service.retrieve_data_for_inference`` fills them; the engine is the real
``kplate.Recognizer`` on CPU (skipped until it and its weights exist).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from serving_support import (
    REPO_ROOT,
    assert_plate_list,
    b64,
    engine_ready,
    jpeg_bytes,
    png_bytes,
    requires_engine,
)

from handler import kplate_handler
from handler.kplate_handler import KplateHandler, select_device
from kplate.errors import ConfigError
from kplate.recognizer import WEIGHTS_DIR

ts_context = pytest.importorskip("ts.context")
ts_metrics = pytest.importorskip("ts.metrics.metric_cache_yaml_impl")

JSON = "application/json"
IMG = jpeg_bytes(seed=3)


def make_context(
    requests: list[tuple[dict[str, Any], str]], yaml_config: dict[str, Any] | None = None
) -> Any:
    """A TorchServe Context for one batch: ``(item, content type)`` per request."""
    import ts

    metrics_yaml = Path(ts.__file__).parent / "configs" / "metrics.yaml"
    metrics = ts_metrics.MetricsCacheYamlImpl(config_file_path=str(metrics_yaml))
    ctx = ts_context.Context(
        "kplate",
        str(REPO_ROOT),
        {"model": {"modelName": "kplate"}},
        4,
        None,
        "0.12.0",
        metrics=metrics,
        model_yaml_config=yaml_config
        if yaml_config is not None
        else {"handler": {"warmup": False, "torch_threads": 1}},
    )
    headers = []
    for item, content_type in requests:
        props: dict[str, Any] = {name: {"content-type": content_type} for name in item}
        props["Content-Type"] = content_type
        headers.append(ts_context.RequestProcessor(props))
    ctx.request_processor = headers
    ctx.request_ids = {i: f"req-{i}" for i in range(len(requests))}
    metrics.request_ids = ctx.request_ids
    return ctx


def test_select_device_cpu_without_gpu_id() -> None:
    assert select_device(None) == torch.device("cpu")
    if not torch.cuda.is_available():
        assert select_device(0) == torch.device("cpu")
    else:
        assert select_device(0) == torch.device("cuda:0")


@pytest.fixture(scope="module")
def handler() -> KplateHandler:
    """One initialised handler for the module (loading the engine takes a moment)."""
    if not engine_ready():
        pytest.skip("kplate.recognizer or the shipped weights are not there yet")
    torch.set_num_threads(1)
    h = KplateHandler()
    h.initialize(make_context([], {"handler": {"warmup": True, "torch_threads": 1}}))
    return h


def run(handler: KplateHandler, requests: list[tuple[dict[str, Any], str]]) -> list[Any]:
    """Call ``handle`` like TorchServe does; returns ``(status, json body)`` per request."""
    ctx = make_context(requests)
    data = [item for item, _ in requests]
    out = handler.handle(data, ctx)
    assert len(out) == len(requests)
    results = []
    for idx, body in enumerate(out):
        status, _ = ctx.get_response_status(idx)
        assert ctx.get_response_content_type(idx) == JSON
        results.append((status or 200, json.loads(body)))
    return results


@requires_engine
def test_initialize_reads_settings_and_device(handler: KplateHandler) -> None:
    assert handler.initialized
    assert handler.device == torch.device("cpu")
    assert handler.settings.torch_threads == 1
    assert handler.recognizer.device == torch.device("cpu")


@requires_engine
def test_every_body_format_in_one_batch(handler: KplateHandler) -> None:
    img2 = jpeg_bytes(seed=4, width=200, height=90)
    v2 = {
        "id": "x",
        "inputs": [{"name": "i", "shape": [1], "datatype": "BYTES", "data": [b64(IMG)]}],
    }
    results = run(
        handler,
        [
            ({"body": IMG}, "application/octet-stream"),
            ({"file": IMG}, "multipart/form-data"),
            ({"body": {"data": b64(IMG)}}, JSON),
            ({"body": {"instances": [{"data": b64(IMG)}, {"b64": b64(img2)}]}}, JSON),
            ({"body": {"instances": [{"image": {"b64": b64(img2)}}]}}, JSON),
            ({"body": v2}, JSON),
        ],
    )
    assert all(status == 200 for status, _ in results), results
    raw, form, data, v1, v1_image, v2_out = (body for _, body in results)
    for plates in (raw, form, data):
        assert_plate_list(plates)
    assert raw == form == data
    assert len(v1["predictions"]) == 2
    for plates in v1["predictions"] + v1_image["predictions"]:
        assert_plate_list(plates)
    assert v1["predictions"][0] == raw
    assert v2_out["id"] == "x"
    assert v2_out["model_name"] == "kplate"
    assert json.loads(v2_out["outputs"][0]["data"][0]) == raw


@requires_engine
def test_bad_items_fail_alone(handler: KplateHandler) -> None:
    good = ({"body": {"instances": [{"data": b64(IMG)}]}}, JSON)
    results = run(
        handler,
        [
            good,
            ({"body": IMG[: len(IMG) // 2]}, "application/octet-stream"),
            ({"body": b""}, "application/octet-stream"),
            ({"body": b"{oops"}, JSON),
            ({"body": {"data": "not*base64"}}, JSON),
            ({"body": png_bytes(9000, 9000)}, "image/png"),
            good,
        ],
    )
    statuses = [status for status, _ in results]
    assert statuses == [200, 400, 400, 400, 400, 413, 200], results
    for status, body in results:
        if status != 200:
            assert body["code"] == status
            assert isinstance(body["error"], str) and body["error"]
    assert "decode" in results[1][1]["error"]
    assert "malformed JSON" in results[3][1]["error"]
    assert "base64" in results[4][1]["error"]
    assert "pixels" in results[5][1]["error"]
    assert results[0][1] == results[6][1]


@requires_engine
def test_batch_results_match_single_requests(handler: KplateHandler) -> None:
    # Same-sized images share a detector batch (images of other sizes are batched apart, as
    # tests/test_engine.py checks), so this checks the batching and the mapping back.
    images = [jpeg_bytes(seed=s, width=192, height=128) for s in range(4)]
    batched = run(handler, [({"body": img}, "image/jpeg") for img in images])
    singles = [run(handler, [({"body": img}, "image/jpeg")])[0] for img in images]
    assert [b for _, b in batched] == [b for _, b in singles]


@requires_engine
def test_metrics_are_emitted(handler: KplateHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    three = {"instances": [{"data": b64(IMG)}] * 3}
    ctx = make_context([({"body": IMG}, "image/jpeg"), ({"body": three}, JSON)])
    counted: dict[str, float] = {}
    add_counter = ctx.metrics.add_counter

    def count(name: str, value: float, *args: Any, **kwargs: Any) -> Any:
        counted[name] = value
        return add_counter(name, value, *args, **kwargs)

    monkeypatch.setattr(ctx.metrics, "add_counter", count)
    handler.handle([{"body": IMG}, {"body": three}], ctx)
    names = {name for by_name in ctx.metrics.cache.values() for name in by_name}
    assert {"KplateBatches", "KplateBatchedRequests", "KplateImages"} <= names
    assert counted == {"KplateBatches": 1, "KplateBatchedRequests": 2, "KplateImages": 4}


def test_bad_model_config_fails_initialize() -> None:
    h = KplateHandler()
    with pytest.raises(ConfigError, match="max_imgs"):
        h.initialize(make_context([], {"handler": {"max_imgs": 3}}))


@requires_engine
def test_json_that_overflows_the_parser_fails_alone(handler: KplateHandler) -> None:
    """A body nested 100,000 deep (RecursionError) or holding a 5,000-digit integer
    (ValueError) is a 400 for its own request; the batch's other requests still succeed."""
    good = ({"body": {"instances": [{"data": b64(IMG)}]}}, JSON)
    results = run(
        handler,
        [
            good,
            ({"body": b"[" * 100_000}, "application/octet-stream"),
            ({"body": b'{"instances":' + b"[" * 100_000}, JSON),
            ({"body": b'{"data": ' + b"1" * 5000 + b"}"}, JSON),
            good,
        ],
    )
    assert [status for status, _ in results] == [200, 400, 400, 400, 200], results
    for _, body in results[1:4]:
        assert body["code"] == 400 and "malformed JSON" in body["error"]
    assert results[0][1] == results[4][1]


@requires_engine
def test_an_unexpected_error_while_reading_fails_its_request_alone(
    handler: KplateHandler, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    poison = jpeg_bytes(seed=11)
    real_decode = kplate_handler.decode_images

    def decode(parsed: Any, **kwargs: Any) -> Any:
        if poison in parsed.images:
            raise RuntimeError("something nobody foresaw")
        return real_decode(parsed, **kwargs)

    monkeypatch.setattr(kplate_handler, "decode_images", decode)
    good = ({"body": {"instances": [{"data": b64(IMG)}]}}, JSON)
    with caplog.at_level(logging.ERROR, logger=kplate_handler.__name__):
        results = run(handler, [good, ({"body": poison}, "image/jpeg"), good])
    assert [status for status, _ in results] == [200, 500, 200], results
    assert results[1][1]["code"] == 500 and "RuntimeError" in results[1][1]["error"]
    assert results[0][1] == results[2][1]
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None and "request 1" in record.getMessage()


@requires_engine
@pytest.mark.parametrize("error", [RuntimeError, ValueError])
def test_an_engine_failure_on_the_batch_fails_only_the_request_that_caused_it(
    handler: KplateHandler, monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    poison = jpeg_bytes(seed=11, width=97, height=61)
    real = handler.recognizer.recognize

    def recognize(images: Any) -> Any:
        if any(image.shape[:2] == (61, 97) for image in images):  # decoded arrays
            raise error("the engine fell over")
        return real(images)

    monkeypatch.setattr(handler.recognizer, "recognize", recognize)
    good = ({"body": {"instances": [{"data": b64(IMG)}]}}, JSON)
    results = run(handler, [good, ({"body": poison}, "image/jpeg"), good])
    assert [status for status, _ in results] == [200, 500, 200], results
    assert "the engine fell over" in results[1][1]["error"]
    monkeypatch.undo()
    assert results[0][1] == results[2][1] == run(handler, [good])[0][1]


@requires_engine
def test_request_pixel_budget_fails_alone(handler: KplateHandler) -> None:
    """Sixteen 2000x2000 PNGs (4 MP each, 64 MP in all) are under every per-image limit but
    over the request's 48 MP budget: 413 before decoding, while the neighbours succeed."""
    many = {"body": {"instances": [{"data": b64(png_bytes(2000, 2000))}] * 16}}
    good = ({"body": {"instances": [{"data": b64(IMG)}]}}, JSON)
    results = run(handler, [good, (many, JSON), good])
    assert [status for status, _ in results] == [200, 413, 200], results
    error = results[1][1]["error"]
    assert "64000000 pixels" in error and "48000000" in error


@requires_engine
def test_an_engine_that_loses_a_result_fails_the_batch_loudly(
    handler: KplateHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = handler.recognizer.recognize
    monkeypatch.setattr(handler.recognizer, "recognize", lambda images: real(images)[:-1])
    ctx = make_context([({"body": IMG}, "image/jpeg")] * 2)
    with pytest.raises(RuntimeError, match="engine returned 1 results for 2 images"):
        handler.handle([{"body": IMG}, {"body": IMG}], ctx)


@requires_engine
def test_an_image_part_is_read_as_an_image_whatever_the_request_header_says(
    handler: KplateHandler,
) -> None:
    """The body part's own content type wins over the request's Content-Type header."""
    ctx = make_context([({"body": IMG}, "image/jpeg")])
    ctx.request_processor[0]._request_header["Content-Type"] = JSON
    out = handler.handle([{"body": IMG}], ctx)
    status, _ = ctx.get_response_status(0)
    assert (status or 200) == 200, out
    assert_plate_list(json.loads(out[0]))


@requires_engine
def test_initialize_applies_the_threads_weights_dir_and_image_limit(tmp_path: Path) -> None:
    weights = tmp_path / "model" / "w"
    weights.mkdir(parents=True)
    for name in ("detector.pt", "reader.pt"):
        (weights / name).symlink_to(WEIGHTS_DIR / name)
    (weights / "engine.yaml").write_text("detector:\n  max_plates: 3\n")
    ctx = make_context(
        [], {"handler": {"warmup": False, "torch_threads": 3, "weights_dir": "w",
                         "max_images_per_request": 2}}
    )  # fmt: skip
    ctx._system_properties["model_dir"] = str(tmp_path / "model")
    before = torch.get_num_threads()
    h = KplateHandler()
    try:
        h.initialize(ctx)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert h.recognizer.config.detector.max_plates == 3  # read from model_dir/w
    ((status, body),) = run(h, [({"body": {"instances": [{"data": b64(IMG)}] * 3}}, JSON)])
    assert status == 413 and "the limit is 2" in body["error"]
