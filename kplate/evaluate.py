"""``kplate eval``: accuracy on a folder with ``labels.jsonl`` (the real-dev format).

Scenes: precision and recall at box IoU 0.5 of the plates returned (detected, and read as a
plate-shaped string), end-to-end exact match (a labelled plate found and read exactly), and
the detector's own precision and recall before any reading is dropped. Crops: the reader on
the whole image, exact match and character accuracy. Everything is broken down by layout and colour.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image
from tqdm import tqdm

from kplate import plates, targets
from kplate.annotate import annotate_crop_error, annotate_scene_errors
from kplate.imageio import to_rgb_array
from kplate.result import Detection, Plate, Reading, hull
from kplate.synth.dataset import read_labels

IOU_THRESHOLD = 0.5


class Engine(Protocol):
    """What evaluation needs from a recognizer."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]: ...

    def read_detections(
        self, arrays: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Plate]]: ...

    def read(self, crops: Sequence[Any]) -> list[Reading]: ...


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two strings."""
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def char_accuracy(pred: str, truth: str) -> float:
    """``1 - edit_distance / len(truth)``, floored at 0."""
    return max(0.0, 1.0 - edit_distance(pred, truth) / max(1, len(truth)))


@dataclass
class _Tally:
    n: int = 0
    exact: int = 0
    chars: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    det_tp: int = 0
    det_fp: int = 0


@dataclass
class Report:
    """Evaluation results; ``to_json`` and ``to_markdown`` render them."""

    folder: str
    scenes: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    crops: dict[str, _Tally] = field(default_factory=lambda: defaultdict(_Tally))
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Metrics as a JSON-serialisable dict (``overall`` plus per-group rows)."""

        def scene_row(t: _Tally, overall: bool) -> dict[str, Any]:
            # a false plate has no labelled layout or colour: precision exists only overall
            return {
                "plates": t.n,
                "precision": _ratio(t.tp, t.tp + t.fp) if overall else None,
                "recall": _ratio(t.tp, t.n),
                "e2e_exact": _ratio(t.exact, t.n),
                "detector_precision": _ratio(t.det_tp, t.det_tp + t.det_fp) if overall else None,
                "detector_recall": _ratio(t.det_tp, t.n),
            }

        def crop_row(t: _Tally) -> dict[str, Any]:
            return {
                "crops": t.n,
                "exact": _ratio(t.exact, t.n),
                "char_acc": _ratio(t.chars, t.n),
            }

        return {
            "folder": self.folder,
            "iou_threshold": IOU_THRESHOLD,
            "scenes": {k: scene_row(self.scenes[k], k == "overall") for k in _order(self.scenes)},
            "crops": {k: crop_row(self.crops[k]) for k in _order(self.crops)},
            "failures": self.failures,
        }

    def to_markdown(self) -> str:
        """Two Markdown tables: scenes and crops, overall first, then by layout and colour."""
        j = self.to_json()
        lines = [f"Evaluation of `{self.folder}` (IoU {IOU_THRESHOLD})", ""]
        if j["scenes"]:
            lines += [
                "| scenes | plates | precision | recall | end-to-end exact "
                "| detector precision | detector recall |",
                "|---|---:|---:|---:|---:|---:|---:|",
            ]
            for k, r in j["scenes"].items():
                cells = [r[c] for c in ("precision", "recall", "e2e_exact")]
                cells += [r["detector_precision"], r["detector_recall"]]
                lines.append(f"| {k} | {r['plates']} | {' | '.join(map(_percent, cells))} |")
            lines.append("")
        if j["crops"]:
            lines += ["| crops | n | exact match | char accuracy |", "|---|---:|---:|---:|"]
            for k, r in j["crops"].items():
                shown = f"{_percent(r['exact'])} | {_percent(r['char_acc'])}"
                lines.append(f"| {k} | {r['crops']} | {shown} |")
        return "\n".join(lines) + "\n"


def _ratio(part: float, whole: int) -> float | None:
    """``part / whole`` to 4 places, or ``None`` where there is nothing to count (no labelled
    plate for a recall, no returned plate for a precision)."""
    return round(part / whole, 4) if whole else None


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _order(groups: dict[str, _Tally]) -> list[str]:
    """``overall`` first, then the layouts, then the colours."""
    return sorted(groups, key=lambda k: (k != "overall", not k.startswith("layout"), k))


def _groups(row: dict[str, Any]) -> list[str]:
    groups = ["overall"]
    if row.get("layout"):
        groups.append(f"layout={plates.layout_name(row['layout'])}")
    if row.get("color"):
        groups.append(f"color={plates.color_name(row['color'])}")
    return groups


