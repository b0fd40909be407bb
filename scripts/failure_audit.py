"""A by-eye audit of crop misreadings: how many could any reader have read?

Held-out synthetic crops carry the generator's occluders, glare, blur and cut edges, so some
of their text cannot be read at all. ``sample`` draws crop failures at random from
``kplate eval --json`` reports (each names the folder it was run on), writes contact sheets
(the crop at 300 px wide beside its label and its reading) and a TSV with an empty
``judgment`` column (its ``set`` is the name of the report's folder). A person fills it in:
``U`` where, even knowing the label, one of its characters cannot be made out in the crop,
``R`` where all can; a second rater's column may sit beside it. ``summarise`` reads the filled
TSV (``--column`` picks the rater) and the same reports and prints the share of unreadable
failures with its 95% Wilson interval and the exact match any reader could reach:
``1 - error rate x share unreadable``.

    .venv/bin/python scripts/failure_audit.py sample REPORT.json... --count 100 --out DIR
    .venv/bin/python scripts/failure_audit.py summarise DIR/audit.tsv REPORT.json...
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from scipy.stats import binomtest

from kplate.synth import read_labels
from kplate.synth.fonts import find_fonts

FIELDS = ("index", "set", "file", "width", "height", "style", "truth", "read", "judgment")
JUDGMENTS = ("U", "R")  # unreadable, readable
TILE_W, TEXT_W, PER_SHEET = 300, 260, 10


class AuditError(ValueError):
    """A report, a label file or a judgment the audit cannot use."""


@dataclass(frozen=True)
class Failure:
    folder: Path
    file: str
    width: int
    height: int
    style: str
    truth: str
    read: str


def _crop_totals(report: dict[str, Any]) -> int:
    crops = report.get("crops") or {}
    if "overall" not in crops:
        raise AuditError(f"{report.get('folder')}: the report has no crops")
    return int(crops["overall"]["crops"])


def _failed_crops(reports: Sequence[dict[str, Any]]) -> list[tuple[Path, dict[str, Any]]]:
    """``(folder, failure entry)`` of every crop a report got wrong, from the reports alone.

    Raises:
        AuditError: a report has no crops, or two reports are of folders with the same name.
    """
    names = [Path(r["folder"]).name for r in reports]
    if len(set(names)) < len(names):
        raise AuditError(f"two reports are of folders with the same name: {names}")
    out = []
    for report in reports:
        _crop_totals(report)
        folder = Path(report["folder"])
        out += [(folder, f) for f in report["failures"] if f["kind"] == "crop"]
    return out


def crop_failures(reports: Sequence[dict[str, Any]]) -> list[Failure]:
    """Every crop failure of ``reports``, with the crop's size and its label's style (if any).

    Raises:
        AuditError: a report has no crops, or names a file its folder's labels do not hold.
    """
    out = []
    labels: dict[Path, dict[str, dict[str, Any]]] = {}
    for folder, f in _failed_crops(reports):
        if folder not in labels:
            labels[folder] = {r["file"]: r for r in read_labels(folder / "labels.jsonl")}
        if f["file"] not in labels[folder]:
            raise AuditError(f"{folder}: {f['file']} is not in labels.jsonl")
        with Image.open(folder / f["file"]) as im:
            w, h = im.size
        style = str(labels[folder][f["file"]].get("style", ""))
        out.append(Failure(folder, f["file"], w, h, style, f["truth"], f["read"] or ""))
    return out


def draw(failures: Sequence[Failure]) -> list[Image.Image]:
    """Contact sheets of ``failures``, ``PER_SHEET`` to a sheet, numbered from 0."""
    font = ImageFont.truetype(str(find_fonts()[0]), 20)
    sheets = []
    for start in range(0, len(failures), PER_SHEET):
        tiles = []
        for i, f in enumerate(failures[start : start + PER_SHEET], start=start):
            crop = Image.open(f.folder / f.file).convert("RGB")
            h = max(1, round(crop.height * TILE_W / crop.width))
            tile = Image.new("RGB", (TILE_W + TEXT_W, max(h, 70) + 6), "white")
            tile.paste(crop.resize((TILE_W, h), Image.Resampling.BICUBIC), (0, 3))
            d = ImageDraw.Draw(tile)
            d.text((TILE_W + 8, 3), f"#{i} {f.width}x{f.height}", font=font, fill="black")
            d.text((TILE_W + 8, 25), f"T {f.truth}", font=font, fill="darkgreen")
            d.text((TILE_W + 8, 47), f"R {f.read}", font=font, fill="red")
            tiles.append(tile)
        sheet = Image.new("RGB", (TILE_W + TEXT_W, sum(t.height for t in tiles)), "gray")
        y = 0
        for t in tiles:
            sheet.paste(t, (0, y))
            y += t.height
        sheets.append(sheet)
    return sheets


def sample(failures: Sequence[Failure], count: int, seed: int) -> list[Failure]:
    """``count`` of ``failures`` drawn at random (shuffled with ``random.Random(seed)``)."""
    drawn = list(failures)
    random.Random(seed).shuffle(drawn)
    return drawn[:count]


@dataclass(frozen=True)
class Summary:
    crops: int
    failures: int
    judged: int
    unreadable: int
    #: 95% Wilson interval of the share of failures that are unreadable.
    share_low: float
    share_high: float

    @property
    def exact(self) -> float:
        return 1 - self.failures / self.crops

    def ceiling(self, share: float) -> float:
        """The exact match of a reader that reads every readable crop."""
        return 1 - self.failures / self.crops * share

    def describe(self) -> str:
        share = self.unreadable / self.judged
        return (
            f"{self.failures} of {self.crops} crops misread (exact {100 * self.exact:.2f}%); "
            f"{self.unreadable} of {self.judged} judged unreadable "
            f"({100 * share:.0f}%, 95% interval {100 * self.share_low:.1f}-"
            f"{100 * self.share_high:.1f}%); a reader that read every readable crop would read "
            f"{100 * self.ceiling(share):.1f}% "
            f"({100 * self.ceiling(self.share_high):.1f}-{100 * self.ceiling(self.share_low):.1f}%)"
        )


def summarise(
    rows: Sequence[dict[str, str]], reports: Sequence[dict[str, Any]], column: str = "judgment"
) -> Summary:
    """The audit's figures from the judgments in ``column`` of filled TSV ``rows`` and the
    ``reports`` they were drawn from.

    Raises:
        AuditError: a row is not judged U or R, or is not a failure of ``reports``.
    """
    failures = _failed_crops(reports)
    known = {(folder.name, f["file"]) for folder, f in failures}
    for r in rows:
        if r.get(column) not in JUDGMENTS:
            raise AuditError(f"row {r['index']}: {column} {r.get(column)!r} is not U or R")
        if (r["set"], r["file"]) not in known:
            raise AuditError(f"row {r['index']}: {r['file']} is not a failure of the reports")
    n, k = len(rows), sum(r[column] == "U" for r in rows)
    if not n:
        raise AuditError("no judged rows")
    ci = binomtest(k, n).proportion_ci(0.95, method="wilson")
    return Summary(
        crops=sum(_crop_totals(r) for r in reports),
        failures=len(failures),
        judged=n,
        unreadable=k,
        share_low=float(ci.low),
        share_high=float(ci.high),
    )


def _load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="draw failures at random; write sheets and a TSV to fill")
    s.add_argument("reports", type=Path, nargs="+", help="`kplate eval --json` reports")
    s.add_argument("--count", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument(
        "--force",
        action="store_true",
        help="replace an audit.tsv already in --out (and its judgments)",
    )
    m = sub.add_parser("summarise", help="figures from a filled TSV")
    m.add_argument("tsv", type=Path)
    m.add_argument("--column", default="judgment", help="the rater's column (default judgment)")
    m.add_argument("reports", type=Path, nargs="+", help="the reports the TSV was drawn from")
    args = ap.parse_args(argv)
    try:
        reports = _load(args.reports)
        if args.command == "sample":
            tsv = args.out / "audit.tsv"
            if tsv.exists() and not args.force:
                raise FileExistsError(
                    f"{tsv} exists and may hold judgments: choose another --out, or pass --force "
                    "to replace it"
                )
            drawn = sample(crop_failures(reports), args.count, args.seed)
            args.out.mkdir(parents=True, exist_ok=True)
            for i, sheet in enumerate(draw(drawn)):
                sheet.save(args.out / f"sheet-{i:02d}.png")
            with tsv.open("w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh, delimiter="\t", lineterminator="\n")
                w.writerow(FIELDS)
                for i, f in enumerate(drawn):
                    w.writerow(
                        [
                            i,
                            f.folder.name,
                            f.file,
                            f.width,
                            f.height,
                            f.style,
                            f.truth,
                            f.read,
                            "",
                        ]
                    )
            sys.stdout.write(f"{len(drawn)} failures drawn; judge them in {args.out}/audit.tsv\n")
        else:
            with args.tsv.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
            sys.stdout.write(summarise(rows, reports, args.column).describe() + "\n")
    except (OSError, ValueError) as e:
        sys.stderr.write(f"failure_audit: {e}\n")
        return 2
    except (KeyError, TypeError) as e:
        sys.stderr.write(f"failure_audit: not a `kplate eval --json` report (no {e})\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
