"""``kplate train --resume`` continues the run it resumes, with its settings, and a run folder
holds one run (``--force`` to replace it)."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tools import STOPPED_AT_FIRST_CHECKPOINT
from torch.utils.data import DataLoader, Dataset

from kplate.config import DEFAULT_CONFIG, load_config
from kplate.errors import WeightsError
from kplate.models.detector import PlateDetector
from kplate.train import engine, tasks
from kplate.train.engine import (
    Batches,
    ResumeSettingsError,
    RunFolderError,
    SkippingBatchSampler,
    TrainArgs,
    check_run_folder,
    clear_run_folder,
    cycle,
    resumed_args,
    shuffled_loader,
)
from kplate.train.tasks import run

SMALL = {"train_count": 16, "val_count": 8, "batch_size": 4, "threads": 1}
SMALL_FLAGS = ["-q", "--train-count", "16", "--val-count", "8", "--batch-size", "4",
               "--workers", "1", "--threads", "1"]  # fmt: skip


@pytest.fixture(autouse=True)
def _keep_threads() -> Iterator[None]:
    """run() sets torch's thread count for the process: give the other tests theirs back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _stopped_at_first_checkpoint(
    monkeypatch: pytest.MonkeyPatch,
    task: str,
    out: Path,
    overrides: dict[str, Any],
    config: Path | None = None,
) -> None:
    """``run`` stopped, as Ctrl-C would stop it, once its first checkpoint is written."""
    plot = engine.plot_curves

    def stop(history: list[dict[str, float]], path: Path) -> None:
        plot(history, path)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(engine, "plot_curves", stop)
        with pytest.raises(KeyboardInterrupt):
            run(task, out, overrides, progress=False, workers=1, config=config)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kplate(*args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
    head = ["-c", script] if script else ["-m", "kplate.cli"]
    return subprocess.run([sys.executable, *head, *args],
                          check=False, capture_output=True, text=True, timeout=600)  # fmt: skip


def _ckpt(path: Path) -> dict[str, Any]:
    ck: dict[str, Any] = torch.load(path, weights_only=False)
    return ck


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "steps", "val_every"),
    [
        ("reader", 24, 10),  # stopped within a pass over the data (4 batches each)
        ("reader", 24, 12),  # stopped at the end of a pass
        ("detector", 5, 3),  # 2 batches a pass
    ],
)
def test_a_resumed_run_is_the_run_never_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, task: str, steps: int, val_every: int
) -> None:
    count = 16 if task == "reader" else 8
    overrides = {**SMALL, "train_count": count, "steps": steps, "val_every": val_every,
                 "ema": (0.9,), "warmup": 2}  # fmt: skip
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    run(task, whole, overrides, progress=False, workers=1)
    _stopped_at_first_checkpoint(monkeypatch, task, resumed, overrides)
    assert _ckpt(resumed / "last.ckpt")["step"] == val_every
    # the same settings again (accepted: they are the checkpoint's)
    run(task, resumed, overrides, resume=resumed / "last.ckpt", progress=False, workers=1)
    a, b = _ckpt(whole / "last.ckpt"), _ckpt(resumed / "last.ckpt")
    assert b["step"] == steps
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(v, b["model"][k]) for k, v in a["model"].items())
    assert all(torch.equal(v, b["ema"]["0.9"][k]) for k, v in a["ema"]["0.9"].items())
    for k, state in a["optimizer"]["state"].items():
        assert all(torch.equal(v, b["optimizer"]["state"][k][n]) for n, v in state.items())
    # the logged curve has no dip where the run was resumed: the running loss carried on
    assert a["running"] == b["running"] and a["history"] == b["history"]
    if steps >= 20:
        assert [h["step"] for h in b["history"] if "loss" in h] == [20]
    for name in ("model.pt", "model-ema0.9.pt", "history.json"):
        assert _sha(whole / name) == _sha(resumed / name), name


class _Counted(Dataset[int]):
    def __init__(self, n: int) -> None:
        self.n, self.loaded = n, 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        self.loaded += 1
        return i


def _loader(data: _Counted) -> DataLoader[int]:
    return DataLoader(data, 3, shuffle=True, drop_last=True,
                      generator=torch.Generator().manual_seed(7))  # fmt: skip


@pytest.mark.parametrize(
    ("make_loader", "loads_used"),
    [
        (lambda data: shuffled_loader(data, 3, seed=7), False),  # what training uses
        (_loader, True),  # any other loader: the used batches are loaded and dropped
    ],
)
def test_batches_draw_as_cycle_does_and_resume_where_they_were(
    make_loader: Callable[[_Counted], DataLoader[int]], loads_used: bool
) -> None:
    # shuffled_loader's batches are those of DataLoader(shuffle=True), drawn alike
    plain, batches = cycle(_loader(_Counted(10))), Batches(make_loader(_Counted(10)))
    got = [next(batches).tolist() for _ in range(7)]  # 3 batches a pass: two passes and one
    assert got == [next(plain).tolist() for _ in range(7)]
    where = batches.position()
    assert where["used"] == 1
    after = [next(batches).tolist() for _ in range(5)]
    data = _Counted(10)
    again = Batches(make_loader(data), where)  # a new loader, its generator as seeded
    assert [next(again).tolist() for _ in range(5)] == after
    assert data.loaded == (6 if loads_used else 5) * 3


