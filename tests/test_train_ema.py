"""Moving averages of the weights kept during training (``kplate train --ema``)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tools import STOPPED_AT_FIRST_CHECKPOINT
from torch import nn

from kplate.config import EngineConfig
from kplate.models.reader import PlateReader
from kplate.models.state import load_weights
from kplate.train.engine import WeightAverage


def test_the_average_follows_the_warmed_up_decay_and_copies_integer_buffers() -> None:
    torch.manual_seed(0)
    lin, bn = nn.Linear(3, 2), nn.BatchNorm1d(2)
    model = nn.Sequential(lin, bn)
    start = lin.weight.detach().clone()
    avg = WeightAverage(model, 0.9)
    with torch.no_grad():
        lin.weight.add_(1.0)
        assert bn.num_batches_tracked is not None
        bn.num_batches_tracked.add_(7)
    avg.update(model.state_dict(), step=0)  # warm-up: decay min(0.9, 1 / 10) = 0.1
    torch.testing.assert_close(avg.state["0.weight"], start + 0.9 * (lin.weight.detach() - start))
    assert int(avg.state["1.num_batches_tracked"]) == 7
    with torch.no_grad():
        lin.weight.add_(1.0)
    before = avg.state["0.weight"].clone()
    avg.update(model.state_dict(), step=1000)  # past the warm-up: the decay itself
    torch.testing.assert_close(avg.state["0.weight"], before + 0.1 * (lin.weight.detach() - before))
    averaged = avg.model_like(model)
    assert torch.equal(averaged.state_dict()["0.weight"], avg.state["0.weight"])
    assert not torch.equal(lin.weight, averaged.state_dict()["0.weight"])  # the model untouched
    assert avg.filename == "model-ema0.9.pt"


def _train(out: Path, *extra: str, stop: bool = False) -> None:
    head = ["-c", STOPPED_AT_FIRST_CHECKPOINT] if stop else ["-m", "kplate.cli"]
    r = subprocess.run([sys.executable, *head, "train", "reader", "--out", str(out), "-q",
                        "--train-count", "16", "--val-count", "8", "--batch-size", "4",
                        "--val-every", "2", "--workers", "1", "--threads", "1", *extra],
                       check=False, timeout=600)  # fmt: skip
    assert r.returncode == (130 if stop else 0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_averages_leave_the_trained_weights_alone_and_are_checkpointed(tmp_path: Path) -> None:
    plain, averaged, resumed = tmp_path / "plain", tmp_path / "ema", tmp_path / "resumed"
    _train(plain, "--steps", "4")
    _train(averaged, "--steps", "4", "--ema", "0.5", "0.9")
    assert _sha(plain / "model.pt") == _sha(averaged / "model.pt")
    assert not (plain / "model-ema0.5.pt").exists()
    model = PlateReader(EngineConfig().reader)
    load_weights(model, averaged / "model-ema0.9.pt")  # a state_dict the model code loads
    last = [h for h in json.loads((averaged / "history.json").read_text()) if "val" in h]
    assert "ema0.5_exact" in last[-1] and "ema0.5_exact" not in last[0]  # validated at the end
    # the checkpoint carries the averages; one it lacks starts at the step resumed from
    _train(resumed, "--steps", "4", "--ema", "0.5", stop=True)  # stopped at step 2
    ck = torch.load(resumed / "last.ckpt", weights_only=False)
    saved = torch.load(resumed / "model-ema0.5.pt", weights_only=True)
    assert all(torch.equal(ck["ema"]["0.5"][k], v) for k, v in saved.items())
    r = subprocess.run([sys.executable, "-m", "kplate.cli", "train", "reader", "--out", str(resumed),
                        "-q", "--train-count", "16", "--val-count", "8", "--batch-size", "4",
                        "--val-every", "2", "--workers", "1", "--threads", "1", "--steps", "4",
                        "--ema", "0.5", "0.9", "--resume", str(resumed / "last.ckpt")],
                       check=True, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert "has no average of decay 0.9: it starts at step 2" in r.stderr
    ck = torch.load(resumed / "last.ckpt", weights_only=False)
    assert ck["step"] == 4 and sorted(ck["ema"]) == ["0.5", "0.9"]
    assert not torch.equal(ck["ema"]["0.5"]["classify.2.weight"], saved["classify.2.weight"])


@pytest.mark.parametrize("decays", [["1.5"], ["0.9", "0.9"]])
def test_bad_decays_are_refused(tmp_path: Path, decays: list[str]) -> None:
    r = subprocess.run([sys.executable, "-m", "kplate.cli", "train", "reader", "--out", str(tmp_path),
                        "--ema", *decays], check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 2 and "--ema decays must be distinct and in (0, 1)" in r.stderr