def evaluate(
    folder: Path,
    engine: Engine,
    progress: bool = True,
    batch: int = 4,
    failures_dir: Path | None = None,
) -> Report:
    """Evaluate ``engine`` on ``folder/labels.jsonl``.

    ``failures_dir``: also write there, as PNG, each scene or crop with an error, drawn by
    :mod:`kplate.annotate` (labelled plates, plates read right, wrong or false ones).

    Raises:
        FileNotFoundError: the folder has no ``labels.jsonl`` or a listed image is missing.
    """
    labels = folder / "labels.jsonl"
    if not labels.is_file():
        raise FileNotFoundError(
            f"{labels} not found: `kplate eval` needs a folder with labels.jsonl"
        )
    by_file: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_labels(labels):
        by_file[row["file"]].append(row)
    report = Report(folder=str(folder))
    files = sorted(by_file)
    if failures_dir is not None:
        failures_dir.mkdir(parents=True, exist_ok=True)
        for f in files:  # drawings of an earlier run on this set: this run's failures only
            _failure_path(failures_dir, f).unlink(missing_ok=True)
    for f in files:
        if not (folder / f).is_file():
            raise FileNotFoundError(f"{folder / f} is listed in labels.jsonl but missing")
    scene_files = [f for f in files if by_file[f][0].get("kind", "scene") == "scene"]
    crop_files = [f for f in files if by_file[f][0].get("kind") == "crop"]
    bar = tqdm(total=len(files), desc="eval", disable=not progress)
    for start in range(0, len(scene_files), batch):
        names = scene_files[start : start + batch]
        images = [_load(folder / n) for n in names]
        detections = engine.detect(images)  # run once: scored alone, then read
        found = engine.read_detections(images, detections)
        for name, image, plates_found, dets in zip(names, images, found, detections):
            gts = [r for r in by_file[name] if r.get("box")]
            n_failed = len(report.failures)
            judged = _score_scene(report, name, gts, plates_found)
            _score_detections(report, gts, dets)
            if failures_dir is not None and len(report.failures) > n_failed:
                labelled = [(tuple(r["box"]), plates.normalize(r["text"])) for r in gts]
                _save(annotate_scene_errors(image, labelled, judged), failures_dir, name)
        bar.update(len(names))
    for start in range(0, len(crop_files), 32):
        names = crop_files[start : start + 32]
        crops = [_load(folder / n) for n in names]
        readings = engine.read(crops)
        for name, crop, r in zip(names, crops, readings):
            row = by_file[name][0]
            truth = plates.normalize(row["text"])
            ok = r.text == truth
            for g in _groups(row):
                t = report.crops[g]
                t.n += 1
                t.exact += int(ok)
                t.chars += char_accuracy(r.text, truth)
            if not ok:
                report.failures.append(
                    {"file": name, "kind": "crop", "truth": truth, "read": r.text}
                )
                if failures_dir is not None:
                    _save(annotate_crop_error(crop, truth, r.text), failures_dir, name)
        bar.update(len(names))
    bar.close()
    return report


def _failure_path(folder: Path, name: str) -> Path:
    """``folder/NAME.png``, ``name``'s folders joined by ``__``."""
    return folder / (str(Path(name).with_suffix("")).replace("/", "__") + ".png")


def _save(image: Image.Image, folder: Path, name: str) -> None:
    """Write ``image`` as :func:`_failure_path` (PNG, lossless: exact colours)."""
    image.save(_failure_path(folder, name))


def _load(path: Path) -> Any:
    with Image.open(path) as im:
        return to_rgb_array(im)


_Found = TypeVar("_Found", Plate, Detection)


def _match(found: Sequence[_Found], gts: list[dict[str, Any]]) -> tuple[list[_Found], list[int]]:
    """``found`` best score first, and for each the index of its labelled plate (box IoU
    >= :data:`IOU_THRESHOLD`, greedy) or -1."""
    order = sorted(found, key=lambda f: -f.score)
    # the hull of the corners, as the synthetic labels' boxes are drawn (not clipped)
    boxes = [np.array(hull(f.corners)) for f in order]
    return order, targets.match(boxes, [np.array(r["box"]) for r in gts], IOU_THRESHOLD)


def _score_scene(
    report: Report, name: str, gts: list[dict[str, Any]], found: list[Plate]
) -> list[tuple[Plate, bool]]:
    """Returned plates against the labelled plates ``gts`` (rows with a box); returns each
    returned plate and whether it matched a labelled plate and was read exactly."""
    order, hits = _match(found, gts)
    texts = [plates.normalize(r["text"]) for r in gts]
    matched: dict[int, Plate] = {}
    for p, best in zip(order, hits):
        if best >= 0:
            matched[best] = p
        else:
            report.scenes["overall"].fp += 1
            report.failures.append(
                {"file": name, "kind": "scene", "false_plate": p.text, "box": list(hull(p.corners))}
            )
    for g, (row, truth) in enumerate(zip(gts, texts)):
        hit = matched.get(g)
        for grp in _groups(row):
            t = report.scenes[grp]
            t.n += 1
            t.tp += int(hit is not None)
            t.fn += int(hit is None)
            t.exact += int(hit is not None and hit.text == truth)
        if hit is None or hit.text != truth:
            report.failures.append(
                {
                    "file": name,
                    "kind": "scene",
                    "truth": truth,
                    "read": None if hit is None else hit.text,
                }
            )
    return [(p, g >= 0 and p.text == texts[g]) for p, g in zip(order, hits)]


def _score_detections(report: Report, gts: list[dict[str, Any]], dets: list[Detection]) -> None:
    """The detector alone: every detection counts, read or not."""
    _, hits = _match(dets, gts)
    report.scenes["overall"].det_fp += sum(h < 0 for h in hits)
    for g in {h for h in hits if h >= 0}:
        for grp in _groups(gts[g]):
            report.scenes[grp].det_tp += 1


def write_report(report: Report, out: Path | None) -> str:
    """Write ``report.json`` and ``report.md`` into ``out`` when given; return the Markdown."""
    md = report.to_markdown()
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report_json = json.dumps(report.to_json(), ensure_ascii=False, indent=2)
        (out / "report.json").write_text(report_json, encoding="utf-8")
        (out / "report.md").write_text(md, encoding="utf-8")
    return md
