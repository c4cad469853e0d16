"""Recipes: the shipped ones say what the paper says; every mistake is a positioned error with a hint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from resdsl.train.recipes import KEYS, RecipeError, load_recipe, parse_recipe, shipped_recipes, to_iterations

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_recipes_are_found_by_name_and_valid():
    assert {"cifar10-paper", "cifar100-paper", "imagenet-paper", "cifar10-tricks"} <= set(shipped_recipes())
    for name in shipped_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe["description"], f"{name} says where it comes from"


def test_cifar10_paper_is_section_4_2():
    recipe = load_recipe("cifar10-paper")
    expected = {
        "dataset": "cifar10",
        "batch_size": 128,
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "lr_schedule": "step",
        "milestones": [32000, 48000],
        "gamma": 0.1,
        "iterations": 64000,
        "holdout": 0.1,  # the 45k/5k split
        "pad": 4,
        "flip": True,
        "normalize": "pixel_mean",
        "warmup": 0,
        # The paper's arithmetic on the CPU; bf16 autocast on a GPU (the speed keys' 'auto', issue 20).
        "amp": "auto",
    }
    assert {key: recipe[key] for key in expected} == expected
    import torch

    from resdsl.train.step import resolve_speed

    cpu = resolve_speed(recipe, torch.device("cpu"), 1)
    assert (cpu.amp, cpu.channels_last, cpu.cuda_graph) == ("none", False, False)
    assert load_recipe("cifar100-paper")["dataset"] == "cifar100"


def test_imagenet_paper_is_section_3_4():
    recipe = load_recipe("imagenet-paper")
    assert (recipe["batch_size"], recipe["lr"], recipe["momentum"], recipe["weight_decay"]) == (256, 0.1, 0.9, 1e-4)
    assert (recipe["scale"], recipe["crop_size"], recipe["color"]) == ([256, 480], 224, "pca")
    steps = 1_281_167 // 256  # ImageNet's training set
    assert recipe.steps("iterations", steps) == 90 * steps
    assert [to_iterations(m, steps) for m in recipe["milestones"]] == [30 * steps, 60 * steps]


def test_paper_warmup_for_resnet110_is_three_sets():
    recipe = load_recipe("cifar10-paper", ["warmup=2000", "warmup_lr=0.01", "warmup_until_error=80"])
    assert (recipe["warmup"], recipe["warmup_lr"], recipe["warmup_until_error"]) == (2000, 0.01, 80.0)


def test_set_reads_yaml_values():
    recipe = load_recipe(
        "cifar10-paper", ["milestones=[200, 250]", "amp=bf16", "warmup_lr=null", "iterations=3 epochs"]
    )
    assert recipe["milestones"] == [200, 250]
    assert recipe["amp"] == "bf16"
    assert recipe["warmup_lr"] is None
    assert recipe.steps("iterations", 351) == 1053


GOLDEN = [
    (
        "momentun: 0.9\n",
        "r.yaml:1:1: unknown recipe key 'momentun'\n    momentun: 0.9\n    ^~~~~~~~\n  hint: did you mean 'momentum'?",
    ),
    (
        "lr: 0.1\nbatch_size: 12.5\n",
        "r.yaml:2:13: 'batch_size' must be a whole number, not 12.5\n    batch_size: 12.5\n                ^~~~\n"
        "  hint: 'batch_size': the global mini-batch: split evenly over the processes of a distributed run.",
    ),
    (
        "amp: fp8\n",
        "r.yaml:1:6: 'amp' must be one of auto, none, bf16, fp16, not 'fp8'\n    amp: fp8\n         ^~~\n"
        "  hint: 'amp': automatic mixed precision: bf16 autocast, or fp16 autocast with a gradient scaler; `auto`: "
        "bf16 on a GPU, none (fp32) on the CPU.",
    ),
    (
        "milestones: [32000, 48k]\n",
        "r.yaml:1:13: 'milestones' must be a list of durations, such as [32000, 48000] or "
        "['30 epochs', '60 epochs'], not [32000, 48k]\n    milestones: [32000, 48k]\n                ^~~~~~~~~~~~\n"
        "  hint: 'milestones': where the `step` schedule multiplies the learning rate by `gamma`.",
    ),
    (
        "lr: 0.1\nlr: 0.2\n",
        "r.yaml:2:1: 'lr' is set twice\n    lr: 0.2\n    ^~\n  hint: the first is at line 1",
    ),
    (
        "lr: [0.1\n",
        "r.yaml:2:1: not valid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "- lr\n",
        "r.yaml:1:1: a recipe is a mapping of keys to values\n    - lr\n    ^\n  hint: write one 'key: value' per line",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"), GOLDEN, ids=["unknown", "type", "choice", "list", "twice", "syntax", "not-mapping"]
)
def test_golden_recipe_errors(text, expected):
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text, "r.yaml")
    assert str(caught.value) == expected


def test_set_errors_name_the_set():
    with pytest.raises(RecipeError) as caught:
        load_recipe("cifar10-paper", ["weight_decy=1e-4"])
    assert str(caught.value) == (
        "--set:1:1: unknown recipe key 'weight_decy'\n    weight_decy=1e-4\n    ^~~~~~~~~~~\n"
        "  hint: did you mean 'weight_decay'?"
    )
    with pytest.raises(RecipeError) as caught:
        load_recipe("cifar10-paper", ["seed=-1"])
    assert str(caught.value).startswith("--set:1:6: 'seed' must be a whole number of at least 0, not -1\n    seed=-1\n")
    with pytest.raises(RecipeError, match=r"--set expects KEY=VALUE, got 'lr'"):
        load_recipe("cifar10-paper", ["lr"])


def test_consistency_rules():
    with pytest.raises(RecipeError, match=r"--set:1:12: 'milestones' must be in increasing order"):
        load_recipe("cifar10-paper", ["milestones=[48000, 32000]"])
    with pytest.raises(RecipeError, match=r"'warmup_until_error' ends a warm-up, but 'warmup' is 0"):
        load_recipe("cifar10-paper", ["warmup_until_error=80"])


def test_unknown_recipe_name_suggests_the_closest():
    with pytest.raises(RecipeError) as caught:
        load_recipe("cifar10-papr")
    assert "no shipped recipe of that name" in str(caught.value)
    assert caught.value.hint == "did you mean 'cifar10-paper'?"


def test_cli_reports_recipe_errors_without_a_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("iterations: 100\nbach_size: 64\n")
    result = subprocess.run(
        [sys.executable, "-m", "resdsl", "train", "cifar20", "--data", str(tmp_path), "--recipe", str(bad)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{bad}:2:1: unknown recipe key 'bach_size'")
    assert "hint: did you mean 'batch_size'?" in result.stderr


def test_every_key_is_documented_with_type_default_and_resume_safety():
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)` \|.*$", text, re.M)}
    assert set(KEYS) <= set(rows), f"undocumented keys: {sorted(set(KEYS) - set(rows))}"
    for name, key in KEYS.items():
        cells = [cell.strip() for cell in rows[name].strip("|").split("|")]
        assert cells[3] == ("yes" if key.resume_safe else "no"), name


def test_registering_the_commands_imports_neither_torch_nor_matplotlib():
    code = (
        "import sys, resdsl.cli; resdsl.cli.build_parser(); "
        "from resdsl.train.recipes import load_recipe; load_recipe('cifar10-paper'); "
        "print(sorted(m for m in ('torch', 'matplotlib', 'tqdm') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}
    )
    assert result.stdout.strip() == "[]", result.stderr


def _documented_range(text: str) -> tuple[int, int] | None:
    """The bounds docs/training.md gives a whole-number key ("whole number, 1 to 1024")."""
    match = re.fullmatch(r"whole number, (\S+) to (\S+)", text)
    if match is None:
        return None
    as_int = {"2**63 - 1": 2**63 - 1, "10^7": 10**7}
    low, high = match.groups()
    return int(low), as_int.get(high) or int(high.replace(",", ""))


@pytest.mark.parametrize("name", [name for name, key in KEYS.items() if _documented_range(key.type)])
def test_every_whole_number_key_takes_exactly_its_documented_range(name):
    """A generated mutant (crop_size's lower bound 1 made 0) survived: the bounds are pinned at both ends."""
    low, high = _documented_range(KEYS[name].type)
    for value in (low, high):
        assert parse_recipe(f"{name}: {value}\n", "r.yaml")[name] == value
    for value in (low - 1, high + 1):
        with pytest.raises(RecipeError, match=f"'{name}'"):
            parse_recipe(f"{name}: {value}\n", "r.yaml")
