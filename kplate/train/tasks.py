"""Detector, reader and crop-reader training: losses, validation, and the run entry point."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from kplate import targets
from kplate.config import EngineConfig, load_config
from kplate.models.detector import N_LAYOUT, STRIDE, PlateDetector
from kplate.models.reader import PlateReader
from kplate.models.state import load_weights
from kplate.plates import COLORS, LAYOUTS
from kplate.train.data import CropDataset, SceneDataset, collate_scenes, to_float
from kplate.train.engine import (
    LossFn,
    ResumeSettingsError,
    TrainArgs,
    check_run_folder,
    load_checkpoint,
    resumed_args,
    shuffled_loader,
    train,
)

log = logging.getLogger(__name__)

DEFAULTS: dict[str, dict[str, Any]] = {
    "detector": {
        "steps": 4400,
        "batch_size": 32,
        "lr": 2e-3,
        "train_count": 18000,
        "val_count": 300,
    },
    "reader": {
        "steps": 5000,
        "batch_size": 128,
        "lr": 4e-3,
        "train_count": 200000,
        "val_count": 2000,
    },
    # Fine-tunes a trained reader (``init``) for the crops given to ``Recognizer.read``.
    "crop-reader": {
        "steps": 1500,
        "batch_size": 128,
        "lr": 1e-3,
        "warmup": 100,
        "seed": 1,
        "train_count": 60000,
        "val_count": 2000,
    },
}
#: Validation data uses seeds far from any training seed.
VAL_SEED_OFFSET = 1_000_003
#: Share of the reader's training crops cut where there is no plate (read as empty text);
#: its validation crops are all plates.
READER_NON_PLATE_SHARE = 0.04
#: Share of the crop reader's training and validation crops cut loose; the rest are
#: rectified. It has no non-plate cuts: crops given to ``Recognizer.read`` are said to be plates.
CROP_READER_LOOSE_SHARE = 0.5
#: Share of the crop reader's training and validation plates with 하 허 호 that letter it in
#: the plate typeface (``kplate.synth.fonts.plate_hieut``); ``None``: the generator's
#: ``HIEUT_TYPEFACE_SHARE``, as the detector's and reader's data use. Measured in the model
#: card: 0.5 in gen-1206g and gen-1206h (with the generator at 0.9), where a crop reader
#: trained at 0.9 (gen-1206e) read the fonts' ㅎ worse.
CROP_READER_HIEUT_SHARE: float | None = None


def focal_loss(logits: torch.Tensor, heat: torch.Tensor, n_pos: int) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss on a Gaussian heatmap."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - heat) ** 4 * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / max(1, n_pos)


def detector_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Heatmap focal loss + scale-normalised corner L1 + layout/colour cross-entropy."""
    imgs, t = batch
    x = to_float(imgs, augment=True).contiguous(memory_format=torch.channels_last)
    out = model(x)
    b, c, h, w = out.shape
    n = len(t["index"])
    hm = focal_loss(out[:, 0], t["heat"], n)
    if n:
        flat = out.permute(0, 2, 3, 1).reshape(b * h * w, c)
        rows = flat[t["image"] * h * w + t["index"]]
        off = (
            F.smooth_l1_loss(rows[:, 1:9], t["offsets"], reduction="none", beta=0.1).sum(1)
            / t["scale"]
        ).mean()
        cls = F.cross_entropy(rows[:, 9 : 9 + N_LAYOUT], t["layout"]) + F.cross_entropy(
            rows[:, 9 + N_LAYOUT :], t["color"]
        )
    else:
        off = cls = out.sum() * 0
    loss = hm + 5.0 * off + 0.3 * cls
    return loss, {"heat": hm.item(), "corners": off.item(), "class": cls.item()}


