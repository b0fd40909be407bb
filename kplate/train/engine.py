"""The training loop shared by the detector and the reader: steps, checkpoints, curves."""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler
from tqdm import tqdm

from kplate.train.optim import OPTIMIZERS

log = logging.getLogger(__name__)

#: ``loss_fn(model, batch) -> (loss, named parts to log)``
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops instead of writing garbage."""


class RunFolderError(ValueError):
    """The run folder holds another run's outputs, which this run would overwrite or leave
    beside its own (``--force`` removes them first)."""


class ResumeSettingsError(ValueError):
    """A resumed run was asked for settings other than those its checkpoint was trained with."""


@dataclass
class TrainArgs:
    """Options of one training run (stored in every checkpoint)."""

    task: str
    out: str
    steps: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    warmup: int = 200
    val_every: int = 500
    seed: int = 0
    train_count: int = 10000
    val_count: int = 500
    threads: int = 0
    #: Decays of exponential moving averages of the weights kept beside the trained ones
    #: (each written as ``model-ema<decay>.pt``); none by default.
    ema: tuple[float, ...] = ()
    #: "adamw" (torch.optim.AdamW) or "exact" (kplate.train.optim.ExactAdamW)
    optimizer: str = "adamw"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "train_count", "val_count", "val_every"):
            if getattr(self, name) <= 0:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)}"
                )
        if not (0 < self.lr < 1):
            raise ValueError(f"--lr must be in (0, 1), got {self.lr}")
        self.ema = tuple(float(d) for d in self.ema)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"--optimizer must be one of {tuple(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if any(not (0 < d < 1) for d in self.ema) or len(set(self.ema)) != len(self.ema):
            raise ValueError(f"--ema decays must be distinct and in (0, 1), got {self.ema}")


#: Settings a resumed run may change: where it writes, how often it validates and how many
#: threads compute; not what it computes (the thread count does change the last bits of some
#: sums: a resumed run is an uninterrupted one bit for bit with the same ``threads``).
#: ``ema`` may name more decays than the checkpoint's (each new average starts where the run
#: resumes), not fewer. Any other setting is the checkpoint's.
RESUME_MAY_CHANGE = frozenset({"out", "val_every", "threads"})


def _shown(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value}"


def _flag(name: str) -> str:
    return name if name == "task" else f"--{name.replace('_', '-')}"


def resumed_args(saved: Mapping[str, Any], given: Mapping[str, Any], ckpt: Path) -> TrainArgs:
    """The settings of a run resumed from ``ckpt``, whose checkpoint saved ``saved`` (its
    ``args``): those, with the ``given`` ones (None: not given) that may change on a resume
    (:data:`RESUME_MAY_CHANGE`; ``ema`` adding decays).

    Raises:
        ResumeSettingsError: naming each given setting that differs from the checkpoint's.
    """
    names = {f.name: f for f in fields(TrainArgs)}
    merged: dict[str, Any] = {}
    for name, f in names.items():  # checkpoints written before a setting existed: its default
        if name in saved:
            merged[name] = saved[name]
        elif f.default is not MISSING:
            merged[name] = f.default
        elif f.default_factory is not MISSING:
            merged[name] = f.default_factory()
    merged["ema"] = tuple(float(d) for d in merged.get("ema", ()))
    refused = []
    for name, value in given.items():
        if value is None or name not in names:
            continue
        if name == "ema":
            value = tuple(float(d) for d in value)  # noqa: PLW2901
            dropped = _shown(tuple(d for d in merged["ema"] if d not in value))
            if dropped:
                refused.append(f"--ema {_shown(value)} (drops the checkpoint's average {dropped})")
        elif name not in RESUME_MAY_CHANGE and value != merged.get(name):
            refused.append(
                f"{_flag(name)} {_shown(value)} (the checkpoint's: {_shown(merged.get(name))})"
            )
        merged[name] = value
    if refused:
        raise ResumeSettingsError(
            f"{ckpt} was trained with other settings: {'; '.join(refused)}. A resumed run "
            "takes its settings from its checkpoint: leave these out (only "
            f"{', '.join(_flag(n) for n in sorted(RESUME_MAY_CHANGE))} and --workers may "
            "change, and --ema may add decays), or start a new run"
        )
    return TrainArgs(**merged)


#: What a run writes into its folder (and ``model-ema<DECAY>.pt``, one per average).
RUN_OUTPUTS = ("last.ckpt", "last.tmp", "model.pt", "history.json", "curves.png")


def run_outputs(out: Path) -> list[Path]:
    """The outputs of a run found in the folder ``out``."""
    if not out.is_dir():
        return []
    found = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    return found + sorted(out.glob("model-ema*.pt"))


def other_run(out: Path, resume: Path | None) -> list[Path]:
    """The outputs in ``out`` of another run than the one resumed from ``resume`` (None: a
    fresh run, to which any run's are another's)."""
    found = run_outputs(out)
    last = out / "last.ckpt"
    ours = resume is not None and last.exists() and resume.exists() and last.samefile(resume)
    return [] if ours else found


def check_run_folder(out: Path, resume: Path | None, force: bool) -> None:
    """Refuse to write into a folder holding another run's outputs, unless ``force``: a fresh
    run (``resume`` None) needs a folder without them; a resumed run, one without them or
    whose ``last.ckpt`` is the checkpoint it resumes.

    Raises:
        RunFolderError: ``out`` holds another run's outputs.
    """
    found = other_run(out, resume)
    if force or not found:
        return
    names = ", ".join(p.name for p in found)
    last = out / "last.ckpt"
    if resume is None:
        hint = f"pass --resume {last} to continue it, or " if last.exists() else "pass "
        raise RunFolderError(
            f"{out} already holds a run ({names}): {hint}--force to start a new run there "
            "(the earlier run's outputs are removed first), or choose another --out"
        )
    raise RunFolderError(
        f"{out} holds another run than {resume} ({names}): resume into the folder of that "
        "checkpoint, or pass --force to replace these (they are removed first)"
    )


def clear_run_folder(out: Path, resume: Path | None) -> None:
    """Remove another run's outputs from ``out`` (:func:`other_run`), so that none is left
    beside this run's."""
    for path in other_run(out, resume):
        log.warning("removing the earlier run's %s", path)
        path.unlink()


