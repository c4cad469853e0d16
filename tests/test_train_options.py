"""The schedule, the paper's warm-up, and the speed options (AMP, channels_last, checkpointing) on the CPU."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from resdsl.train.loop import Processes, RunOptions, Schedule, Trainer, atomic_save
from resdsl.train.recipes import load_recipe, parse_recipe


def test_step_schedule_with_the_papers_constant_warmup():
    schedule = Schedule(0.1, 64000, "step", [32000, 48000], 0.1, warmup=400, warmup_lr=0.01)
    assert [schedule.at(i) for i in (0, 399, 400, 31999, 32000, 48000, 63999)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.001, 0.001]
    )
    schedule.load_state_dict({"warmup_end": 120})  # the training error fell below the threshold early
    assert schedule.at(119) == 0.01 and schedule.at(120) == 0.1


def test_cosine_schedule_after_a_linear_warmup():
    schedule = Schedule(0.1, 1100, "cosine", [], 0.1, warmup=100, warmup_lr=None)
    assert schedule.at(0) == pytest.approx(0.001) and schedule.at(99) == pytest.approx(0.1)
    assert schedule.at(100) == pytest.approx(0.1)
    assert schedule.at(600) == pytest.approx(0.05)
    assert schedule.at(1099) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 999 / 1000)))


def test_atomic_save_replaces_whole_files_only(tmp_path: Path):
    target = tmp_path / "checkpoint.pt"
    atomic_save({"iteration": 1}, target)
    atomic_save({"iteration": 2}, target)
    assert torch.load(target, weights_only=True) == {"iteration": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _train(train_workspace: Path, recipe_text: str, out: str) -> Trainer:
    recipe = parse_recipe(recipe_text, "r.yaml")
    options = RunOptions(spec="tiny.res", data="data", recipe=recipe, out=train_workspace / out)
    trainer = Trainer(options, Processes())
    assert trainer.run() == 0
    return trainer


BASE = """\
dataset: cifar10
batch_size: 32
pad: 1
eval_batch_size: 64
device: cpu
"""


def test_the_papers_warmup_ends_when_the_training_error_falls_below_80(train_workspace: Path):
    recipe = BASE + "iterations: 120\nmilestones: [1000]\nwarmup: 500\nwarmup_lr: 0.01\nwarmup_until_error: 80\n"
    trainer = _train(train_workspace, recipe, "warm")
    ended = [line for line in trainer.log_lines if line.startswith("warm-up ends at iteration")]
    assert ended, trainer.log_lines
    end = int(ended[0].split()[4].rstrip(":"))
    assert end % 50 == 0 and end <= 100
    saved = torch.load(train_workspace / "warm" / "checkpoint.pt", weights_only=True)
    assert saved["scheduler"] == {"warmup_end": end}
    assert trainer.schedule.at(end - 1) == 0.01 and trainer.schedule.at(end) == 0.1


@pytest.mark.parametrize(
    "options",
    [
        "amp: bf16\nchannels_last: true\n",
        "amp: fp16\n",
        "activation_checkpointing: block\nno_bias_decay: true\nlabel_smoothing: 0.1\nnesterov: true\n",
        "normalize: channel_mean_std\nholdout: 0.25\nlr_schedule: cosine\nwarmup: 4\nzero_init_residual: true\n",
    ],
    ids=["bf16-channels-last", "fp16-scaler", "checkpointing-tricks", "holdout-cosine"],
)
def test_speed_and_recipe_options_train(train_workspace: Path, options: str):
    trainer = _train(train_workspace, BASE + "iterations: 8\neval_every: 4\nmilestones: [6]\n" + options, "run")
    rows = (train_workspace / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    last = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert math.isfinite(float(last["train_loss"])) and 0 <= float(last["test_error"]) <= 100
    if "holdout" in options:
        assert last["val_error"] != "" and trainer.best["split"] == "val"
    if "fp16" in options:
        assert trainer.scaler.is_enabled()
        assert torch.load(train_workspace / "run" / "checkpoint.pt", weights_only=True)["scaler"]["scale"] > 0
    if "channels_last" in options:
        conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_recipe_safe_keys_are_few_and_deliberate():
    from resdsl.train.recipes import KEYS

    safe = {name for name, key in KEYS.items() if key.resume_safe}
    # Nothing that changes the arithmetic of a step may change on resume.
    assert not safe & {"lr", "batch_size", "seed", "momentum", "weight_decay", "amp", "dataset", "holdout", "pad"}
    assert {"iterations", "milestones", "eval_every", "checkpoint_every"} <= safe
    assert load_recipe("cifar10-paper")["iterations"] == 64000