def test_a_skipping_batch_sampler_skips_its_next_pass_only() -> None:
    sampler = SkippingBatchSampler(range(7), 2, drop_last=False)
    sampler.skip = 2
    assert list(sampler) == [[4, 5], [6]]
    assert list(sampler) == [[0, 1], [2, 3], [4, 5], [6]]
    sampler.skip = 9  # more than the pass holds
    assert list(sampler) == []
    assert len(sampler) == 4


def test_a_resume_refuses_another_seed_and_takes_another_val_every(tmp_path: Path) -> None:
    saved = asdict(TrainArgs(task="reader", out="run", steps=10, batch_size=4, lr=1e-3, seed=0))
    with pytest.raises(ResumeSettingsError, match="--seed 1"):
        resumed_args(saved, {"seed": 1}, tmp_path / "last.ckpt")
    assert resumed_args(saved, {"val_every": 7}, tmp_path / "last.ckpt").val_every == 7


def test_a_run_folder_holding_another_run_is_refused_and_cleared_only_of_that_run(
    tmp_path: Path,
) -> None:
    out, other = tmp_path / "run", tmp_path / "other.ckpt"
    out.mkdir()
    (out / "last.ckpt").write_bytes(b"a")
    (out / "model.pt").write_bytes(b"m")
    other.write_bytes(b"b")
    with pytest.raises(RunFolderError):
        check_run_folder(out, None, force=False)  # a fresh run
    with pytest.raises(RunFolderError, match="another run"):
        check_run_folder(out, other, force=False)  # resuming another run's checkpoint here
    check_run_folder(out, out / "last.ckpt", force=False)  # its own checkpoint: fine
    check_run_folder(out, None, force=True)
    clear_run_folder(out, out / "last.ckpt")  # resuming into its own folder: nothing removed
    assert (out / "last.ckpt").exists() and (out / "model.pt").exists()
    clear_run_folder(out, other)
    assert not (out / "last.ckpt").exists() and not (out / "model.pt").exists()


@pytest.mark.slow
def test_a_resume_takes_the_checkpoints_settings_and_refuses_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    _stopped_at_first_checkpoint(
        monkeypatch, "reader", out, {**SMALL, "steps": 4, "val_every": 2, "seed": 3, "ema": (0.5,)}
    )
    before = _sha(out / "last.ckpt")
    resume = [*SMALL_FLAGS, "--out", str(out), "--resume", str(out / "last.ckpt")]
    r = _kplate("train", "reader", *resume, "--steps", "6", "--seed", "5", "--lr", "0.01")
    assert r.returncode == 2
    for named in ("--steps 6 (the checkpoint's: 4)", "--seed 5 (the checkpoint's: 3)",
                  "--lr 0.01 (the checkpoint's: 0.004)"):  # fmt: skip
        assert named in r.stderr
    r = _kplate("train", "reader", *resume, "--ema", "0.9")
    assert r.returncode == 2 and "--ema 0.9 (drops the checkpoint's average 0.5)" in r.stderr
    r = _kplate("train", "detector", *resume)
    assert r.returncode == 2 and "task detector (the checkpoint's: reader)" in r.stderr
    assert _sha(out / "last.ckpt") == before  # refused before writing anything
    with pytest.raises(ResumeSettingsError, match="--batch-size 8"):
        run("reader", out, {"batch_size": 8}, resume=out / "last.ckpt", progress=False)
    # no --ema, --seed or --steps: the checkpoint's; --val-every and --threads may change
    run("reader", out, {"val_every": 1, "threads": 1}, resume=out / "last.ckpt", progress=False,
        workers=1)  # fmt: skip
    ck = _ckpt(out / "last.ckpt")
    assert ck["step"] == 4 and [h["step"] for h in ck["history"] if "val" in h] == [2, 3, 4]
    assert ck["args"]["seed"] == 3 and ck["args"]["steps"] == 4 and ck["args"]["val_every"] == 1
    assert list(ck["ema"]) == ["0.5"] and (out / "model-ema0.5.pt").is_file()
    assert "ema0.5_exact" in ck["history"][-1]


