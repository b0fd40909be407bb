"""The engine: detect plates, rectify them, read them, return structured results."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from kplate import plates, targets
from kplate.config import DEFAULT_CONFIG, EngineConfig, ReaderName, load_config
from kplate.imageio import ImageInput, to_rgb_array
from kplate.models.detector import STRIDE, PlateDetector
from kplate.models.layers import fold_batchnorm
from kplate.models.reader import PlateReader
from kplate.models.state import load_weights
from kplate.plate_color import has_color, plate_color
from kplate.plates import COLORS, LAYOUTS
from kplate.result import Detection, Plate, Point, Reading

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).parent / "weights"
DETECTOR_FILE = "detector.pt"
READER_FILE = "reader.pt"
#: Optional: reads the crops given to ``Recognizer.read`` (a reader fine-tuned on crops).
CROP_READER_FILE = "crop_reader.pt"
#: The weights file of each reader an engine config can name.
READER_FILES: dict[ReaderName, str] = {"reader": READER_FILE, "crop_reader": CROP_READER_FILE}
CONFIG_FILE = "engine.yaml"
#: Images per detector forward pass.
DETECT_BATCH = 8
#: Crops per reader forward pass.
READ_BATCH = 64
#: Second-look canvases per detector forward pass.
REFINE_BATCH = 32
#: Box IoU between a second-look peak and the first quad for the peak to confirm it.
REFINE_MIN_IOU = 0.5


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` picks CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def _weights_dir(weights_dir: str | Path | None) -> Path:
    return Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR


def weights_config(weights_dir: str | Path | None = None) -> EngineConfig:
    """The config of the weights in ``weights_dir`` (default: shipped): its ``engine.yaml``
    when it has one, else the package default.

    Raises:
        ConfigError: that file is not a valid engine config.
    """
    path = _weights_dir(weights_dir) / CONFIG_FILE
    return load_config(path if path.is_file() else DEFAULT_CONFIG)


def _padded_shape(image: np.ndarray) -> tuple[int, int]:
    """Height and width rounded up to multiples of 32 (the detector's total stride)."""
    return max(32, -(-image.shape[0] // 32) * 32), max(32, -(-image.shape[1] // 32) * 32)


@dataclass(frozen=True)
class _Prepared:
    image: np.ndarray  # original RGB
    scale: float  # detector pixels per original pixel


class Recognizer:
    """Korean plate recognizer: ``Recognizer.load().recognize([image, ...])``.

    Thread-safety: one instance may be used from one thread at a time.
    """

    def __init__(
        self,
        detector: PlateDetector,
        reader: PlateReader,
        config: EngineConfig,
        device: torch.device,
        crop_reader: PlateReader | None = None,
    ) -> None:
        self.detector = detector.eval().to(device)
        self.reader = reader.eval().to(device)
        #: Reads the crops given to :meth:`read`; the scene reader when there is none.
        self.crop_reader = self.reader if crop_reader is None else crop_reader.eval().to(device)
        self.config = config
        self.device = device
        self.alphabet = config.reader.alphabet

    @classmethod
    def load(
        cls, weights_dir: str | Path | None = None, device: str | torch.device | None = None
    ) -> Recognizer:
        """Load the detector and reader state_dicts from ``weights_dir`` (default: shipped),
        and the crop reader's when the folder has one (else :meth:`read` uses the reader).

        The folder's ``engine.yaml``, when present, is the config the weights were trained
        with; otherwise the package default is used.

        Raises:
            WeightsError: a weights file is missing or does not fit the model code.
            ValueError: CUDA is requested but not available.
        """
        wdir = _weights_dir(weights_dir)
        dev = resolve_device(device)
        config = weights_config(wdir)
        detector, reader = PlateDetector(config.detector), PlateReader(config.reader)
        models: list[tuple[torch.nn.Module, str]] = [
            (detector, DETECTOR_FILE),
            (reader, READER_FILE),
        ]
        crop_reader = None
        if (wdir / CROP_READER_FILE).is_file():
            crop_reader = PlateReader(config.reader)
            models.append((crop_reader, CROP_READER_FILE))
        for model, name in models:
            load_weights(model, wdir / name, dev)
            fold_batchnorm(model.eval())
        if crop_reader is None and "crop_reader" in config.reader.photo_readers:
            log.warning(
                "reader.read_with or judge_with names crop_reader but %s has no %s: "
                "the reader reads in its place",
                wdir,
                CROP_READER_FILE,
            )
        log.info(
            "loaded kplate weights from %s on %s (%s)",
            wdir,
            dev,
            "crops read by the crop reader" if crop_reader else "no crop reader",
        )
        return cls(detector, reader, config, dev, crop_reader)

    def reconfigured(
        self,
        detector: Mapping[str, Any] | None = None,
        reader: Mapping[str, Any] | None = None,
    ) -> Recognizer:
        """The same models under this config with some fields changed
        (:meth:`EngineConfig.updated`); for sweeps and comparisons without reloading.

        Raises:
            pydantic.ValidationError: a field is unknown or a value out of its range.
        """
        return Recognizer(
            self.detector,
            self.reader,
            self.config.updated(detector, reader),
            self.device,
            self.crop_reader,
        )

    # ------------------------------------------------------------ public API

    def recognize(self, images: Sequence[ImageInput]) -> list[list[Plate]]:
        """Find and read every plate in each image; one list of plates per image.

        Images may be PIL images, RGB ``uint8`` arrays or encoded bytes, of any sizes.

        Raises:
            InvalidImageError, ImageTooLargeError: an image cannot be used (bytes input).
        """
        arrays = [to_rgb_array(im) for im in images]
        return self.read_detections(arrays, self.detect(arrays))

    def read_detections(
        self, arrays: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Plate]]:
        """Rectify and read the ``detections`` of each RGB array (from :meth:`detect`) with
        the weights of ``reader.read_with``; keep the plates read as a plate-shaped string,
        by them and by those of ``reader.judge_with`` when it names others. With
        ``reader.second_opinion_below``, the judges read every plate and ``read_with`` only
        the kept plates they read below that score (:meth:`_read_plates`). A plate's
        colour is read from the pixels of its first cut
        (:func:`kplate.plate_color.plate_color`); the detector's colour stands in a
        greyscale photo. One list of plates per array."""
        rc = self.config.reader
        crops, owners = [], []
        for i, (img, dets) in enumerate(zip(arrays, detections)):
            colored = bool(dets) and has_color(img)
            for d in dets:
                cuts = self._cuts(img, np.asarray(d.corners), rc.cuts)
                crops += cuts
                color = plate_color(cuts[0], d.color) if colored else d.color
                owners.append((i, dataclasses.replace(d, color=color)))
        readings, judged = self._read_plates(crops)
        results: list[list[Plate]] = [[] for _ in arrays]
        for (i, d), r, j in zip(owners, readings, judged):
            if self._accept(j) and self._accept(r):
                h, w = arrays[i].shape[:2]
                results[i].append(Plate.from_parts(d, r, (w, h)))
        return results

    def _read_plates(self, crops: Sequence[np.ndarray]) -> tuple[list[Reading], list[Reading]]:
        """Each detected plate's reading and its judges' reading, from its
        ``len(reader.cuts)`` consecutive ``crops``. Without ``second_opinion_below`` every
        reader of ``read_with`` and ``judge_with`` reads every plate; with it, the judges read
        every plate and the other readers only the plates the judges keep below that score,
        whose reading becomes the mean of ``read_with``; the rest keep the judges' reading."""
        rc = self.config.reader
        n = len(rc.cuts)
        judges = rc.read_with if rc.judge_with is None else rc.judge_with
        below = rc.second_opinion_below
        if below is None:
            per = self._probs_by_reader({*rc.read_with, *judges}, crops, n)
            readings = self._decode(_mean_of(per, rc.read_with), rc.repair_min_score)
            if set(judges) == set(rc.read_with):
                return readings, readings
            return readings, self._decode(_mean_of(per, judges), rc.repair_min_score)
        per = self._probs_by_reader(set(judges), crops, n)
        judged = self._decode(_mean_of(per, judges), rc.repair_min_score)
        unsure = [k for k, j in enumerate(judged) if j.score < below and self._accept(j)]
        readings = list(judged)
        if unsure:
            again = [crops[k * n + c] for k in unsure for c in range(n)]
            rest = self._probs_by_reader({*rc.read_with} - {*judges}, again, n)
            probs = {name: p[unsure] for name, p in per.items()} | rest
            for k, r in zip(
                unsure, self._decode(_mean_of(probs, rc.read_with), rc.repair_min_score)
            ):
                readings[k] = r
        return readings, judged

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """Run the detector on RGB arrays at every configured scale; corners in original pixels.

        Detections of all scales are merged by box IoU, best score first, then each is given a
        second look (:meth:`refine`).
        """
        cfg = self.config.detector
        merged: list[list[tuple[np.ndarray, float, int, int]]] = [[] for _ in images]
        # largest scale first: each smaller one is shrunk from the one before, not the original
        levels = [_Prepared(np.asarray(im), 1.0) for im in images]
        for side in sorted(cfg.infer_long_sides, reverse=True):
            levels = [self._prepare(im, lv, side) for im, lv in zip(images, levels)]
            for i, dets in enumerate(self._detect_at(levels)):
                merged[i] += dets
        out: list[list[Detection]] = []
        for dets in merged:
            kept: list[tuple[np.ndarray, float, int, int]] = []
            for d in sorted(dets, key=lambda d: -d[1]):
                if all(targets.quad_iou_boxes(d[0], k[0]) <= cfg.nms_iou for k in kept):
                    kept.append(d)
            out.append([self._detection(*d) for d in kept[: cfg.max_plates]])
        return self.refine(images, out)

    def refine(
        self, images: Sequence[np.ndarray], detections: Sequence[Sequence[Detection]]
    ) -> list[list[Detection]]:
        """Second look: detect again around each detection, zoomed so the plate is
        ``refine_width`` px wide, and move its corners ``refine_blend`` of the way to the
        ones found there. A detection with no peak of ``refine_min_score`` within box IoU
        :data:`REFINE_MIN_IOU` of it is unconfirmed: dropped when ``refine_drop``, else kept
        as it was. Score, layout and colour stay the first look's. Without ``refine_width``
        the detections are returned as they are."""
        cfg = self.config.detector
        if cfg.refine_width is None:
            return [list(dets) for dets in detections]
        quads = [[np.asarray(d.corners) for d in dets] for dets in detections]
        found = self._look_again(
            images, quads, cfg.refine_width, cfg.refine_canvas, cfg.refine_blend
        )
        out: list[list[Detection]] = []
        for dets, moved in zip(detections, found):
            kept = []
            for d, q in zip(dets, moved):
                if q is not None:
                    kept.append(dataclasses.replace(d, corners=_corners(q)))
                elif not cfg.refine_drop:
                    kept.append(d)
            out.append(kept)
        return out

    def _look_again(
        self,
        images: Sequence[np.ndarray],
        quads: Sequence[Sequence[np.ndarray]],
        width: int,
        canvas: tuple[int, int],
        blend: float,
    ) -> list[list[np.ndarray | None]]:
        """Detect again around each of ``quads`` of each image, zoomed so the quad is
        ``width`` px wide on a ``canvas``: each quad moved ``blend`` of the way to the one
        found there, in image pixels, or ``None`` where no peak of ``refine_min_score`` lies
        within box IoU :data:`REFINE_MIN_IOU`."""
        cfg = self.config.detector
        jobs = [
            (i, k, targets.zoom_window(q, width, canvas))
            for i, qs in enumerate(quads)
            for k, q in enumerate(qs)
        ]
        out: list[list[np.ndarray | None]] = [[None] * len(qs) for qs in quads]
        for start in range(0, len(jobs), REFINE_BATCH):
            chunk = jobs[start : start + REFINE_BATCH]
            batch = self._batch([targets.cut_window(images[i], w) for i, _, w in chunk])
            with torch.inference_mode():
                raw = self.detector(batch, normalized=True).float().cpu().numpy()
            for (i, k, w), r in zip(chunk, raw):
                peaks = targets.decode_detections(
                    r, STRIDE, cfg.refine_min_score, cfg.nms_iou, cfg.max_plates
                )
                hit = targets.match(
                    [w.to_canvas(quads[i][k])], [q for q, *_ in peaks], REFINE_MIN_IOU
                )
                if hit[0] >= 0:
                    found = targets.order_quad(w.to_image(peaks[hit[0]][0]))
                    out[i][k] = (1 - blend) * quads[i][k] + blend * found
        return out

    def _detect_at(
        self, prepared: Sequence[_Prepared]
    ) -> list[list[tuple[np.ndarray, float, int, int]]]:
        """Detections at one scale: ``(quad in original pixels, score, layout, colour)``."""
        cfg = self.config.detector
        # Batch only images with the same padded shape, so an image's result never depends
        # on the other images it was batched with (served batches mix requests).
        groups: dict[tuple[int, int], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(_padded_shape(p.image), []).append(i)
        out: list[list[tuple[np.ndarray, float, int, int]]] = [[] for _ in prepared]
        for members in groups.values():
            for start in range(0, len(members), DETECT_BATCH):
                idx = members[start : start + DETECT_BATCH]
                batch = self._batch([prepared[i].image for i in idx])
                with torch.inference_mode():
                    raw = self.detector(batch, normalized=True).float().cpu().numpy()
                for i, r in zip(idx, raw):
                    dets = targets.decode_detections(
                        r, STRIDE, cfg.score_threshold, cfg.nms_iou, cfg.max_plates
                    )
                    scale = prepared[i].scale
                    out[i] = [(q / scale, s, lay, col) for q, s, lay, col in dets]
        return out

    def read(self, crops: Sequence[ImageInput]) -> list[Reading]:
        """Read plate crops (each image is taken to hold one plate). The plate is first
        looked for inside the whole crop, as a detection's second look does
        (``detector.crop_refine_*``), and the crop's corners move toward the ones found; then
        it is read from the cuts ``reader.crop_cuts`` of that quad, resampled to the reader's
        input size as detections are (:meth:`rectify`). Readings that do not spell a plate
        are repaired down to ``reader.crop_repair_min_score``, not the scenes' floor."""
        rc, dc = self.config.reader, self.config.detector
        arrays = [to_rgb_array(c) for c in crops]
        quads = [_whole(a) for a in arrays]
        if dc.crop_refine_width is not None:
            found = self._look_again(
                arrays,
                [[q] for q in quads],
                dc.crop_refine_width,
                dc.crop_refine_canvas,
                dc.crop_refine_blend,
            )
            quads = [q if f is None else f for q, (f,) in zip(quads, found)]
        cuts = []
        for a, q in zip(arrays, quads):
            cuts += self._cuts(a, q, rc.crop_cuts)
        probs = self._cut_probs(rc.crop_read_with, cuts, len(rc.crop_cuts))
        return self._decode(probs, rc.crop_repair_min_score)

    def _cuts(
        self, image: np.ndarray, quad: np.ndarray, margins: Sequence[Sequence[float]]
    ) -> list[np.ndarray]:
        """The cuts of plate ``quad`` of ``image`` with each of ``margins``, rectified."""
        return [self.rectify(image, targets.expand_quad(quad, m)) for m in margins]

    def _cut_probs(
        self, readers: Sequence[ReaderName], cuts: Sequence[np.ndarray], per_plate: int
    ) -> np.ndarray:
        """Slot probabilities ``(plates, max_len, classes)``: each plate's averaged over its
        ``per_plate`` consecutive ``cuts`` and over the ``readers`` named."""
        return _mean_of(self._probs_by_reader(set(readers), cuts, per_plate), readers)

    def _probs_by_reader(
        self, readers: Iterable[ReaderName], cuts: Sequence[np.ndarray], per_plate: int
    ) -> dict[ReaderName, np.ndarray]:
        """Each of ``readers``' slot probabilities ``(plates, max_len, classes)``, each
        plate's averaged over its ``per_plate`` consecutive ``cuts``; names of one model
        (no crop reader) share one computation."""
        by_model: dict[int, np.ndarray] = {}
        out = {}
        for r in readers:
            model = self._reader(r)
            if id(model) not in by_model:
                probs = self._slot_probs(model, cuts)
                by_model[id(model)] = probs.reshape(-1, per_plate, *probs.shape[1:]).mean(1)
            out[r] = by_model[id(model)]
        return out

    def _reader(self, name: ReaderName) -> torch.nn.Module:
        return self.crop_reader if name == "crop_reader" else self.reader

    def _decode(self, probs: np.ndarray, floor: float | None) -> list[Reading]:
        """Readings of slot probabilities ``(n, max_len, classes)``, repaired down to
        ``floor`` (:func:`kplate.targets.decode_reading`)."""
        out = []
        for p in probs:
            text, score = targets.decode_reading(p, self.alphabet, floor)
            out.append(Reading(text=text, score=score))
        return out

    def _slot_probs(self, reader: torch.nn.Module, crops: Sequence[np.ndarray]) -> np.ndarray:
        """``reader``'s per-slot character probabilities ``(n, max_len, classes)`` for
        crops already at its input size."""
        rc = self.config.reader
        out = [np.zeros((0, rc.max_len, len(self.alphabet)), np.float32)]
        for start in range(0, len(crops), READ_BATCH):
            x = torch.from_numpy(np.stack(crops[start : start + READ_BATCH])).to(self.device)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode():
                out.append(torch.softmax(reader(x).float(), -1).cpu().numpy())
        return np.concatenate(out)

    def rectify(self, image: np.ndarray, corners: np.ndarray) -> np.ndarray:
        """Warp a plate quadrilateral of ``image`` to the reader's input size.

        Large plates are warped at an integer multiple of the size, then area-averaged down,
        so thin strokes do not alias.
        """
        rc = self.config.reader
        q = np.asarray(corners, np.float32)
        plate_w = float(max(np.linalg.norm(q[1] - q[0]), np.linalg.norm(q[2] - q[3])))
        f = int(np.clip(np.floor(plate_w / rc.width), 1, 4))
        crop = targets.rectify(image, q, (rc.width * f, rc.height * f))
        if f > 1:
            crop = cv2.resize(crop, (rc.width, rc.height), interpolation=cv2.INTER_AREA)
        return crop

    # ------------------------------------------------------------ helpers

    def _accept(self, reading: Reading) -> bool:
        rc = self.config.reader
        if not reading.text or reading.score < rc.min_text_score:
            return False
        return not rc.require_plate_shape or plates.parse(reading.text) is not None

    @staticmethod
    def _prepare(image: np.ndarray, larger: _Prepared, long_side: int) -> _Prepared:
        """``image`` with its longer side shrunk to ``long_side`` (never enlarged), resampled
        from ``larger``, a version of it at least that size."""
        h, w = image.shape[:2]
        scale = long_side / max(h, w)
        if scale >= 1:
            return _Prepared(image, 1.0)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        return _Prepared(cv2.resize(larger.image, size, interpolation=cv2.INTER_AREA), scale)

    def _batch(self, images: list[np.ndarray]) -> torch.Tensor:
        """Pad images of one padded shape (bottom/right, black) to a multiple-of-32 canvas,
        standardised for the detector (``normalized=True``), channels last."""
        H, W = _padded_shape(images[0])
        canvas = np.zeros((len(images), H, W, 3), np.uint8)
        for k, im in enumerate(images):
            canvas[k, : im.shape[0], : im.shape[1]] = im
        x = torch.from_numpy(canvas).to(self.device).permute(0, 3, 1, 2).contiguous()
        x = self.detector.normalize_(x.float().div_(255.0))
        return x.contiguous(memory_format=torch.channels_last)

    @staticmethod
    def _detection(quad: np.ndarray, score: float, layout: int, color: int) -> Detection:
        return Detection(
            corners=_corners(quad), score=score, layout=LAYOUTS[layout], color=COLORS[color]
        )


def _mean_of(probs: Mapping[ReaderName, np.ndarray], readers: Sequence[ReaderName]) -> np.ndarray:
    """The mean of the ``readers``' slot probabilities (the one array when there is one)."""
    if len(set(readers)) == 1:
        return probs[readers[0]]
    return np.mean([probs[r] for r in dict.fromkeys(readers)], axis=0)


def _whole(image: np.ndarray) -> np.ndarray:
    """The corners of the whole image, as a plate quadrilateral."""
    h, w = image.shape[:2]
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)


def _corners(quad: np.ndarray) -> tuple[Point, Point, Point, Point]:
    """A quad as the result's corners: clockwise from top-left, plain floats."""
    a, b, c, d = ((float(x), float(y)) for x, y in targets.order_quad(quad))
    return a, b, c, d
