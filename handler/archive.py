"""Build ``<model>.mar`` with ``torch-model-archiver``.

The archive is self-contained: next to the handler it carries a copy of the ``kplate``
package (source, YAML configs and the shipped weights) and of the handler's own modules.
TorchServe puts the extracted model directory first on the worker's ``PYTHONPATH``, so the
.mar runs on a stock ``pytorch/torchserve-kfs`` image that has kplate's pip dependencies
(``handler/requirements.txt``) and nothing else of this project.

Usage::

    python -m handler.archive --export-path gs/model-store [--model-name kplate]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from kplate.config import EngineConfig, load_config
from kplate.errors import WeightsError
from kplate.recognizer import CONFIG_FILE, DETECTOR_FILE, READER_FILE, READER_FILES

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
HANDLER_DIR = REPO_ROOT / "handler"
#: The handler modules the worker imports; the rest of ``handler/`` is local tooling.
HANDLER_MODULES = ("__init__.py", "protocol.py", "settings.py")
#: Files without which the archive cannot serve.
REQUIRED_WEIGHTS = (DETECTOR_FILE, READER_FILE)
DEFAULT_MODEL_NAME = "kplate"
DEFAULT_VERSION = "1.0"


class ArchiveError(RuntimeError):
    """``torch-model-archiver`` failed or produced an incomplete archive."""


def archiver_executable() -> str:
    """Path of ``torch-model-archiver`` next to this interpreter, else on ``PATH``."""
    local = Path(sys.executable).parent / "torch-model-archiver"
    if local.exists():
        return str(local)
    found = shutil.which("torch-model-archiver")
    if found is None:
        raise ArchiveError("torch-model-archiver not found; run `make install`")
    return found


def package_config(package_dir: Path) -> EngineConfig:
    """The engine config the package's shipped weights are read with, as
    ``Recognizer.load`` finds it: ``weights/engine.yaml``, else ``configs/engine.yaml``, else
    the default."""
    for path in (package_dir / "weights" / CONFIG_FILE, package_dir / "configs" / "engine.yaml"):
        if path.is_file():
            return load_config(path)
    return load_config()


def served_weights(config: EngineConfig) -> tuple[str, ...]:
    """The weights files a model serving ``config`` loads: the detector's, the reader's and
    those of the readers it reads or judges photos with (``reader.read_with``,
    ``judge_with``). The crop reader's stays out unless it is one of them: a served model
    reads whole photos, never the crops given to ``Recognizer.read``."""
    named = {READER_FILES[name] for name in config.reader.photo_readers}
    return (*REQUIRED_WEIGHTS, *sorted(named - set(REQUIRED_WEIGHTS)))


def stage(staging: Path, package_dir: Path) -> tuple[str, ...]:
    """Copy the ``kplate`` package (with the weights files of :func:`served_weights` only)
    and the handler modules into ``staging``; returns the weights files copied.

    Raises:
        WeightsError: a weights file the package's engine config serves with is missing from
            ``package_dir/weights``.
    """
    weights = package_dir / "weights"
    served = served_weights(package_config(package_dir))
    missing = [name for name in served if not (weights / name).is_file()]
    if missing:
        raise WeightsError(
            f"cannot build the .mar: {', '.join(missing)} missing in {weights} "
            "(train the models or fetch the shipped weights first)"
        )
    skip_always = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = set(skip_always(directory, names))
        if Path(directory) == weights:
            skip |= {n for n in names if n.endswith(".pt") and n not in served}
        return skip

    shutil.copytree(package_dir, staging / "kplate", ignore=ignore)
    (staging / "handler").mkdir()
    for name in HANDLER_MODULES:
        shutil.copy2(HANDLER_DIR / name, staging / "handler" / name)
    return served


def build_mar(
    export_path: Path,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    version: str = DEFAULT_VERSION,
    package_dir: Path | None = None,
    config_file: Path | None = None,
) -> Path:
    """Build ``export_path/<model_name>.mar`` (replacing an older one) and check its content.

    Args:
        export_path: folder the archive is written to (created if needed).
        model_name: the model's name, also the archive's file name.
        version: the model version recorded in the manifest.
        package_dir: the ``kplate`` package to ship; default the one imported here.
        config_file: the ``model-config.yaml``; default ``handler/model-config.yaml``.

    Returns:
        The archive's path.

    Raises:
        WeightsError: the weights are missing.
        ArchiveError: the archiver failed or the archive lacks a required file.
    """
    import kplate

    package_dir = package_dir or Path(kplate.__file__).resolve().parent
    config_file = config_file or HANDLER_DIR / "model-config.yaml"
    export_path.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kplate-mar-") as tmp:
        staging = Path(tmp) / "extra"
        staging.mkdir()
        served = stage(staging, package_dir)
        # The archiver stages files in $TMPDIR/<model_name>: a private TMPDIR keeps two
        # concurrent builds (make mar, the integration tests) from clobbering each other.
        archiver_tmp = Path(tmp) / "tmp"
        archiver_tmp.mkdir()
        cmd = [
            archiver_executable(),
            "--model-name", model_name,
            "--version", version,
            "--handler", str(HANDLER_DIR / "kplate_handler.py"),
            "--extra-files", str(staging),
            "--config-file", str(config_file),
            "--requirements-file", str(HANDLER_DIR / "requirements.txt"),
            "--export-path", str(export_path),
            "--archive-format", "default",
            "--force",
        ]  # fmt: skip
        env = {**os.environ, "TMPDIR": str(archiver_tmp), "TEMP": str(archiver_tmp)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ArchiveError(
                f"torch-model-archiver failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}"
            )
    mar = export_path / f"{model_name}.mar"
    check_mar(mar, served)
    logger.info("built %s (%.1f MB)", mar, mar.stat().st_size / 1e6)
    return mar


def check_mar(mar: Path, weights: Sequence[str] = REQUIRED_WEIGHTS) -> None:
    """Check that an archive holds the handler, its modules, the engine and the ``weights``
    files.

    Raises:
        ArchiveError: the archive is missing or lacks a required file.
    """
    if not mar.is_file():
        raise ArchiveError(f"{mar} was not written")
    required = {
        "MAR-INF/MANIFEST.json",
        "kplate_handler.py",
        "model-config.yaml",
        "kplate/__init__.py",
        *(f"handler/{name}" for name in HANDLER_MODULES),
        *(f"kplate/weights/{name}" for name in weights),
    }
    with zipfile.ZipFile(mar) as zf:
        names = set(zf.namelist())
    missing = sorted(required - names)
    if missing:
        raise ArchiveError(f"{mar} lacks {', '.join(missing)}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export-path", type=Path, default=REPO_ROOT / "gs" / "model-store")
    parser.add_argument("--model-name", default=DEFAULT_MODEL_NAME)
    parser.add_argument("--version", default=DEFAULT_VERSION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        mar = build_mar(args.export_path, model_name=args.model_name, version=args.version)
    except (ArchiveError, WeightsError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("wrote %s", mar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
