"""Training data: synthetic samples rendered once in worker processes, held in memory."""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from kplate import targets
from kplate.config import ReaderConfig
from kplate.synth.dataset import default_workers
from kplate.synth.scene import render_crop, render_non_plate, render_scene

_M = TypeVar("_M")


@dataclass(frozen=True)
class _SceneTask:
    seed: int
    size: int

    def __call__(
        self, index: int
    ) -> tuple[np.ndarray, tuple[list[np.ndarray], list[str], list[str]]]:
        s = render_scene(self.seed, index, self.size, self.size)
        return s.image, (
            [np.asarray(p.corners, np.float32) for p in s.plates],
            [p.layout for p in s.plates],
            [p.color for p in s.plates],
        )


def in_share(index: int, share: float) -> bool:
    """Whether sample ``index`` is one of a ``share`` of a set's samples (non-plate cuts,
    loose crops), spread evenly: any run of ``n`` indices holds ``n * share`` of them, give or
    take one."""
    return int((index + 1) * share) > int(index * share)


@dataclass(frozen=True)
class _CropTask:
    seed: int
    size: tuple[int, int]
    non_plate_share: float = 0.0
    loose_share: float = 0.0
    hieut_share: float | None = None  # None: the generator's default

    def __call__(self, index: int) -> tuple[np.ndarray, str]:
        if in_share(index, self.non_plate_share):
            cut = render_non_plate(self.seed, index, self.size, hieut_share=self.hieut_share)
            return cut.image, ""
        s = render_crop(
            self.seed,
            index,
            self.size,
            loose=in_share(index, self.loose_share),
            hieut_share=self.hieut_share,
        )
        return s.image, s.plates[0].text.text


def _render(
    task: Callable[[int], tuple[np.ndarray, _M]],
    count: int,
    shape: tuple[int, int],
    desc: str,
    workers: int | None,
    progress: bool,
) -> tuple[np.ndarray, list[_M]]:
    """Run ``task(i)`` for ``i < count`` in ``workers`` processes; return the ``(count, H, W, 3)``
    images and the per-sample metadata, in order.

    Images go straight into one preallocated array: a list of them and its stacked copy would
    hold the whole set twice at the peak.
    """
    workers = workers or default_workers()
    images = np.empty((count, *shape, 3), np.uint8)
    meta: list[_M] = []
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ProcessPoolExecutor(workers, mp_context=ctx) if workers > 1 else nullcontext() as pool:
        rows = pool.map(task, range(count), chunksize=32) if pool else map(task, range(count))
        for i, (image, m) in enumerate(tqdm(rows, total=count, desc=desc, disable=not progress)):
            images[i] = image
            meta.append(m)
    return images, meta


class SceneDataset(Dataset):
    """Scenes with detector targets, rendered up front."""

    def __init__(
        self,
        seed: int,
        count: int,
        size: int,
        stride: int,
        workers: int | None = None,
        progress: bool = True,
    ) -> None:
        self.images, meta = _render(
            _SceneTask(seed, size),
            count,
            (size, size),
            f"render scenes (seed {seed})",
            workers,
            progress,
        )
        self.quads = [m[0] for m in meta]
        self.layouts = [m[1] for m in meta]
        self.colors = [m[2] for m in meta]
        self.size = size
        self.stride = stride

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out = self.size // self.stride
        t = targets.encode_detections(
            self.quads[i], self.layouts[i], self.colors[i], (out, out), self.stride
        )
        img = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        return img, {k: torch.from_numpy(v) for k, v in t.items()}


def collate_scenes(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Stack images and heatmaps; concatenate per-plate targets with their image index."""
    imgs = torch.stack([b[0] for b in batch])
    t: dict[str, torch.Tensor] = {"heat": torch.stack([b[1]["heat"] for b in batch])}
    for key in ("index", "offsets", "scale", "layout", "color"):
        t[key] = torch.cat([b[1][key] for b in batch])
    t["image"] = torch.cat(
        [torch.full((len(b[1]["index"]),), n, dtype=torch.int64) for n, b in enumerate(batch)]
    )
    return imgs, t


class CropDataset(Dataset):
    """Rectified plate crops at the reader's input size, with slot targets.

    ``non_plate_share`` of the samples are cuts where there is no plate, labelled as empty
    text (every slot padding), so that the reader learns to read a false detection as nothing.
    ``loose_share`` of the samples are, unless non-plate cuts, loose crops (upright boxes
    around tilted plates, :func:`~kplate.synth.scene.render_crop`), as people crop plates.
    ``hieut_share`` of the plates with 하 허 호 letter it in the plate typeface
    (:data:`~kplate.synth.scene.HIEUT_TYPEFACE_SHARE`, the default when ``None``).
    """

    def __init__(
        self,
        seed: int,
        count: int,
        cfg: ReaderConfig,
        workers: int | None = None,
        progress: bool = True,
        augment: bool = True,
        non_plate_share: float = 0.0,
        loose_share: float = 0.0,
        hieut_share: float | None = None,
    ) -> None:
        for name, share in (("non_plate_share", non_plate_share), ("loose_share", loose_share)):
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {share}")
        if hieut_share is not None and not 0.0 <= hieut_share <= 1.0:
            raise ValueError(f"hieut_share must be in [0, 1], got {hieut_share}")
        self.images, self.texts = _render(
            _CropTask(seed, (cfg.width, cfg.height), non_plate_share, loose_share, hieut_share),
            count,
            (cfg.height, cfg.width),
            f"render crops (seed {seed})",
            workers,
            progress,
        )
        self.labels = np.stack(
            [targets.encode_text(t, cfg.alphabet, cfg.max_len) for t in self.texts]
        )
        self.augment = augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = torch.from_numpy(self.images[i]).permute(2, 0, 1)
        return img, torch.from_numpy(self.labels[i])


def to_float(
    imgs: torch.Tensor, augment: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``uint8`` ``(B, 3, H, W)`` to float in [0, 1]; with ``augment``, random gray, contrast
    and brightness per image (cheap, on the batch)."""
    x = imgs.float().div_(255.0)
    if not augment:
        return x
    b = x.shape[0]
    gray = torch.rand(b, generator=generator) < 0.2
    if gray.any():
        g = x[gray].mean(1, keepdim=True)
        x[gray] = g.expand(-1, 3, -1, -1)
    c = torch.empty(b, 1, 1, 1).uniform_(0.7, 1.3, generator=generator)
    m = x.mean((1, 2, 3), keepdim=True)
    x = (x - m) * c + m + torch.empty(b, 1, 1, 1).uniform_(-0.12, 0.12, generator=generator)
    invert = torch.rand(b, generator=generator) < 0.05
    x[invert] = 1 - x[invert]
    return x.clamp_(0, 1)
