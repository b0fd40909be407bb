"""The committed serving configuration and the pure helpers of the front and the launcher."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest
import yaml
from serving_support import REPO_ROOT

from handler import archive
from handler.archive import (
    HANDLER_MODULES,
    REQUIRED_WEIGHTS,
    ArchiveError,
    check_mar,
    served_weights,
    stage,
)
from handler.kserve_front import loopback_url, model_names, read_properties, workers_ready
from handler.local_serving import Ports, free_port, render_config
from kplate.config import EngineConfig
from kplate.errors import WeightsError

CONFIG = REPO_ROOT / "gs" / "config" / "config.properties"

#: Keys TorchServe 0.12 reads (ConfigManager.java of pytorch/serve v0.12.0), the ones a
#: config.properties for this model may reasonably use.
TORCHSERVE_KEYS = {
    "inference_address", "management_address", "metrics_address", "grpc_inference_address",
    "grpc_management_address", "grpc_inference_port", "grpc_management_port",
    "metrics_mode", "enable_metrics_api", "model_metrics_auto_detect", "metrics_config",
    "disable_system_metrics", "disable_token_authorization", "enable_model_api",
    "max_request_size", "max_response_size", "enable_envvars_config", "model_store",
    "model_snapshot", "number_of_netty_threads", "netty_client_threads", "job_queue_size",
    "default_response_timeout", "default_workers_per_model", "install_py_dep_per_model",
    "cors_allowed_origin", "cors_allowed_methods", "cors_allowed_headers", "async_logging",
    "allowed_urls", "workflow_store", "initial_worker_port", "vmargs",
}  # fmt: skip
#: Keys that look like configuration but TorchServe never reads (or ignores with a snapshot).
IGNORED_KEYS = {"NUM_WORKERS", "gpu_id", "number_of_gpu_per_worker", "load_models", "batch_size"}


def test_config_properties_keys_are_all_read_by_torchserve() -> None:
    props = read_properties(CONFIG)
    assert set(props) <= TORCHSERVE_KEYS, set(props) - TORCHSERVE_KEYS
    assert not set(props) & IGNORED_KEYS
    assert "service_envelope" not in props


def test_config_properties_has_no_trailing_whitespace_or_duplicates() -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    assert not [n for n, line in enumerate(lines, 1) if line != line.rstrip()]
    keys = [line.split("=", 1)[0] for line in lines if "=" in line and not line.startswith("#")]
    assert len(keys) == len(set(keys))


def test_config_properties_values() -> None:
    props = read_properties(CONFIG)
    # Loopback only: the front (the kserve wrapper in the pod's one container) forwards to it.
    assert props["inference_address"] == "http://127.0.0.1:8085"
    assert re.fullmatch(r"https?://127\.0\.0\.1:\d+", props["management_address"])
    assert not props["management_address"].endswith(":8081")  # KServe's gRPC port
    assert props["metrics_mode"] == "prometheus"
    assert props["disable_token_authorization"] == "true"
    assert props["enable_envvars_config"] == "false"
    # A 6 MB base64 payload plus its JSON framing, or a 6 MB raw upload.
    assert int(props["max_request_size"]) >= 6 * 1024 * 1024 + 4096
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["modelCount"] == len(snapshot["models"]) == 1
    model = snapshot["models"]["kplate"]["1.0"]
    assert model["marName"] == "kplate.mar"
    assert model["batchSize"] == 4
    assert 0 < model["maxBatchDelay"] <= 15  # the p50 overhead budget at concurrency 1
    assert model["minWorkers"] >= 1 and model["responseTimeout"] > 0
    assert model_names(props) == ["kplate"]


def test_render_config_rebinds_to_loopback(tmp_path: Path) -> None:
    ports = Ports.free()
    assert len({*vars(ports).values()}) == 6
    out = render_config(CONFIG, tmp_path / "c.properties", ports, overrides={"job_queue_size": "7"})
    props = read_properties(out)
    assert props["inference_address"] == f"http://127.0.0.1:{ports.inference}"
    assert props["metrics_address"] == f"http://127.0.0.1:{ports.metrics}"
    assert props["grpc_management_port"] == str(ports.grpc_management)
    assert props["job_queue_size"] == "7"
    assert props["model_snapshot"] == read_properties(CONFIG)["model_snapshot"]
    assert out.read_text().count("# ") == CONFIG.read_text().count("# ")


def test_front_helpers() -> None:
    assert loopback_url("http://0.0.0.0:8085/") == "http://127.0.0.1:8085"
    assert model_names({}) == ["model"]
    ready = [{"modelName": "kplate", "workers": [{"id": "9000", "status": "READY"}]}]
    assert workers_ready(ready)
    assert not workers_ready([{"workers": [{"status": "UNLOADING"}]}])
    assert not workers_ready([{"workers": []}])
    assert not workers_ready({"code": 404})
    assert 0 < free_port() < 65536


def test_stage_refuses_missing_weights(tmp_path: Path) -> None:
    package = tmp_path / "kplate"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with pytest.raises(WeightsError, match=r"detector\.pt"):
        stage(tmp_path / "out", package)


def _package(tmp_path: Path, read_with: list[str], weights: tuple[str, ...]) -> Path:
    """A ``kplate`` package folder whose engine config reads photos with ``read_with``."""
    package = tmp_path / "kplate"
    (package / "weights").mkdir(parents=True)
    (package / "configs").mkdir()
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "x.pyc").write_bytes(b"")
    (package / "__init__.py").write_text("")
    (package / "configs" / "engine.yaml").write_text(
        yaml.safe_dump({"reader": {"read_with": read_with}})
    )
    for name in weights:
        (package / "weights" / name).write_bytes(b"w")
    return package


ALL_WEIGHTS = ("detector.pt", "reader.pt", "crop_reader.pt")


def test_stage_copies_package_and_handler_modules(tmp_path: Path) -> None:
    package = _package(tmp_path, ["reader"], ALL_WEIGHTS)
    out = tmp_path / "out"
    out.mkdir()
    assert stage(out, package) == ("detector.pt", "reader.pt")
    assert (out / "kplate" / "weights" / "reader.pt").is_file()
    # photos are read by the reader alone here: the crop reader stays out of the .mar
    assert not (out / "kplate" / "weights" / "crop_reader.pt").exists()
    assert (out / "kplate" / "configs" / "engine.yaml").is_file()
    assert not (out / "kplate" / "__pycache__").exists()
    assert sorted(p.name for p in (out / "handler").iterdir()) == sorted(HANDLER_MODULES)


def test_stage_carries_the_crop_reader_when_the_config_reads_photos_with_it(
    tmp_path: Path,
) -> None:
    package = _package(tmp_path, ["reader", "crop_reader"], ALL_WEIGHTS)
    out = tmp_path / "out"
    out.mkdir()
    assert stage(out, package) == ALL_WEIGHTS
    assert (out / "kplate" / "weights" / "crop_reader.pt").is_file()
    # named but absent: refused, not served with the reader in its place
    (package / "weights" / "crop_reader.pt").unlink()
    with pytest.raises(WeightsError, match=r"crop_reader\.pt"):
        stage(tmp_path / "again", package)


def test_stage_follows_the_weights_own_engine_yaml_over_the_packages(tmp_path: Path) -> None:
    """``Recognizer.load`` reads ``weights/engine.yaml`` first: the archive serves the weights
    that config names."""
    package = _package(tmp_path, ["reader"], ALL_WEIGHTS)
    (package / "weights" / "engine.yaml").write_text(
        yaml.safe_dump({"reader": {"read_with": ["reader", "crop_reader"]}})
    )
    out = tmp_path / "out"
    out.mkdir()
    assert stage(out, package) == ALL_WEIGHTS


def test_served_weights_follow_the_readers_that_read_and_judge_photos() -> None:
    cfg = EngineConfig()
    only = cfg.updated(reader={"read_with": ["reader"], "judge_with": None})
    assert served_weights(only) == ("detector.pt", "reader.pt")
    judged = only.updated(reader={"judge_with": ["crop_reader"]})
    assert served_weights(judged) == ALL_WEIGHTS
    crop_only = only.updated(reader={"read_with": ["crop_reader"], "crop_read_with": ["reader"]})
    # the reader stays: it reads in the crop reader's place if that file is ever absent
    assert served_weights(crop_only) == ALL_WEIGHTS


def test_check_mar_names_what_is_missing(tmp_path: Path) -> None:
    mar = tmp_path / "kplate.mar"
    with zipfile.ZipFile(mar, "w") as zf:
        zf.writestr("kplate_handler.py", "")
    with pytest.raises(ArchiveError, match=r"kplate/weights/detector\.pt"):
        check_mar(mar)


def test_check_mar_names_a_missing_handler_module(tmp_path: Path) -> None:
    mar = tmp_path / "kplate.mar"
    names = ["MAR-INF/MANIFEST.json", "kplate_handler.py", "model-config.yaml",
             "kplate/__init__.py", *(f"kplate/weights/{n}" for n in REQUIRED_WEIGHTS),
             *(f"handler/{n}" for n in HANDLER_MODULES if n != "settings.py")]  # fmt: skip
    with zipfile.ZipFile(mar, "w") as zf:
        for name in names:
            zf.writestr(name, "")
    with pytest.raises(ArchiveError, match=r"handler/settings\.py"):
        check_mar(mar)


def test_archive_exits_1_when_the_build_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def fail(*args: object, **kwargs: object) -> Path:
        raise WeightsError("no weights")

    monkeypatch.setattr(archive, "build_mar", fail)
    assert archive.main(["--export-path", "/nonexistent"]) == 1
    assert "no weights" in caplog.text
