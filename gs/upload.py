"""Upload the TorchServe model store to Google Cloud Storage in the layout KServe reads.

KServe's TorchServe runtime downloads ``storageUri`` to ``/mnt/models`` and starts TorchServe
with ``/mnt/models/config/config.properties`` and ``/mnt/models/model-store/*.mar``, so the
objects land at::

    gs://BUCKET/PREFIX/config/config.properties
    gs://BUCKET/PREFIX/model-store/<name>.mar

The prefix is listed before anything is written, and the upload refuses (writing nothing)
when it would not leave exactly this model store there:

- an object under the prefix outside the layout (a stale archive, or other model versions
  below a prefix such as ``kplate`` above ``kplate/v1``) is an error, because KServe copies
  *everything* under the prefix. Publish under a prefix of its own; ``--prune`` deletes the
  strays on purpose, and ``--dry-run`` lists what it would delete;
- an object whose checksum differs from the local file is not replaced, because pods of a
  running InferenceService download it again on restart or scale-up: publish each version
  under a new prefix (``kplate/v2``), or pass ``--overwrite``.

Objects whose CRC32C (or MD5) already matches the local file are skipped, and the listing is
verified again afterwards. ``--record FILE`` writes the verified ``storageUri`` to FILE (``make
upload`` records it in ``gs/.last-upload`` for ``make deploy`` to check).

Credentials come from the environment (Application Default Credentials:
``gcloud auth application-default login``, ``GOOGLE_APPLICATION_CREDENTIALS``, Workload
Identity, ...), never from the repository. ``STORAGE_EMULATOR_HOST`` points the client at an
emulator (fake-gcs-server), as the tests do.

Usage::

    .venv/bin/python gs/upload.py --bucket my-bucket --prefix kplate/v1
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import google_crc32c
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from tqdm import tqdm
from tqdm.utils import CallbackIOWrapper

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client

CONFIG_OBJECT = "config/config.properties"
MODEL_STORE_DIR = "model-store"
MAR_SUFFIX = ".mar"
CHUNK_SIZE = 8 * 1024 * 1024  # resumable-upload chunk (a multiple of 256 KiB)
HASH_BLOCK = 1024 * 1024
DEFAULT_STORE = Path(__file__).resolve().parent

# GCS bucket naming rules (simplified: dotted names must still be 3-222 characters).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")

EXIT_OK = 0
EXIT_GCS = 1
EXIT_USAGE = 2

#: How many object names an error message lists before it only counts the rest.
MAX_LISTED = 10
#: The layout's folders: a folder *below* the prefix that holds one is a model store of its own.
LAYOUT_DIRS = frozenset({CONFIG_OBJECT.split("/", 1)[0], MODEL_STORE_DIR})


class UploadError(Exception):
    """Base class of every error this tool reports; ``exit_code`` is the process status."""

    exit_code = EXIT_GCS


class InvalidDestinationError(UploadError):
    """The bucket name or the prefix is not usable as a KServe storageUri."""

    exit_code = EXIT_USAGE


class MissingArtifactError(UploadError):
    """A local file of the model store is missing (the .mar is a build output)."""

    exit_code = 3


class InvalidConfigError(UploadError):
    """config.properties cannot be understood."""

    exit_code = 3


class CredentialsError(UploadError):
    """No usable Google Cloud credentials, or they lack a permission."""

    exit_code = 4


class BucketNotFoundError(UploadError):
    """The destination bucket does not exist."""

    exit_code = 5


class VerificationError(UploadError):
    """The prefix holds objects outside the layout, or its listing does not match the upload."""

    exit_code = 6


class ReplaceRefusedError(UploadError):
    """An object under the prefix differs from the local file and ``--overwrite`` is off."""

    exit_code = 7


@dataclass(frozen=True)
class Artifact:
    """One local file and the object name it is uploaded to."""

    local: Path
    object_name: str
    size: int
    crc32c: str
    md5: str


@dataclass(frozen=True)
class RemoteObject:
    """What the bucket listing says about one object."""

    name: str
    size: int | None
    crc32c: str | None
    md5: str | None


@dataclass(frozen=True)
class ObjectResult:
    """What happened (or, in a dry run, would happen) to one artifact.

    ``uploaded`` is True when the object is written; ``replaced`` when that write replaces a
    different object already there (only with ``overwrite``).
    """

    object_name: str
    size: int
    uploaded: bool
    replaced: bool = False


@dataclass(frozen=True)
class Survey:
    """The prefix as listed before anything is written, against the artifacts.

    Attributes:
        results: One per artifact, in upload order.
        differing: The artifacts whose object exists with other bytes.
        strays: The objects under the prefix outside the layout: what ``--prune`` deletes.
    """

    results: tuple[ObjectResult, ...]
    differing: tuple[Artifact, ...]
    strays: tuple[str, ...]


# --------------------------------------------------------------------------- pure functions


def normalize_prefix(prefix: str) -> str:
    """Return ``prefix`` without surrounding slashes, rejecting values KServe cannot serve.

    Args:
        prefix: The folder inside the bucket, e.g. ``kplate/v1``.

    Returns:
        The normalized prefix, e.g. ``kplate/v1``.

    Raises:
        InvalidDestinationError: If the prefix is empty (KServe lists ``<prefix>/`` and would
            find nothing at the bucket root), a ``gs://`` URI, or has empty, ``.`` or ``..``
            segments.
    """
    if prefix.startswith("gs://"):
        raise InvalidDestinationError(
            f"--prefix takes the folder inside the bucket, not a URI: {prefix!r}"
        )
    cleaned = prefix.strip().strip("/")
    if not cleaned:
        raise InvalidDestinationError(
            "--prefix must not be empty: KServe's storageUri must name a folder "
            "(gs://BUCKET/PREFIX), not the bucket root"
        )
    parts = cleaned.split("/")
    if any(part in {"", ".", ".."} for part in parts):
        raise InvalidDestinationError(f"--prefix has an empty, '.' or '..' segment: {prefix!r}")
    return cleaned


def validate_bucket_name(bucket: str) -> str:
    """Return ``bucket`` if it is a valid GCS bucket name.

    Raises:
        InvalidDestinationError: With the naming rule that failed.
    """
    if bucket.startswith("gs://"):
        raise InvalidDestinationError(f"--bucket takes a bucket name, not a URI: {bucket!r}")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise InvalidDestinationError(
            f"invalid bucket name {bucket!r}: use 3-222 characters among lowercase letters, "
            "digits, '-', '_' and '.', starting and ending with a letter or digit"
        )
    return bucket


def storage_uri(bucket: str, prefix: str) -> str:
    """Return the ``storageUri`` KServe needs for this destination."""
    return f"gs://{validate_bucket_name(bucket)}/{normalize_prefix(prefix)}"


def parse_properties(text: str) -> dict[str, str]:
    """Parse a Java ``.properties`` text (TorchServe's ``config.properties``).

    Supports ``key=value`` and ``key: value``, ``#``/``!`` comments and backslash line
    continuations, which is what TorchServe's own reader accepts for its config.

    Args:
        text: The file's content.

    Returns:
        The properties, keys and values stripped of surrounding whitespace.
    """
    props: dict[str, str] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.strip() if not logical else raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        if line.endswith("\\") and not line.endswith("\\\\"):
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry = "".join(logical)
        logical = []
        match = re.match(r"^([^=:\s]+)\s*[=:\s]\s*(.*)$", entry)
        if match:
            props[match.group(1)] = match.group(2).strip()
        else:
            props[entry.strip()] = ""
    return props


def snapshot_mar_names(props: Mapping[str, str]) -> dict[str, str]:
    """Return ``{model name: marName}`` from the ``model_snapshot`` property, if any.

    Raises:
        InvalidConfigError: If ``model_snapshot`` is not valid JSON of TorchServe's shape.
    """
    raw = props.get("model_snapshot")
    if not raw:
        return {}
    try:
        snapshot = json.loads(raw)
        models = snapshot.get("models", {})
        names: dict[str, str] = {}
        for model_name, versions in models.items():
            for version in versions.values():
                names[model_name] = str(version["marName"])
    except (ValueError, AttributeError, KeyError, TypeError) as exc:
        raise InvalidConfigError(
            f"model_snapshot in config.properties is not TorchServe's JSON shape: {exc}"
        ) from exc
    return names


def crc32c_b64(data: bytes) -> str:
    """Return the CRC32C of ``data`` as GCS reports it (base64 of the big-endian value)."""
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


def file_checksums(path: Path) -> tuple[str, str]:
    """Return ``(crc32c, md5)`` of a file, both base64 as in GCS object metadata."""
    crc = google_crc32c.Checksum()
    md5 = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            crc.update(block)
            md5.update(block)
    return (
        base64.b64encode(crc.digest()).decode("ascii"),
        base64.b64encode(md5.digest()).decode("ascii"),
    )


def plan(store: Path, prefix: str) -> list[Artifact]:
    """List what to upload from a local model store, with checksums.

    Args:
        store: The folder holding ``config/config.properties`` and ``model-store/*.mar``.
        prefix: The destination prefix (normalized here).

    Returns:
        One artifact per file: the archives by name, then the config.

    Raises:
        MissingArtifactError: If the config or any .mar (including one the config's
            ``model_snapshot`` names) is missing.
        InvalidConfigError: If the config's ``model_snapshot`` is malformed.
        InvalidDestinationError: If the prefix is unusable.
    """
    prefix = normalize_prefix(prefix)
    config = store / CONFIG_OBJECT
    if not config.is_file():
        raise MissingArtifactError(f"missing TorchServe config: {config}")
    model_store = store / MODEL_STORE_DIR
    mars = sorted(model_store.glob(f"*{MAR_SUFFIX}")) if model_store.is_dir() else []
    if not mars:
        raise MissingArtifactError(
            f"no model archive (*.mar) in {model_store}: run `make mar` first"
        )
    wanted = snapshot_mar_names(parse_properties(config.read_text(encoding="utf-8")))
    present = {mar.name for mar in mars}
    absent = sorted(set(wanted.values()) - present)
    if absent:
        raise MissingArtifactError(
            f"config.properties loads {', '.join(absent)} but {model_store} has only "
            f"{', '.join(sorted(present))}: run `make mar` first"
        )
    artifacts = []
    # Archives first, config last: a reader never finds a config naming a missing archive.
    for path, name in [(mar, f"{MODEL_STORE_DIR}/{mar.name}") for mar in mars] + [
        (config, CONFIG_OBJECT)
    ]:
        crc, md5 = file_checksums(path)
        artifacts.append(
            Artifact(
                local=path,
                object_name=f"{prefix}/{name}",
                size=path.stat().st_size,
                crc32c=crc,
                md5=md5,
            )
        )
    return artifacts


def is_unchanged(artifact: Artifact, remote: RemoteObject | None) -> bool:
    """Return True if ``remote`` already holds the same bytes as ``artifact``.

    CRC32C is compared when the object has one (every GCS object does), MD5 otherwise;
    an object with neither is treated as changed.
    """
    if remote is None or (remote.size is not None and remote.size != artifact.size):
        return False
    if remote.crc32c:
        return remote.crc32c == artifact.crc32c
    if remote.md5:
        return remote.md5 == artifact.md5
    return False


def check_listing(
    artifacts: Sequence[Artifact], listing: Mapping[str, RemoteObject]
) -> tuple[list[str], list[str]]:
    """Compare the listing under the prefix with what should be there.

    Returns:
        ``(problems, extra)``: descriptions of missing or mismatching objects, and the names
        of objects under the prefix that are not part of the upload.
    """
    problems = []
    expected = {a.object_name for a in artifacts}
    for artifact in artifacts:
        remote = listing.get(artifact.object_name)
        if remote is None:
            problems.append(f"missing after upload: {artifact.object_name}")
        elif not is_unchanged(artifact, remote):
            problems.append(
                f"checksum or size mismatch: {artifact.object_name} "
                f"(local crc32c {artifact.crc32c}, {artifact.size} B; "
                f"remote crc32c {remote.crc32c}, {remote.size} B)"
            )
    extra = sorted(name for name in listing if name not in expected and not name.endswith("/"))
    return problems, extra


def survey(artifacts: Sequence[Artifact], listing: Mapping[str, RemoteObject]) -> Survey:
    """Classify the listing taken before the upload (see :class:`Survey`).

    Folder placeholders (names ending in ``/``) are neither strays nor deleted.
    """
    results = []
    differing = []
    for artifact in artifacts:
        remote = listing.get(artifact.object_name)
        unchanged = is_unchanged(artifact, remote)
        results.append(
            ObjectResult(
                artifact.object_name,
                artifact.size,
                uploaded=not unchanged,
                replaced=remote is not None and not unchanged,
            )
        )
        if remote is not None and not unchanged:
            differing.append(artifact)
    _, strays = check_listing(artifacts, listing)
    return Survey(tuple(results), tuple(differing), tuple(strays))


def model_versions(names: Iterable[str], prefix: str) -> list[str]:
    """Return the folders below ``prefix`` that look like model stores of their own.

    A folder is one when an object's path below it goes through ``config/`` or
    ``model-store/`` (``kplate/v1`` for ``kplate/v1/model-store/kplate.mar`` under ``kplate``);
    the layout's own ``PREFIX/model-store/`` is not.
    """
    found = set()
    for name in names:
        parts = name.removeprefix(f"{prefix}/").split("/")[:-1]
        for depth, part in enumerate(parts):
            if depth >= 1 and part in LAYOUT_DIRS:
                found.add(f"{prefix}/{'/'.join(parts[:depth])}")
                break
    return sorted(found)


def suggest_prefix(prefix: str, versions: Sequence[str]) -> str:
    """Return a prefix of its own to suggest: the next ``vN`` after ``versions``, else
    ``prefix`` with its trailing number raised (``kplate/v1`` -> ``kplate/v2``), else
    ``prefix/v1``."""
    numbers = [
        int(match.group(1))
        for version in versions
        if (match := re.fullmatch(r"v(\d+)", version.rsplit("/", 1)[-1]))
    ]
    if numbers:
        return f"{prefix}/v{max(numbers) + 1}"
    match = re.fullmatch(r"(.*?)(\d+)", prefix)
    if match:
        return f"{match.group(1)}{int(match.group(2)) + 1}"
    return f"{prefix}/v1"


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return f"{shown} (and {more} more; --dry-run lists them all)" if more > 0 else shown


def stray_error(bucket_name: str, prefix: str, strays: Sequence[str]) -> VerificationError:
    """The refusal for a prefix holding objects outside the layout, naming them, saying what
    ``--prune`` would delete, and recommending it only when no other model version is there."""
    versions = model_versions(strays, prefix)
    where = f"gs://{bucket_name}/{prefix}/"
    count = f"{len(strays)} object{'s' if len(strays) != 1 else ''}"
    own = suggest_prefix(prefix, versions)
    head = (
        f"{where} already holds {count} outside the model-store layout (KServe downloads "
        f"everything under a storageUri): {_listed(strays)}. Nothing was uploaded. "
    )
    if versions:
        return VerificationError(
            head
            + "They include other model versions ("
            + ", ".join(f"gs://{bucket_name}/{v}/" for v in versions)
            + f"), which a running InferenceService may read: publish under a prefix of its "
            f"own, e.g. --prefix {own} (make upload PREFIX={own}). --prune would DELETE all "
            f"{count} listed, those model versions included: pass it only to delete them."
        )
    return VerificationError(
        head + f"Publish under a prefix of its own, e.g. --prefix {own} (make upload "
        f"PREFIX={own}), or pass --prune to delete exactly these {count}."
    )


def replace_error(
    bucket_name: str,
    prefix: str,
    differing: Sequence[Artifact],
    listing: Mapping[str, RemoteObject],
) -> ReplaceRefusedError:
    """The refusal to replace objects that differ from the local files."""
    details = []
    for artifact in differing:
        remote = listing[artifact.object_name]
        details.append(
            f"gs://{bucket_name}/{artifact.object_name} (remote crc32c {remote.crc32c}, "
            f"{remote.size} B; local {artifact.local}: crc32c {artifact.crc32c}, "
            f"{artifact.size} B)"
        )
    own = suggest_prefix(prefix, [])
    return ReplaceRefusedError(
        "refusing to replace objects that differ from the local files, because the pods of an "
        "InferenceService serving this prefix download them again on every restart or "
        f"scale-up: {'; '.join(details)}. Nothing was uploaded. Publish this model under a "
        f"prefix not used yet, e.g. --prefix {own} (make upload PREFIX={own}, then prefix={own} in "
        "k8s/base/params.env and make deploy), or pass --overwrite (make upload OVERWRITE=1) "
        "to replace them in place."
    )


def refusal(
    bucket_name: str,
    prefix: str,
    found: Survey,
    listing: Mapping[str, RemoteObject],
    *,
    prune: bool,
    overwrite: bool,
) -> UploadError | None:
    """Return the error an upload must stop with before writing anything, if any.

    Strays come first (the prefix itself is likely wrong), then differing objects.
    """
    if found.strays and not prune:
        return stray_error(bucket_name, prefix, found.strays)
    if found.differing and not overwrite:
        return replace_error(bucket_name, prefix, found.differing, listing)
    return None


# --------------------------------------------------------------------------- GCS side


def _remote(blob: Blob) -> RemoteObject:
    return RemoteObject(name=blob.name, size=blob.size, crc32c=blob.crc32c, md5=blob.md5_hash)


def make_client(project: str | None = None) -> Client:
    """Create a storage client from Application Default Credentials (or the emulator).

    Raises:
        CredentialsError: If no credentials can be found.
    """
    from google.cloud import storage

    try:
        if project:
            return storage.Client(project=project)
        return storage.Client()
    except auth_exc.DefaultCredentialsError as exc:
        raise CredentialsError(
            "no Google Cloud credentials found. Run `gcloud auth application-default login`, "
            "or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file kept outside "
            f"the repository ({exc})"
        ) from exc


def open_bucket(client: Client, bucket_name: str, prefix: str) -> Bucket:
    """Return the bucket after checking that it exists and is readable.

    A principal with object permissions but without ``storage.buckets.get`` is accepted when
    it can list objects.

    Raises:
        BucketNotFoundError: If the bucket does not exist.
        CredentialsError: If the credentials cannot read it.
    """
    bucket = client.bucket(bucket_name)
    try:
        bucket.reload()
    except gexc.NotFound as exc:
        raise BucketNotFoundError(
            f"bucket gs://{bucket_name} does not exist; create it with "
            f"`gcloud storage buckets create gs://{bucket_name} --location=REGION`"
        ) from exc
    except gexc.Forbidden:
        try:
            next(iter(client.list_blobs(bucket_name, prefix=f"{prefix}/", max_results=1)), None)
        except gexc.NotFound as exc:
            raise BucketNotFoundError(f"bucket gs://{bucket_name} does not exist") from exc
        except gexc.Forbidden as exc:
            raise CredentialsError(
                f"the credentials in use cannot read gs://{bucket_name}: grant them "
                f"roles/storage.objectAdmin on the bucket ({exc.message})"
            ) from exc
    return bucket


def list_prefix(client: Client, bucket_name: str, prefix: str) -> dict[str, RemoteObject]:
    """Return every object under ``prefix/`` by name."""
    return {
        blob.name: _remote(blob) for blob in client.list_blobs(bucket_name, prefix=f"{prefix}/")
    }


def _upload_one(bucket: Bucket, artifact: Artifact, progress: bool) -> None:
    blob = bucket.blob(artifact.object_name, chunk_size=CHUNK_SIZE)
    content_type = "text/plain" if artifact.object_name.endswith(".properties") else None
    with (
        artifact.local.open("rb") as fh,
        tqdm(
            total=artifact.size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=artifact.object_name.rsplit("/", 1)[-1],
            disable=not progress,
            leave=True,
        ) as bar,
    ):
        stream: BinaryIO = fh
        if progress:
            stream = CallbackIOWrapper(bar.update, fh, "read")
        # crc32c is computed while sending and checked against what GCS stored.
        blob.upload_from_file(
            stream,
            size=artifact.size,
            content_type=content_type or "application/octet-stream",
            checksum="crc32c",
        )


@contextmanager
def _gcs_errors(bucket_name: str, prefix: str) -> Iterator[None]:
    """Translate the client's exceptions into :class:`UploadError` subclasses."""
    try:
        yield
    except gexc.Forbidden as exc:
        raise CredentialsError(
            f"permission denied on gs://{bucket_name}/{prefix}: {exc.message}"
        ) from exc
    except gexc.NotFound as exc:
        raise BucketNotFoundError(f"bucket gs://{bucket_name} does not exist") from exc
    except auth_exc.RefreshError as exc:
        raise CredentialsError(
            "Google Cloud credentials could not be refreshed (expired or revoked): run "
            f"`gcloud auth application-default login` ({exc})"
        ) from exc
    except gexc.GoogleAPIError as exc:
        raise UploadError(f"GCS error on gs://{bucket_name}/{prefix}: {exc}") from exc


def inspect_prefix(
    client: Client, bucket_name: str, artifacts: Sequence[Artifact], prefix: str
) -> tuple[Survey, dict[str, RemoteObject]]:
    """List the prefix and classify it, writing nothing.

    Returns:
        The survey and the listing it was made from.

    Raises:
        BucketNotFoundError, CredentialsError, UploadError: As :func:`upload`.
    """
    with _gcs_errors(bucket_name, prefix):
        open_bucket(client, bucket_name, prefix)
        listing = list_prefix(client, bucket_name, prefix)
    return survey(artifacts, listing), listing


def upload(
    client: Client,
    bucket_name: str,
    artifacts: Sequence[Artifact],
    prefix: str,
    *,
    prune: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dry_run: bool = False,
) -> Survey:
    """Check the prefix, upload the artifacts that changed, then verify the listing.

    Nothing is written when the prefix holds objects outside the layout (unless ``prune``) or
    an object that differs from its local file (unless ``overwrite``).

    Args:
        client: A storage client.
        bucket_name: The destination bucket.
        artifacts: What :func:`plan` returned.
        prefix: The normalized destination prefix.
        prune: Delete the objects under the prefix that are not part of the upload (the
            survey's ``strays``), after uploading.
        overwrite: Replace objects whose checksum differs from the local file.
        progress: Show a progress bar per uploaded file.
        dry_run: Check and report what would change without writing anything.

    Returns:
        The survey taken before writing: what was (or would be) uploaded and pruned.

    Raises:
        VerificationError: Strays without ``prune`` (before writing), or a listing that does
            not match afterwards.
        ReplaceRefusedError: A differing object without ``overwrite`` (before writing).
        BucketNotFoundError, CredentialsError: See the classes.
        UploadError: For any other GCS API error.
    """
    found, before = inspect_prefix(client, bucket_name, artifacts, prefix)
    error = refusal(bucket_name, prefix, found, before, prune=prune, overwrite=overwrite)
    if error is not None:
        raise error
    if dry_run:
        return found
    with _gcs_errors(bucket_name, prefix):
        bucket = client.bucket(bucket_name)
        for artifact, result in zip(artifacts, found.results, strict=True):
            if result.uploaded:
                _upload_one(bucket, artifact, progress)
        if prune:
            for name in found.strays:
                bucket.blob(name).delete()
        problems, extra = check_listing(artifacts, list_prefix(client, bucket_name, prefix))
    if extra:
        problems.append(
            f"objects appeared under gs://{bucket_name}/{prefix}/ during the upload (KServe "
            f"would download them too): {_listed(extra)}"
        )
    if problems:
        raise VerificationError("verification failed: " + "; ".join(problems))
    return found


# --------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(
        prog="upload.py",
        description=(
            "Upload config/config.properties and model-store/*.mar to gs://BUCKET/PREFIX/ in "
            "the layout KServe's TorchServe runtime reads. Nothing is written when the prefix "
            "holds other objects (--prune) or an object with other bytes (--overwrite); "
            "unchanged objects are skipped; the listing is verified afterwards. Credentials: "
            "Application Default Credentials; STORAGE_EMULATOR_HOST selects an emulator."
        ),
        epilog=(
            "exit status: 0 ok, 1 GCS error, 2 usage, 3 missing local file, "
            "4 credentials or permission, 5 bucket missing, 6 objects outside the layout under "
            "the prefix or verification failed, 7 would replace an object with other bytes"
        ),
    )
    parser.add_argument("--bucket", required=True, help="destination bucket name (no gs://)")
    parser.add_argument("--prefix", required=True, help="folder inside the bucket, e.g. kplate/v1")
    parser.add_argument(
        "--store",
        type=Path,
        default=DEFAULT_STORE,
        help="local folder with config/ and model-store/ (default: %(default)s)",
    )
    parser.add_argument("--project", default=None, help="billing project (default: from ADC)")
    parser.add_argument(
        "--prune",
        action="store_true",
        help=(
            "delete every object under the prefix that is not part of the model store, other "
            "model versions below it included (see them first with --dry-run)"
        ),
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=(
            "replace objects whose checksum differs, under the feet of any InferenceService "
            "serving the prefix (default: refuse; publish under a new prefix instead)"
        ),
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be uploaded and what --prune would delete; write nothing",
    )
    parser.add_argument(
        "--record",
        type=Path,
        default=None,
        metavar="FILE",
        help="after a verified upload, write its storageUri to FILE (make deploy checks it)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _echo(message: str) -> None:
    print(message, flush=True)  # noqa: T201 - CLI output


def run(argv: Sequence[str] | None = None, *, client: Any = None) -> int:
    """Run the CLI and return its exit status (errors are reported on stderr).

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).
        client: A storage client to use instead of one from the environment (tests).
    """
    args = build_parser().parse_args(argv)
    try:
        prefix = normalize_prefix(args.prefix)
        uri = storage_uri(args.bucket, prefix)
        artifacts = plan(args.store, prefix)
        gcs = client if client is not None else make_client(args.project)
        if args.dry_run:
            found, listing = inspect_prefix(gcs, args.bucket, artifacts, prefix)
            _report(found, uri, dry_run=True, prune=args.prune, overwrite=args.overwrite)
            error = refusal(
                args.bucket, prefix, found, listing, prune=args.prune, overwrite=args.overwrite
            )
            if error is not None:
                raise error
            return EXIT_OK
        found = upload(
            gcs,
            args.bucket,
            artifacts,
            prefix,
            prune=args.prune,
            overwrite=args.overwrite,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except UploadError as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return exc.exit_code
    _report(found, uri, dry_run=False, prune=args.prune, overwrite=args.overwrite)
    if args.record is not None:
        args.record.write_text(f"{uri}\n", encoding="utf-8")
    return EXIT_OK


def _report(found: Survey, uri: str, *, dry_run: bool, prune: bool, overwrite: bool) -> None:
    bucket = _bucket_of(uri)
    for r in found.results:
        if not r.uploaded:
            label = "unchanged"
        elif r.replaced and not overwrite:
            label = "differs"  # refused: see the error that follows
        elif r.replaced:
            label = "would replace" if dry_run else "replaced"
        else:
            label = "would upload" if dry_run else "uploaded"
        _echo(f"{label:>13}  gs://{bucket}/{r.object_name}")
    for name in found.strays:
        label = ("would delete" if dry_run else "deleted") if prune else "stray"
        _echo(f"{label:>13}  gs://{bucket}/{name}")
    changed = sum(r.uploaded for r in found.results)
    strays = len(found.strays)
    noun = f"{strays} object{'s' if strays != 1 else ''}"
    if dry_run:
        _echo(f"dry run: {changed} of {len(found.results)} objects would be uploaded to {uri}")
        if strays:
            marked = "would delete" if prune else "stray"
            _echo(f"--prune would delete {noun}: those marked '{marked}' above")
        return
    _echo(
        f"verified {len(found.results)} objects under {uri}/ "
        f"({changed} uploaded, {len(found.results) - changed} unchanged"
        + (f", {noun} pruned)" if prune and strays else ")")
    )
    _echo(f"storageUri: {uri}")


def _bucket_of(uri: str) -> str:
    return uri.removeprefix("gs://").split("/", 1)[0]


def main() -> None:
    """Console entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