class WeightAverage:
    """An exponential moving average of a model's weights and float buffers (BatchNorm's
    running statistics too), updated after each optimiser step; integer buffers are copied.

    The decay is warmed up, ``min(decay, (1 + step) / (10 + step))``, so the average does not
    linger on the first steps' weights. It reads the model and draws no random numbers: the
    trained weights are the same bytes with or without it.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())

    @property
    def filename(self) -> str:
        return f"model-ema{self.decay:g}.pt"

    @torch.no_grad()
    def update(self, weights: Mapping[str, torch.Tensor], step: int) -> None:
        """Fold in ``weights`` (the model's state_dict) after optimiser step ``step`` (0-based)."""
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in weights.items():
            avg = self.state[k]
            if avg.is_floating_point():
                avg.lerp_(v, 1.0 - d)
            else:
                avg.copy_(v)

    def model_like(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` holding the averaged weights."""
        out = copy.deepcopy(model)
        out.load_state_dict(self.state)
        return out


def cycle(loader: DataLoader) -> Iterator[Any]:
    """Iterate a loader forever (a new shuffle each pass)."""
    while True:
        yield from loader


class SkippingBatchSampler(BatchSampler):
    """A :class:`~torch.utils.data.BatchSampler` whose next pass can leave out its first
    :attr:`skip` batches: their indices are drawn, so the pass is shuffled as it would have
    been, but never handed to the loader, so none of their samples is loaded."""

    skip = 0

    def __iter__(self) -> Iterator[list[int]]:
        batches = super().__iter__()
        skip, self.skip = self.skip, 0
        for _ in itertools.islice(batches, skip):
            pass
        yield from batches


def shuffled_loader(
    data: Dataset[Any], batch_size: int, seed: int, collate_fn: Callable[..., Any] | None = None
) -> DataLoader[Any]:
    """A loader of ``data`` shuffled anew each pass from a generator seeded with ``seed``, in
    batches of ``batch_size`` (the last partial one dropped): the batches of ``DataLoader(data,
    batch_size, shuffle=True, drop_last=True, generator=...)``, drawn alike, with a
    :class:`SkippingBatchSampler` so that :class:`Batches` can resume a pass without loading
    what it used."""
    generator = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(data, generator=generator)  # type: ignore[arg-type]  # has a len
    return DataLoader(
        data,
        batch_sampler=SkippingBatchSampler(sampler, batch_size, drop_last=True),
        collate_fn=collate_fn,
        generator=generator,
    )


class Batches(Iterator[Any]):
    """A loader's batches, pass after pass with a new shuffle each (as :func:`cycle`), that
    knows where it is: the state of the loader's generator when the pass began and how many of
    the pass's batches were used. Given that :meth:`position`, a resumed run carries on with the
    batch after the last one used: the pass is shuffled again from the same state and the used
    batches are skipped; with a :func:`shuffled_loader` their samples are not loaded (with
    another loader they are loaded and dropped).

    It draws from the loader's generator exactly as :func:`cycle` does.
    """

    def __init__(self, loader: DataLoader, position: Mapping[str, Any] | None = None) -> None:
        self.loader = loader
        self._it: Iterator[Any] | None = None
        self._start: torch.Tensor | None = None
        self._used = 0
        if position is not None and position.get("used"):
            if loader.generator is None or position.get("generator") is None:
                log.warning("the loader has no generator to resume from: a new pass begins")
            else:
                self._start, self._used = position["generator"], int(position["used"])

    def position(self) -> dict[str, Any]:
        """Where the batches are, for a checkpoint."""
        return {"generator": self._start, "used": self._used}

    def __next__(self) -> Any:
        while True:
            fresh = self._it is None and self._start is None
            if self._it is None:
                self._it = self._begin()
            try:
                batch = next(self._it)
            except StopIteration:
                if fresh:
                    raise ValueError(
                        "the loader gives no batch (fewer samples than --batch-size?)"
                    ) from None
                self._it, self._start, self._used = None, None, 0
                continue
            self._used += 1
            return batch

    def _begin(self) -> Iterator[Any]:
        gen = self.loader.generator
        if self._start is None:  # a new pass
            self._start = None if gen is None else gen.get_state()
            return iter(self.loader)
        assert gen is not None
        gen.set_state(self._start)  # the pass a checkpoint was written in
        if isinstance(self.loader.batch_sampler, SkippingBatchSampler):
            self.loader.batch_sampler.skip = self._used
            return iter(self.loader)
        it = iter(self.loader)
        for _ in itertools.islice(it, self._used):  # loaded and dropped
            pass
        return it


def random_states() -> dict[str, Any]:
    """The global random generators' states (torch's draws the augmentation and dropout)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }


def set_random_states(states: Mapping[str, Any]) -> None:
    """Restore what :func:`random_states` returned."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A ``last.ckpt`` as :func:`save_checkpoint` wrote it."""
    ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    return ck


def lr_factor(step: int, steps: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 2% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def save_checkpoint(
    path: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    args: TrainArgs,
    step: int,
    history: list[dict[str, float]],
    averages: Sequence[WeightAverage] = (),
    where: Mapping[str, Any] | None = None,
    engine_config: Mapping[str, Any] | None = None,
) -> None:
    """One dict: model, optimizer, scheduler, args, step, the metric history, the weight
    averages (by decay), ``where`` the run is, to resume it as if never stopped: the random
    generators' states (``rng``), the position in the shuffled data (``data``) and the running
    loss (``running``), and the model's ``engine_config`` (when given), which a resume keeps."""
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "args": asdict(args),
            "step": step,
            "history": history,
            "ema": {str(a.decay): a.state for a in averages},
            **(where or {}),
            **({} if engine_config is None else {"engine_config": dict(engine_config)}),
        },
        tmp,
    )
    tmp.replace(path)


def plot_curves(history: list[dict[str, float]], out: Path) -> None:
    """Training loss and validation metrics against the step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    tr = [h for h in history if "loss" in h]
    a.plot([h["step"] for h in tr], [h["loss"] for h in tr], lw=0.8)
    a.set(xlabel="step", ylabel="train loss", yscale="log", title="training loss")
    va = [h for h in history if "val" in h]
    keys = sorted({k for h in va for k in h if k not in ("step", "val")})
    for k in keys:
        b.plot([h["step"] for h in va if k in h], [h[k] for h in va if k in h], marker="o", label=k)
    b.set(xlabel="step", title="validation (held-out synthetic)")
    if keys:
        b.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def optimiser_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loss_fn: LossFn,
    batch: Any,
    step: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One update: loss, backward, gradients clipped to norm 5, optimiser step (no schedule)."""
    loss, parts = loss_fn(model, batch)
    if not torch.isfinite(loss):
        raise NonFiniteLossError(f"loss is {loss.item()} at step {step}: {parts}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    opt.step()
    return loss, parts


def train(
    args: TrainArgs,
    model: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    validate: Callable[[nn.Module], dict[str, float]],
    resume: Path | None = None,
    progress: bool = True,
    force: bool = False,
    engine_config: Mapping[str, Any] | None = None,
) -> list[dict[str, float]]:
    """Run ``args.steps`` optimiser steps; validate every ``args.val_every``; checkpoint each time.

    Writes ``last.ckpt``, ``model.pt`` (the state_dict of the last step), ``history.json`` and
    ``curves.png`` into ``args.out``. A run resumed from a checkpoint of this code carries on
    as if never stopped (the same weights, bit for bit, with the same threads).
    ``engine_config``, the model's config as a dict, is kept in the checkpoint.

    Raises:
        RunFolderError: ``args.out`` holds another run's outputs and ``force`` is not given
            (with it, they are removed first).
        ResumeSettingsError: ``args`` differ from the checkpoint's where they may not.
    """
    out = Path(args.out)
    check_run_folder(out, resume, force)
    out.mkdir(parents=True, exist_ok=True)
    opt = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.warmup))
    step, history, saved, ck = 0, [], {}, {}
    if resume is not None:
        ck = load_checkpoint(resume)
        resumed_args(ck.get("args", {}), asdict(args), resume)  # refuses other settings
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, history, saved = int(ck["step"]), list(ck["history"]), ck.get("ema", {})
        log.info("resumed %s at step %d", resume, step)
        if "rng" not in ck:
            log.warning(
                "%s was written without its random states and data position: the run goes on "
                "with other batches and augmentations than an uninterrupted one",
                resume,
            )
    if force:
        clear_run_folder(out, resume)
    # each average starts from the weights trained so far, or carries on where it was saved
    averages = [WeightAverage(model, d) for d in args.ema]
    for a in averages:
        if str(a.decay) in saved:
            a.state = saved[str(a.decay)]
        elif resume is not None:
            log.warning(
                "%s has no average of decay %g: it starts at step %d", resume, a.decay, step
            )
    model.train()
    batches = Batches(loader, ck.get("data"))
    if "rng" in ck:
        set_random_states(ck["rng"])
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.task}", disable=not progress)
    t0, running = time.time(), float(ck.get("running", 0.0))
    while step < args.steps:
        loss, parts = optimiser_step(model, opt, loss_fn, next(batches), step)
        if averages:
            weights = model.state_dict()
            for a in averages:
                a.update(weights, step)
        sched.step()
        step += 1
        running = 0.9 * running + 0.1 * loss.item() if step > 1 else loss.item()
        if step % 20 == 0:
            history.append({"step": step, "loss": running, **parts})
            bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
        bar.update(1)
        if step % args.val_every == 0 or step == args.steps:
            model.eval()
            with torch.inference_mode():
                metrics = validate(model)
            model.train()
            if step == args.steps:  # the averages are validated once, at the end
                for a in averages:
                    with torch.inference_mode():
                        got = validate(a.model_like(model).eval())
                    metrics.update({f"ema{a.decay:g}_{k}": v for k, v in got.items()})
            history.append({"step": step, "val": 1.0, **metrics})
            log.info("step %d (%.0f s): %s", step, time.time() - t0, json.dumps(metrics))
            where = {"rng": random_states(), "data": batches.position(), "running": running}
            save_checkpoint(
                out / "last.ckpt", model, opt, sched, args, step, history, averages, where,
                engine_config,
            )  # fmt: skip
            torch.save(model.state_dict(), out / "model.pt")
            for a in averages:
                torch.save(a.state, out / a.filename)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            plot_curves(history, out / "curves.png")
    bar.close()
    return history
