"""kplate.train.optim.ExactAdamW: torch's AdamW update, with a correctly rounded square root."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tools import STOPPED_AT_FIRST_CHECKPOINT
from torch import nn

from kplate.train.optim import ExactAdamW


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, first: int, last: int) -> None:
    for i in range(first, last):
        x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(i))
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _saved(opt: torch.optim.Optimizer) -> dict[str, object]:
    """The optimiser's state as a checkpoint holds it (a copy, not the live tensors)."""
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def _max_diff(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters()))


def test_it_makes_the_updates_of_torch_adamw() -> None:
    exact, ref = _net(), _net()
    _steps(exact, ExactAdamW(exact.parameters(), lr=1e-2, weight_decay=1e-2), 0, 30)
    _steps(ref, torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=1e-2), 0, 30)
    moved = _max_diff(exact, _net())
    assert moved > 0.05  # 30 steps of lr 1e-2 moved the weights
    # only the last bit of some square roots differs
    assert _max_diff(exact, ref) < 1e-4 * moved


def test_the_square_root_is_correctly_rounded() -> None:
    # one step from zero state, no decay: p -= lr * g / (|g| + eps) up to the roundings of
    # v = (1 - b2) g^2, its square root and the division by sqrt(1 - b2). Exact square roots
    # are those of float64, rounded once to float32.
    g = torch.rand(50_000, generator=torch.Generator().manual_seed(3)) + 0.5
    p = nn.Parameter(torch.zeros_like(g))
    p.grad = g.clone()
    opt = ExactAdamW([p], lr=1.0, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    opt.step()
    v = opt.state[p]["exp_avg_sq"]
    want_root = v.to(torch.float64).sqrt().to(torch.float32)
    m = opt.state[p]["exp_avg"]
    denom = (want_root / math.sqrt(1.0 - 0.999)) + 1e-8
    want = torch.zeros_like(g).addcdiv_(m, denom, value=-1.0 / (1.0 - 0.9))
    assert torch.equal(p.detach(), want)


def test_bias_corrections_are_running_products() -> None:
    model = _net()
    opt = ExactAdamW(model.parameters(), betas=(0.5, 0.25))
    _steps(model, opt, 0, 3)
    state = opt.state[next(model.parameters())]
    assert state["step"] == 3
    assert state["beta1_power"] == 0.125 and state["beta2_power"] == 0.25**3


def test_it_resumes_from_torch_adamw_state() -> None:
    """Checkpoints written with torch.optim.AdamW carry on, with the same bias corrections."""
    ref = _net()
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    _steps(ref, ref_opt, 0, 7)
    exact = _net()
    exact.load_state_dict(ref.state_dict())
    opt = ExactAdamW(exact.parameters(), lr=1e-2)
    opt.load_state_dict(_saved(ref_opt))
    state = opt.state[next(exact.parameters())]
    assert state["step"] == 7 and state["beta1_power"] == pytest.approx(0.9**7, rel=1e-15)
    _steps(ref, ref_opt, 7, 12)
    _steps(exact, opt, 7, 12)
    assert _max_diff(exact, ref) < 1e-5


def test_its_own_state_round_trips() -> None:
    a = _net()
    opt_a = ExactAdamW(a.parameters(), lr=1e-2)
    _steps(a, opt_a, 0, 4)
    b = _net()
    b.load_state_dict(a.state_dict())
    opt_b = ExactAdamW(b.parameters(), lr=1e-2)
    opt_b.load_state_dict(_saved(opt_a))
    _steps(a, opt_a, 4, 8)
    _steps(b, opt_b, 4, 8)
    assert _max_diff(a, b) == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": 0.0}, {"betas": (0.9, 1.0)}, {"eps": 0.0}, {"weight_decay": -1e-4}],
)
def test_bad_hyperparameters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ExactAdamW(_net().parameters(), **kwargs)  # type: ignore[arg-type]


def test_kplate_train_offers_each_optimiser_and_refuses_others() -> None:
    from kplate.cli import build_parser
    from kplate.train.engine import TrainArgs
    from kplate.train.optim import OPTIMIZERS

    parser = build_parser()
    for name in OPTIMIZERS:
        args = parser.parse_args(["train", "reader", "--out", "x", "--optimizer", name])
        assert args.optimizer == name
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "reader", "--out", "x", "--optimizer", "sgd"])
    with pytest.raises(ValueError, match="--optimizer"):
        TrainArgs(task="reader", out="x", steps=1, batch_size=1, lr=1e-3, optimizer="sgd")


@pytest.mark.slow
def test_kplate_train_with_the_exact_optimiser_checkpoints_and_resumes_its_state(
    tmp_path: Path,
) -> None:
    def train(out: Path, *extra: str, stop: bool = False) -> None:
        head = ["-c", STOPPED_AT_FIRST_CHECKPOINT] if stop else ["-m", "kplate.cli"]
        r = subprocess.run([sys.executable, *head, "train", "reader", "--out", str(out),
                            "-q", "--train-count", "16", "--val-count", "8", "--batch-size", "4",
                            "--val-every", "2", "--workers", "1", "--threads", "1",
                            "--optimizer", "exact", *extra], check=False, timeout=600)  # fmt: skip
        if r.returncode != (130 if stop else 0):
            raise subprocess.CalledProcessError(r.returncode, r.args)

    run = tmp_path / "run"
    train(run, "--steps", "4", stop=True)  # stopped, as Ctrl-C would stop it, at step 2
    ck = torch.load(run / "last.ckpt", weights_only=False)
    assert ck["args"]["optimizer"] == "exact"
    assert ck["optimizer"]["state"][0]["step"] == 2 and "beta1_power" in ck["optimizer"]["state"][0]
    with pytest.raises(subprocess.CalledProcessError):  # another optimiser (the last wins): refused
        train(run, "--steps", "4", "--resume", str(run / "last.ckpt"), "--optimizer", "adamw")
    train(run, "--steps", "4", "--resume", str(run / "last.ckpt"))
    ck = torch.load(run / "last.ckpt", weights_only=False)
    assert ck["step"] == 4 and ck["optimizer"]["state"][0]["step"] == 4
    assert ck["optimizer"]["state"][0]["beta1_power"] == 0.9 * 0.9 * 0.9 * 0.9  # products