def detector_metrics(model: nn.Module, data: SceneDataset, cfg: EngineConfig) -> dict[str, float]:
    """Precision and recall at box IoU 0.5, corner error and class accuracy on held-out scenes."""
    tp = fp = fn = 0
    corner_err, cls_ok, cls_n = [], 0, 0
    for start in range(0, len(data), 32):
        idx = range(start, min(len(data), start + 32))
        x = to_float(torch.from_numpy(data.images[list(idx)]).permute(0, 3, 1, 2), augment=False)
        out = model(x.contiguous(memory_format=torch.channels_last)).float().numpy()
        for j, i in enumerate(idx):
            dets = targets.decode_detections(
                out[j],
                STRIDE,
                cfg.detector.score_threshold,
                cfg.detector.nms_iou,
                cfg.detector.max_plates,
            )
            gts = list(zip(data.quads[i], data.layouts[i], data.colors[i]))
            hits = targets.match([d[0] for d in dets], [g[0] for g in gts], 0.5)
            for (quad, _score, lay, col), best in zip(dets, hits):
                if best < 0:
                    fp += 1
                    continue
                tp += 1
                gq, gl, gc = gts[best]
                diag = float(np.hypot(*(gq.max(0) - gq.min(0))))
                corner_err.append(float(np.abs(quad - gq).mean()) / max(diag, 1.0))
                cls_ok += int(gl == LAYOUTS[lay]) + int(gc == COLORS[col])
                cls_n += 2
            fn += len(gts) - sum(h >= 0 for h in hits)
    return {
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
        "corner_err": float(np.mean(corner_err)) if corner_err else 1.0,
        "class_acc": cls_ok / max(1, cls_n),
    }


