"""Run the engine and the served model with the Python environment this script runs in.

``make check-serving-torch`` runs it in ``.venv-serving``, which holds the predictor image's
torch 2.4.0 and torchvision 0.19.0 (``docker/Dockerfile``), its pinned engine dependencies
(``docker/requirements.txt``) and TorchServe 0.12.0, so that the shipped weights and the
handler are run, not only inspected, under the torch a serving image carries. Under the
project's own ``.venv`` it checks the same against the pinned torch.

1. ``Recognizer`` on CPU reads every committed synthetic scene and crop
   (``tests/data/synthetic``) exactly.
2. A ``.mar`` built here runs under real TorchServe alone (as in a KServe pod) on free loopback
   ports: each scene posted to ``/predictions`` and to TorchServe's ``/v1`` predict returns the
   engine's plates, and in concurrent requests a corrupt image fails alone with a 400.

Exit status 0 when every check holds, 1 otherwise (each failure is logged).
"""

from __future__ import annotations

import argparse
import base64
import logging
import platform
import re
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402
import torch  # noqa: E402

from handler.archive import build_mar  # noqa: E402
from handler.local_serving import LocalServing, Ports, render_config  # noqa: E402
from kplate import Recognizer  # noqa: E402
from kplate.synth import read_labels  # noqa: E402

logger = logging.getLogger("kplate.check")

SAMPLES = ROOT / "tests" / "data" / "synthetic"
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
CORRUPT = b"\xff\xd8\xff\xe0 not a whole JPEG"


def load_samples(folder: Path = SAMPLES) -> tuple[dict[str, list[str]], list[str], list[str]]:
    """Labels (file -> sorted texts), and the scene and crop files of ``folder``."""
    truth: dict[str, list[str]] = {}
    for row in read_labels(folder / "labels.jsonl"):
        truth.setdefault(row["file"], []).append(row["text"])
    truth = {name: sorted(texts) for name, texts in truth.items()}
    scenes = sorted(n for n in truth if n.startswith("scene"))
    crops = sorted(n for n in truth if n.startswith("crop"))
    return truth, scenes, crops


def check_engine(folder: Path = SAMPLES) -> list[str]:
    """Failures of the engine on the committed samples (none: all read exactly)."""
    truth, scenes, crops = load_samples(folder)
    rec = Recognizer.load(device="cpu")
    failures = []
    found = rec.recognize([(folder / n).read_bytes() for n in scenes])
    for name, plates in zip(scenes, found):
        got = sorted(p.text for p in plates)
        if got != truth[name]:
            failures.append(f"engine: {name} read {got}, labelled {truth[name]}")
    readings = rec.read([(folder / n).read_bytes() for n in crops])
    for name, reading in zip(crops, readings):
        if [reading.text] != truth[name]:
            failures.append(f"engine: {name} read {reading.text!r}, labelled {truth[name]}")
    logger.info("engine: %d scenes and %d crops read", len(scenes), len(crops))
    return failures


def _texts(plates: Any) -> list[str]:
    return sorted(p["text"] for p in plates)


def check_torchserve(work: Path, folder: Path = SAMPLES) -> list[str]:
    """Failures of the served model under TorchServe alone (none: all as expected)."""
    truth, scenes, _ = load_samples(folder)
    build_mar(work / "model-store")
    ports = Ports.free()
    config = render_config(
        ROOT / "gs" / "config" / "config.properties", work / "ts.properties", ports
    )
    serving = LocalServing(
        config, work / "model-store", work / "state", front_port=ports.front, env=THREAD_ENV,
        front=False,
    )  # fmt: skip
    failures = []
    name = serving.model_name
    predictions = f"{serving.inference_url}/predictions/{name}"
    v1 = f"{serving.inference_url}/v1/models/{name}:predict"
    with serving:
        for scene in scenes:
            image = (folder / scene).read_bytes()
            raw = requests.post(predictions, data=image, timeout=120)
            body = {"instances": [{"b64": base64.b64encode(image).decode()}]}
            wrapped = requests.post(v1, json=body, timeout=120)
            if raw.status_code != 200 or _texts(raw.json()) != truth[scene]:
                failures.append(f"TorchServe: {scene}: {raw.status_code} {raw.text[:200]}")
            elif wrapped.status_code != 200 or wrapped.json() != {"predictions": [raw.json()]}:
                failures.append(
                    f"TorchServe v1: {scene}: {wrapped.status_code} {wrapped.text[:200]}"
                )
        payloads = [(folder / scenes[0]).read_bytes(), CORRUPT, (folder / scenes[1]).read_bytes()]
        with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
            answers = list(
                pool.map(lambda p: requests.post(predictions, data=p, timeout=120), payloads)
            )
        statuses = [a.status_code for a in answers]
        if statuses != [200, 400, 200] or "decode" not in answers[1].json().get("error", ""):
            failures.append(
                f"TorchServe: a corrupt image among good ones: {statuses} {answers[1].text[:200]}"
            )
        log = (serving.log_dir / "model_log.log").read_text(encoding="utf-8", errors="replace")
        worker_torch = sorted(set(re.findall(r"kplate loaded on \S+ from .* \(torch (\S+),", log)))
        if worker_torch != [torch.__version__]:
            failures.append(
                f"TorchServe: the worker ran torch {worker_torch}, not {torch.__version__}"
            )
    logger.info(
        "TorchServe: %d scenes served over /predictions and /v1, by a worker on torch %s",
        len(scenes), worker_torch,
    )  # fmt: skip
    return failures


def main(argv: list[str] | None = None) -> int:
    """Run both checks; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-only", action="store_true", help="skip the TorchServe check")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logger.info(
        "Python %s, torch %s, numpy %s",
        platform.python_version(),
        torch.__version__,
        np.__version__,
    )
    failures = check_engine()
    if not args.engine_only:
        with tempfile.TemporaryDirectory(prefix="kplate-check-") as tmp:
            failures += check_torchserve(Path(tmp))
    for failure in failures:
        logger.error("%s", failure)
    logger.info("%s", "FAILED" if failures else f"all checks passed with torch {torch.__version__}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
