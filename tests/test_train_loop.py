"""`resdsl train`, `eval` and `plot` end to end on the CPU, as processes, on data the tests write.

One tiny residual network on an 8x8, 4-class CIFAR-format set: a reference run is
shared by the tests of learning, eval, plot and resume. Every process runs with one
thread, which keeps the CPU's arithmetic the same from run to run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cifar_fixtures import TINY_SPEC, write_learnable

ROOT = Path(__file__).resolve().parent.parent
ITERATIONS = 300
RECIPE = f"""\
description: a small schedule for the tests
dataset: cifar10
iterations: {ITERATIONS}
batch_size: 32
lr: 0.1
milestones: [200]
weight_decay: 0.0005
pad: 1
eval_every: 25
checkpoint_every: 100
eval_batch_size: 128
device: cpu
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_"))}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def resdsl(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "resdsl", *args], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=600
    )
    if check and result.returncode != 0:
        raise AssertionError(f"resdsl {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture
def cli(monkeypatch, capsys):
    """`resdsl ARGS...` in this process (no interpreter start-up), on one thread; (status, stdout, stderr)."""
    from resdsl.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(*args: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    yield run
    torch.set_num_threads(threads)


def metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("train")
    write_learnable(root / "data")
    (root / "tiny.res").write_text(TINY_SPEC, encoding="utf-8")
    (root / "small.yaml").write_text(RECIPE, encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def reference(work: Path) -> Path:
    """An uninterrupted run."""
    resdsl("train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "reference", cwd=work)
    return work / "reference"


def test_error_falls_far_below_chance(reference: Path):
    rows = metrics(reference)
    assert [int(r["iteration"]) for r in rows] == list(range(25, ITERATIONS + 1, 25))
    first, last = rows[0], rows[-1]
    # Four classes: chance is 75% error.
    assert float(last["test_error"]) < 15.0, rows
    assert float(last["train_error"]) < 15.0
    assert float(last["train_loss"]) < float(first["train_loss"])
    assert float(rows[-1]["lr"]) == pytest.approx(0.01) and float(rows[0]["lr"]) == pytest.approx(0.1)
    for row in rows:
        assert float(row["images_per_s"]) > 0 and float(row["seconds"]) > 0
        assert row["val_error"] == ""  # no holdout in this recipe


def test_run_folder_holds_what_the_issue_lists(reference: Path):
    import yaml

    assert {p.name for p in reference.iterdir()} == {
        "recipe.yaml",
        "metrics.csv",
        "checkpoint.pt",
        "best.pt",
        "curves.png",
        ".lock",  # held (flock) while a run uses the folder; left in place, as removing it would race
    }
    record = yaml.safe_load((reference / "recipe.yaml").read_text())
    assert record["recipe"]["iterations"] == ITERATIONS and record["seed"] == 0
    assert record["spec"]["name"] == "tiny" and "network tiny" in record["spec"]["text"]
    assert len(record["spec"]["text_sha256"]) == 64
    assert record["versions"]["torch"] == str(torch.__version__)
    checkpoint = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == ITERATIONS
    assert set(checkpoint["model"]) == set(_tiny().state_dict())
    best = torch.load(reference / "best.pt", weights_only=True)
    rows = metrics(reference)
    best_row = min(rows, key=lambda r: float(r["test_error"]))
    assert best["iteration"] == int(best_row["iteration"])


def _tiny():
    import resdsl

    return resdsl.compile_text(TINY_SPEC) and resdsl.load(resdsl.compile_text(TINY_SPEC))


def test_resume_after_sigint_is_bit_identical(work: Path, reference: Path):
    command = [sys.executable, "-m", "resdsl", "train", "tiny.res", "--data", "data", "--recipe", "small.yaml"]
    process = subprocess.Popen(
        [*command, "--out", "interrupted"],
        cwd=work,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:  # wait until training is under way
        if line.startswith("iter 50/"):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err
    assert "stopped by SIGINT at iteration" in out
    stopped_at = torch.load(work / "interrupted" / "checkpoint.pt", weights_only=True)["iteration"]
    assert 50 <= stopped_at < ITERATIONS
    assert not list((work / "interrupted").glob(".*tmp")), "no temporary file left behind"

    resumed = resdsl(*command[3:], "--out", "interrupted", "--resume", cwd=work)
    assert f"resuming at iteration {stopped_at}" in resumed.stdout
    final = torch.load(work / "interrupted" / "checkpoint.pt", weights_only=True)
    expected = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert final["iteration"] == ITERATIONS
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    for index, state in expected["optimizer"]["state"].items():
        assert torch.equal(final["optimizer"]["state"][index]["momentum_buffer"], state["momentum_buffer"])
    # The curves agree too: every row's errors and losses, before and after the interruption.
    keys = ("iteration", "lr", "train_loss", "train_error", "test_loss", "test_error")
    assert [[r[k] for k in keys] for r in metrics(work / "interrupted")] == [
        [r[k] for k in keys] for r in metrics(reference)
    ]


def test_resume_refuses_changes_that_are_not_safe(work: Path, reference: Path, cli):
    run = work / "refuse"
    shutil.copytree(reference, run)
    args = ("train", "tiny.res", "--data", "data", "--out", "refuse", "--resume")
    status, _, err = cli(*args, "--set", "lr=0.2", "--set", "batch_size=64", cwd=work)
    assert status == 1
    assert err.startswith(
        f"{Path('refuse') / 'checkpoint.pt'}: the recipe changed since this run began: "
        "batch_size 32 -> 64; lr 0.1 -> 0.2"
    )
    assert "only these keys may change on resume: iterations, milestones," in err

    (work / "wider.res").write_text(TINY_SPEC.replace("basic(16, stride=2)", "basic(24, stride=2)"))
    status, _, err = cli("train", "wider.res", *args[2:], cwd=work)
    assert status == 1
    assert "the network changed since this run began: tiny (5,004 params" in err

    # iterations is safe to change: the run goes on from where it ended.
    status, out, _ = cli(*args, "--set", "iterations=350", cwd=work)
    assert status == 0 and "resuming at iteration 300" in out
    rows = metrics(run)
    assert [int(r["iteration"]) for r in rows][-3:] == [300, 325, 350]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["iteration"] == 350

    status, out, _ = cli(*args, "--set", "iterations=350", cwd=work)
    assert status == 0 and "is complete at iteration 350" in out


def test_a_new_run_will_not_overwrite_an_old_one(work: Path, reference: Path, cli):
    status, _, err = cli(
        "train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "reference", cwd=work
    )
    assert status == 2
    assert "already holds a run: continue it with --resume" in err


def test_eval_reports_the_best_checkpoints_error(work: Path, reference: Path, cli):
    status, out, _ = cli("eval", "tiny.res", "--weights", "reference/best.pt", "--data", "data", cwd=work)
    best_row = min(metrics(reference), key=lambda r: float(r["test_error"]))
    assert status == 0
    assert out.strip() == f"tiny on cifar10 test (256 images): top-1 error {float(best_row['test_error']):.2f}%"
    _, out, _ = cli("eval", "tiny.res", "--weights", "reference/checkpoint.pt", "--data", "data", "--json", cwd=work)
    as_json = json.loads(out)
    last = metrics(reference)[-1]
    assert as_json["top1_error"] == pytest.approx(float(last["test_error"]), abs=1e-3)
    assert as_json["images"] == 256 and "top5_error" not in as_json  # four classes: no top-5

    # A plain state dict, with the recipe saying the normalisation: the same model, the same error.
    state = torch.load(reference / "checkpoint.pt", weights_only=True)["model"]
    torch.save(state, work / "plain.pt")
    args = ("eval", "tiny.res", "--weights", "plain.pt", "--data", "data", "--recipe", "small.yaml", "--json")
    _, out, _ = cli(*args, cwd=work)
    assert json.loads(out)["top1_error"] == as_json["top1_error"]


def test_eval_reports_top5_with_more_than_ten_classes(tmp_path: Path, cli):
    from cifar_fixtures import learnable_images, write_cifar

    import resdsl as library

    names = [f"fine{i}" for i in range(12)]
    train, test = learnable_images(60, 12, 8, 1), learnable_images(36, 12, 8, 2)
    data = write_cifar(tmp_path, "cifar100", train, test, names, archive=True)
    spec = tmp_path / "tiny12.res"
    spec.write_text(TINY_SPEC.replace("classes=4", "classes=12"))
    torch.manual_seed(0)
    torch.save(library.load(str(spec)).state_dict(), tmp_path / "w.pt")
    args = ("eval", str(spec), "--weights", "w.pt", "--data", str(data), "--recipe", "cifar100-paper")
    status, out, _ = cli(*args, "--json", cwd=tmp_path)
    summary = json.loads(out)
    assert status == 0 and summary["images"] == 36 and summary["dataset"] == "cifar100"
    assert 0 <= summary["top5_error"] <= summary["top1_error"] <= 100
    _, out, _ = cli(*args, cwd=tmp_path)
    assert out.strip() == (
        f"tiny on cifar100 test (36 images): top-1 error {summary['top1_error']:.2f}%, "
        f"top-5 error {summary['top5_error']:.2f}%"
    )


def test_plot_draws_runs_overlaid(work: Path, reference: Path, tmp_path: Path, cli):
    import matplotlib.image

    from resdsl.train.plot import plot_runs

    other = tmp_path / "plain"
    other.mkdir()
    with open(other / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["iteration", "train_error", "test_error"])
        writer.writerows([[1000, 50, 60], [2000, 30, 45], [3000, 20, 40]])
    output = tmp_path / "fig6.png"
    result = resdsl(
        "plot",
        str(reference),
        str(other),
        "-o",
        str(output),
        "--label",
        "ResNet-tiny",
        "--label",
        "plain-tiny",
        cwd=work,
    )
    assert result.stdout.strip() == f"wrote {output} (2 runs)"
    pixels = matplotlib.image.imread(str(output))
    assert pixels.shape == (450, 600, 4)  # 6 x 4.5 inches at 100 dpi
    rgb = (pixels[..., :3] * 255).round()
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's C0 and C1: one per run
        assert (abs(rgb - torch.tensor(colour).numpy()).sum(-1) < 30).sum() > 200, colour

    fig = plot_runs([reference, other], tmp_path / "again.svg", labels=["a", "b"], ylim=(0, 80))
    (axes,) = fig.axes
    assert axes.get_xlabel() == "iter. (1e3)" and axes.get_ylabel() == "error (%)"  # the longest run: 3,000
    assert axes.get_ylim() == (0, 80)
    lines = axes.get_lines()
    assert [(line.get_linestyle(), line.get_color()) for line in lines] == [
        ("--", "C0"),
        ("-", "C0"),
        ("--", "C1"),
        ("-", "C1"),
    ]
    assert lines[1].get_linewidth() > lines[0].get_linewidth()  # test bold, training dashed
    assert list(lines[3].get_xdata()) == [1, 2, 3] and list(lines[3].get_ydata()) == [60, 45, 40]
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["a", "b"]
    assert (tmp_path / "again.svg").read_text().startswith("<?xml")
    # The run folder's own curves, labelled as the paper labels networks.
    from resdsl.train.plot import paper_label

    assert [paper_label(n) for n in ("cifar_plain20", "cifar56", "resnet34", "plain18", "tiny")] == [
        "plain-20", "ResNet-56", "ResNet-34", "plain-18", "tiny"
    ]  # fmt: skip
    assert matplotlib.image.imread(str(reference / "curves.png")).shape == (450, 600, 4)


def test_plot_without_metrics_is_an_error(tmp_path: Path, cli):
    status, _, err = cli("plot", str(tmp_path), "-o", str(tmp_path / "x.png"), cwd=tmp_path)
    assert status == 1
    assert err.strip().startswith(f"{tmp_path}: no metrics.csv here")


def test_ddp_two_processes_under_torchrun(work: Path):
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "resdsl", "train", "tiny.res", "--data", "data", "--recipe", "small.yaml", "--out", "ddp",
        "--set", "iterations=150", "--set", "eval_every=50",
    ]  # fmt: skip
    result = subprocess.run(command, cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("training tiny") == 1, "only rank 0 prints"
    assert "x 2 processes" in result.stdout
    run = work / "ddp"
    assert {p.name for p in run.iterdir()} == {
        "recipe.yaml",
        "metrics.csv",
        "checkpoint.pt",
        "best.pt",
        "curves.png",
        ".lock",
    }
    rows = metrics(run)
    assert [int(r["iteration"]) for r in rows] == [50, 100, 150], "one row per evaluation, written once"
    assert float(rows[-1]["test_error"]) < 30.0
    checkpoint = torch.load(run / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["iteration"] == 150


def test_image_folders_train_and_evaluate_with_ten_crops(tmp_path: Path, cli):
    pytest.importorskip("PIL", reason="image folders need Pillow, which torchvision installs")
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 8), ("val", 3)):
        for label in range(3):
            folder = tmp_path / "images" / split / f"class{label}"
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = np.clip(rng.normal(60 + 70 * label, 30, size=(18, 22, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
    (tmp_path / "folder.res").write_text(TINY_SPEC.replace("3x8x8", "3x12x12").replace("classes=4", "classes=3"))
    recipe = """\
dataset: imagefolder
iterations: 6
batch_size: 6
milestones: [4]
scale: [12, 16]
crop_size: 12
test_resize: 14
color: pca
mean_samples: 12
workers: 0
eval_every: 3
eval_batch_size: 4
device: cpu
"""
    (tmp_path / "folder.yaml").write_text(recipe)
    status, _, _ = cli(
        "train", "folder.res", "--data", "images", "--recipe", "folder.yaml", "--out", "run", cwd=tmp_path
    )
    assert status == 0
    rows = metrics(tmp_path / "run")
    assert [int(r["iteration"]) for r in rows] == [3, 6]
    status, out, _ = cli("eval", "folder.res", "--weights", "run/checkpoint.pt", "--data", "images", cwd=tmp_path)
    lines = out.strip().splitlines()
    assert lines[0].startswith("tiny on imagefolder test (9 images), centre crop: top-1 error ")
    assert lines[1].startswith("tiny on imagefolder test (9 images), 10-crop: top-1 error ")
    single = float(lines[0].split("top-1 error ")[1].split("%")[0])
    assert single == pytest.approx(float(rows[-1]["test_error"]), abs=0.01)
    # The folder is named val/: --split val scores it too (training reports it as the test split).
    status, out, _ = cli(
        "eval", "folder.res", "--weights", "run/checkpoint.pt", "--data", "images", "--split", "val", cwd=tmp_path
    )
    assert status == 0
    assert out.strip().splitlines()[0] == lines[0].replace("imagefolder test", "imagefolder val")