@pytest.mark.slow
def test_a_resume_keeps_the_engine_config_it_was_trained_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields = load_config(None).model_dump(mode="json")
    fields["reader"]["min_text_score"] = 0.3  # not a shape: the shipped config's model is the same
    custom = tmp_path / "custom.yaml"
    custom.write_text(yaml.safe_dump(fields), encoding="utf-8")
    out = tmp_path / "run"
    _stopped_at_first_checkpoint(
        monkeypatch, "reader", out, {**SMALL, "steps": 4, "val_every": 2}, config=custom
    )
    assert _ckpt(out / "last.ckpt")["engine_config"]["reader"]["min_text_score"] == 0.3
    before = _sha(out / "last.ckpt")
    with pytest.raises(ResumeSettingsError, match=r"reader\.min_text_score differ"):
        run("reader", out, {}, resume=out / "last.ckpt", config=DEFAULT_CONFIG, progress=False)
    assert _sha(out / "last.ckpt") == before  # refused before writing anything
    run("reader", out, {}, resume=out / "last.ckpt", config=custom, progress=False, workers=1)
    assert _ckpt(out / "last.ckpt")["step"] == 4
    # without --config, the checkpoint's (not the shipped one)
    again = tmp_path / "again"
    _stopped_at_first_checkpoint(
        monkeypatch, "reader", again, {**SMALL, "steps": 4, "val_every": 2}, config=custom
    )
    run("reader", again, {}, resume=again / "last.ckpt", progress=False, workers=1)
    ck = _ckpt(again / "last.ckpt")
    assert ck["step"] == 4 and ck["engine_config"]["reader"]["min_text_score"] == 0.3


@pytest.mark.slow
def test_a_checkpoint_without_random_states_still_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    _stopped_at_first_checkpoint(monkeypatch, "reader", out, {**SMALL, "steps": 4, "val_every": 2})
    ck = _ckpt(out / "last.ckpt")
    for key in ("rng", "data", "running", "engine_config"):  # as written before they were saved
        del ck[key]
    del ck["args"]["optimizer"], ck["args"]["ema"]
    torch.save(ck, out / "last.ckpt")
    with caplog.at_level(logging.WARNING):
        run("reader", out, {}, resume=out / "last.ckpt", progress=False, workers=1)
    assert "written without its random states" in caplog.text
    assert "written without its engine config: resuming with the shipped one" in caplog.text
    assert _ckpt(out / "last.ckpt")["step"] == 4


@pytest.mark.slow
def test_a_new_run_refuses_a_folder_holding_a_run_unless_forced(tmp_path: Path) -> None:
    out, other = tmp_path / "run", tmp_path / "other"
    fresh = ["train", "reader", *SMALL_FLAGS, "--steps", "2", "--val-every", "2"]
    assert _kplate(*fresh, "--out", str(out), "--ema", "0.9").returncode == 0
    before = _sha(out / "last.ckpt")
    r = _kplate(*fresh, "--out", str(out), "--seed", "5")
    assert r.returncode == 2
    assert f"pass --resume {out / 'last.ckpt'} to continue it, or --force" in r.stderr
    assert _sha(out / "last.ckpt") == before
    # resuming another run's checkpoint into it is refused too
    assert _kplate(*fresh, "--out", str(other)).returncode == 0
    r = _kplate(*fresh, "--out", str(out), "--resume", str(other / "last.ckpt"))
    assert r.returncode == 2 and "holds another run than" in r.stderr
    assert _sha(out / "last.ckpt") == before
    # --force: the earlier run's outputs go first, none is left beside the new run's
    r = _kplate(*fresh, "--out", str(out), "--seed", "5", "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.png", "history.json", "last.ckpt", "model.pt"
    ]  # fmt: skip
    ck = _ckpt(out / "last.ckpt")
    assert ck["args"]["seed"] == 5 and ck["ema"] == {}


@pytest.mark.slow
def test_the_cli_stopped_at_a_checkpoint_resumes_to_the_same_weights(tmp_path: Path) -> None:
    flags = ["train", "reader", *SMALL_FLAGS, "--steps", "4", "--val-every", "2"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert _kplate(*flags, "--out", str(whole)).returncode == 0
    r = _kplate(*flags, "--out", str(resumed), script=STOPPED_AT_FIRST_CHECKPOINT)
    assert r.returncode == 130 and _ckpt(resumed / "last.ckpt")["step"] == 2
    r = _kplate(*flags, "--out", str(resumed), "--resume", str(resumed / "last.ckpt"))
    assert r.returncode == 0, r.stderr
    assert _sha(whole / "model.pt") == _sha(resumed / "model.pt")


@pytest.mark.parametrize("init", ["missing.pt", "detector.pt"])
def test_init_weights_are_checked_before_any_data_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, init: str
) -> None:
    torch.save(PlateDetector().state_dict(), tmp_path / "detector.pt")  # not a reader's

    def render(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("data rendered before --init was checked")

    monkeypatch.setattr(tasks, "task_dataset", render)
    with pytest.raises(WeightsError, match=init):
        run("crop-reader", tmp_path / "run", dict(SMALL), init=tmp_path / init, progress=False)