def reader_loss(model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy over every slot (padding included), with light label smoothing."""
    imgs, labels = batch
    x = to_float(imgs, augment=True).contiguous(memory_format=torch.channels_last)
    logits = model(x)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), label_smoothing=0.05
    )
    acc = (logits.argmax(-1) == labels).all(1).float().mean().item()
    return loss, {"batch_exact": acc}


def reader_metrics(model: nn.Module, data: CropDataset, cfg: EngineConfig) -> dict[str, float]:
    """Exact match and character accuracy on held-out crops."""
    exact, chars, total_chars = 0, 0, 0
    for start in range(0, len(data), 256):
        x = to_float(
            torch.from_numpy(data.images[start : start + 256]).permute(0, 3, 1, 2), augment=False
        )
        probs = torch.softmax(model(x.contiguous(memory_format=torch.channels_last)), -1).numpy()
        for j, p in enumerate(probs):
            text, _ = targets.decode_slots(p, cfg.reader.alphabet)
            truth = data.texts[start + j]
            exact += int(text == truth)
            chars += sum(a == b for a, b in zip(text, truth))
            total_chars += max(len(truth), len(text))
    return {"exact": exact / len(data), "char_acc": chars / max(1, total_chars)}


def task_dataset(
    task: str,
    cfg: EngineConfig,
    seed: int,
    count: int,
    workers: int | None = None,
    progress: bool = True,
    training: bool = True,
) -> SceneDataset | CropDataset:
    """``count`` samples of ``task``'s training (or, ``training=False``, validation) data
    rendered from ``seed``."""
    if task == "detector":
        return SceneDataset(seed, count, cfg.detector.train_size, STRIDE, workers, progress)
    if task == "reader":
        return CropDataset(
            seed,
            count,
            cfg.reader,
            workers,
            progress,
            non_plate_share=READER_NON_PLATE_SHARE if training else 0.0,
        )
    if task == "crop-reader":
        return CropDataset(
            seed,
            count,
            cfg.reader,
            workers,
            progress,
            loose_share=CROP_READER_LOOSE_SHARE,
            hieut_share=CROP_READER_HIEUT_SHARE,
        )
    raise ValueError(f"task must be one of {', '.join(DEFAULTS)}, got {task!r}")


def task_model(task: str, cfg: EngineConfig) -> nn.Module:
    """A fresh model of ``task`` (the crop reader is a reader)."""
    return PlateDetector(cfg.detector) if task == "detector" else PlateReader(cfg.reader)


def training_setup(
    task: str,
    cfg: EngineConfig,
    seed: int,
    count: int,
    batch_size: int,
    workers: int | None = None,
    progress: bool = True,
    init: Path | None = None,
) -> tuple[nn.Module, DataLoader, LossFn]:
    """A ``task`` model (channels-last), fresh or with the state_dict at ``init``, a
    shuffling loader over ``count`` training samples rendered from ``seed``, and the task's
    loss.

    Raises:
        WeightsError: ``init`` cannot be loaded into the task's model.
    """
    data = task_dataset(task, cfg, seed, count, workers, progress)
    model = task_model(task, cfg)
    collate, loss_fn = (
        (collate_scenes, detector_loss) if isinstance(data, SceneDataset) else (None, reader_loss)
    )
    loader = shuffled_loader(data, batch_size, seed, collate)
    if init is not None:
        load_weights(model, init)
    return model.to(memory_format=torch.channels_last), loader, loss_fn


def resumed_config(saved: Mapping[str, Any] | None, given: Path | None, ckpt: Path) -> EngineConfig:
    """The engine config of a run resumed from ``ckpt``, whose checkpoint saved ``saved`` (the
    config's fields): that one, or the file ``given`` when it holds the same values.
    A checkpoint written before configs were saved takes ``given`` (default: shipped).

    Raises:
        ResumeSettingsError: ``given`` differs from the checkpoint's config, naming the fields.
        ConfigError: ``given`` cannot be loaded.
    """
    if saved is None:
        log.warning("%s was written without its engine config: resuming with %s", ckpt,
                    given or "the shipped one")  # fmt: skip
        return load_config(given)
    kept = EngineConfig.model_validate(saved)
    if given is None:
        return kept
    differ = [
        f"{part}.{name}"
        for part, fields in load_config(given).model_dump().items()
        for name, value in fields.items()
        if value != saved.get(part, {}).get(name)
    ]
    if differ:
        raise ResumeSettingsError(
            f"{ckpt} was trained with another engine config than {given}: "
            f"{', '.join(differ)} differ. Leave out --config (a resumed run takes the "
            "checkpoint's), or start a new run"
        )
    return kept


def run(
    task: str,
    out: Path,
    overrides: dict[str, Any],
    resume: Path | None = None,
    config: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
    init: Path | None = None,
    force: bool = False,
) -> Path:
    """Train ``task`` (a key of :data:`DEFAULTS`) into ``out``, from ``init`` weights when
    given (``crop-reader`` needs a trained reader's); returns the weights path.

    ``overrides`` are the settings given (None: not given). A fresh run takes the others from
    :data:`DEFAULTS`; a run resumed from ``resume`` takes them from its checkpoint, and refuses
    given ones that differ from the checkpoint's (:func:`~kplate.train.engine.resumed_args`).
    ``out`` must not hold another run's outputs unless ``force`` (they are removed first).

    Raises:
        RunFolderError: ``out`` holds another run's outputs and ``force`` is not given.
        ResumeSettingsError: a setting given, or the engine config ``config``, differs from
            ``resume``'s.
        WeightsError: ``init`` is missing or does not fit the task's model (checked before
            any data is rendered).
    """
    if task not in DEFAULTS:
        raise ValueError(f"task must be one of {', '.join(DEFAULTS)}, got {task!r}")
    if task == "crop-reader" and init is None and resume is None:
        raise ValueError("crop-reader fine-tunes a trained reader: give --init READER_WEIGHTS")
    if resume is not None and not resume.is_file():
        raise FileNotFoundError(f"no checkpoint to resume: {resume}")
    # refused before any data is rendered
    check_run_folder(out, resume, force)
    if resume is None:
        cfg = load_config(config)
        opts = {**DEFAULTS[task], **{k: v for k, v in overrides.items() if v is not None}}
        args = TrainArgs(task=task, out=str(out), **opts)
    else:
        ck = load_checkpoint(resume)
        args = resumed_args(
            ck.get("args", {}), {**overrides, "task": task, "out": str(out)}, resume
        )
        cfg = resumed_config(ck.get("engine_config"), config, resume)
    if init is not None:  # refused before any data is rendered, not minutes into it
        load_weights(task_model(task, cfg), init)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    model, loader, loss_fn = training_setup(
        task, cfg, args.seed, args.train_count, args.batch_size, workers, progress, init
    )
    validate: Callable[[nn.Module], dict[str, float]]
    val_set = task_dataset(
        task, cfg, args.seed + VAL_SEED_OFFSET, args.val_count, workers, progress, training=False
    )
    if isinstance(val_set, SceneDataset):
        validate = partial(detector_metrics, data=val_set, cfg=cfg)
    else:
        validate = partial(reader_metrics, data=val_set, cfg=cfg)
    log.info("%s data ready in %.0f s", task, time.time() - t0)
    train(
        args,
        model,
        loader,
        loss_fn,
        validate,
        resume=resume,
        progress=progress,
        force=force,
        engine_config=cfg.model_dump(),
    )
    log.info("%s trained in %.1f min", task, (time.time() - t0) / 60)
    return out / "model.pt"
