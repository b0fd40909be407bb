"""The training loop shared by the detector and the reader: steps, checkpoints, curves."""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from kplate.train.optim import OPTIMIZERS

log = logging.getLogger(__name__)

#: ``loss_fn(model, batch) -> (loss, named parts to log)``
LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, dict[str, float]]]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: training stops instead of writing garbage."""


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
) -> None:
    """One dict: model, optimizer, scheduler, args, step, the metric history and the
    weight averages (by decay)."""
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
) -> list[dict[str, float]]:
    """Run ``args.steps`` optimiser steps; validate every ``args.val_every``; checkpoint each time.

    Writes ``last.ckpt``, ``model.pt`` (the state_dict of the last step), ``history.json`` and
    ``curves.png`` into ``args.out``.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    opt = OPTIMIZERS[args.optimizer](model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, args.steps, args.warmup))
    step, history, saved = 0, [], {}
    if resume is not None:
        ck = torch.load(resume, map_location="cpu", weights_only=False)
        saved_with = ck.get("args", {}).get("optimizer", "adamw")
        if saved_with != args.optimizer:
            raise ValueError(
                f"{resume} was trained with --optimizer {saved_with}; "
                f"resume it with the same, not {args.optimizer}"
            )
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        step, history, saved = int(ck["step"]), list(ck["history"]), ck.get("ema", {})
        log.info("resumed %s at step %d", resume, step)
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
    batches = cycle(loader)
    bar = tqdm(total=args.steps, initial=step, desc=f"train {args.task}", disable=not progress)
    t0, running = time.time(), 0.0
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
            save_checkpoint(out / "last.ckpt", model, opt, sched, args, step, history, averages)
            torch.save(model.state_dict(), out / "model.pt")
            for a in averages:
                torch.save(a.state, out / a.filename)
            (out / "history.json").write_text(json.dumps(history, indent=1))
            plot_curves(history, out / "curves.png")
    bar.close()
    return history
