"""Using what `resdsl train` made: checkpoints loaded, exported, evaluated and trained from; progress in log files.

A short run of a tiny residual network and one of its plain twin (option A: the same
keys and shapes) on a 4-class CIFAR-format set, in this process, shared by the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cifar_fixtures import TINY_SPEC, write_learnable

import resdsl
from resdsl.errors import WeightsError
from resdsl.train.loop import CHECKPOINT_FORMAT, Processes, RunOptions, Trainer
from resdsl.train.recipes import parse_recipe

PLAIN_SPEC = TINY_SPEC.replace("shortcut A", "shortcut none").replace("network tiny", "network plain_tiny")
RECIPE = """\
dataset: cifar10
iterations: 40
batch_size: 32
lr: 0.1
milestones: [30]
pad: 1
eval_every: 20
checkpoint_every: 20
eval_batch_size: 128
device: cpu
"""


def _run(root: Path, spec: str, out: str, recipe: str = RECIPE, **options) -> Trainer:
    parsed = parse_recipe(recipe, "r.yaml")
    options = RunOptions(spec=spec, data=str(root / "data"), recipe=parsed, out=root / out, **options)
    trainer = Trainer(options, Processes())
    assert trainer.run() == 0
    return trainer


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("use")
    write_learnable(root / "data", train=256, test=64)
    (root / "tiny.res").write_text(TINY_SPEC)
    (root / "plain.res").write_text(PLAIN_SPEC)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(root, str(root / "tiny.res"), "tiny")
        _run(root, str(root / "plain.res"), "plain")
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture
def cli(monkeypatch, capsys):
    from resdsl.cli import main

    def run(*args: str, cwd: Path) -> tuple[int, str, str]:
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        status = main(list(args))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def test_checkpoint_format_is_the_one_the_backend_reads():
    from resdsl.backends.loading import RUN_CHECKPOINT_FORMAT

    assert CHECKPOINT_FORMAT == RUN_CHECKPOINT_FORMAT


@pytest.mark.parametrize("name", ["best.pt", "checkpoint.pt"])
def test_a_runs_checkpoints_load_where_a_weights_file_does(runs: Path, name: str):
    saved = torch.load(runs / "tiny" / name, weights_only=True)
    model = resdsl.load(str(runs / "tiny.res"), weights=str(runs / "tiny" / name))
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved["model"][key]), key


def test_load_refuses_another_networks_run_naming_both(runs: Path):
    with pytest.raises(WeightsError) as caught:
        resdsl.load(str(runs / "tiny.res"), weights=str(runs / "plain" / "best.pt"))
    message = str(caught.value)
    assert "trained as plain_tiny" in message and "not as tiny" in message
    assert "allow_other_network=True" in caught.value.hint
    # Told otherwise, or fine-tuning with a skipped module, it loads.
    model = resdsl.load(str(runs / "tiny.res"), weights=str(runs / "plain" / "best.pt"), allow_other_network=True)
    plain = torch.load(runs / "plain" / "best.pt", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["fc1.weight"], plain["fc1.weight"])
    resdsl.load(str(runs / "tiny.res"), weights=str(runs / "plain" / "best.pt"), skip=("fc1",))


def test_eval_refuses_another_networks_run_unless_allowed(runs: Path, cli):
    args = ("eval", "tiny.res", "--weights", "plain/best.pt", "--data", "data")
    status, out, err = cli(*args, cwd=runs)
    assert status == 1 and out == ""
    assert "plain/best.pt: these weights were trained as plain_tiny" in err and "not as tiny" in err
    assert "--allow-other-network" in err
    status, out, _ = cli(*args, "--allow-other-network", cwd=runs)
    assert status == 0 and out.startswith("tiny on cifar10 test (64 images): top-1 error")
    status, out, _ = cli("eval", "plain.res", "--weights", "plain/best.pt", "--data", "data", cwd=runs)
    assert status == 0 and out.startswith("plain_tiny on cifar10 test")


def test_build_exports_a_runs_weights_with_its_normalisation(runs: Path, cli):
    onnx = pytest.importorskip("onnx", reason="the onnx export needs the onnx package (the test extra has it)")
    ort = pytest.importorskip("onnxruntime", reason="checking the export runs it in onnxruntime (the test extra)")
    saved = torch.load(runs / "tiny" / "best.pt", weights_only=True)
    shift, scale = saved["normalizer"]["shift"], saved["normalizer"]["scale"]
    model = resdsl.load(str(runs / "tiny.res"), weights=saved["model"]).eval()
    pixels = torch.randint(0, 256, (5, 3, 8, 8)).float()
    with torch.no_grad():
        expected = model((pixels - shift) * scale).numpy()

    status, out, _ = cli("build", "tiny.res", "--weights", "tiny/best.pt", "-o", "tiny.onnx", cwd=runs)
    assert status == 0
    assert "recorded in tiny.onnx's metadata as 'resdsl.input_normalization'" in out
    proto = onnx.load(str(runs / "tiny.onnx"))
    (entry,) = [p for p in proto.metadata_props if p.key == "resdsl.input_normalization"]
    record = json.loads(entry.value)
    assert record["formula"] == "input = (pixels - shift) * scale" and record["baked"] is False
    recorded_shift = torch.tensor(record["shift"])
    assert torch.equal(recorded_shift, shift.float()) and record["shift_shape"] == [3, 8, 8]
    session = ort.InferenceSession(str(runs / "tiny.onnx"))
    normalised = ((pixels - recorded_shift) * torch.tensor(record["scale"]).view(3, 1, 1)).numpy()
    assert abs(session.run(None, {"input": normalised})[0] - expected).max() < 1e-4

    status, out, _ = cli(
        "build", "tiny.res", "--weights", "tiny/best.pt", "-o", "baked.onnx", "--bake-normalization", cwd=runs
    )
    assert status == 0 and "baked into baked.onnx, which takes pixels in 0..255" in out
    session = ort.InferenceSession(str(runs / "baked.onnx"))
    assert abs(session.run(None, {"input": pixels.numpy()})[0] - expected).max() < 1e-4

    status, _, err = cli("build", "plain.res", "--weights", "tiny/best.pt", "-o", "x.onnx", cwd=runs)
    assert status == 1 and "trained as tiny" in err and not (runs / "x.onnx").exists()
    state = runs / "plain_state.pt"
    torch.save(saved["model"], state)
    status, _, err = cli("build", "tiny.res", "--weights", str(state), "-o", "y.onnx", "--bake-normalization", cwd=runs)
    assert status == 2 and "records no normalisation" in err


def test_init_starts_from_weights_except_the_skipped_modules(runs: Path):
    # lr 0: the step changes nothing but BN statistics, so the run's weights are where it started.
    recipe = RECIPE.replace("iterations: 40", "iterations: 1").replace("lr: 0.1", "lr: 0.0")
    start = torch.load(runs / "tiny" / "best.pt", weights_only=True)["model"]
    trainer = _run(runs, str(runs / "tiny.res"), "from-best", recipe, init=str(runs / "tiny" / "best.pt"))
    state = trainer.model.state_dict()
    weights = [key for key in state if key.endswith("weight")]
    assert "fc1.weight" in weights and all(torch.equal(state[key], start[key]) for key in weights)

    trainer = _run(runs, str(runs / "tiny.res"), "new-head", recipe, init=str(runs / "tiny" / "best.pt"), skip=("fc1",))
    state = trainer.model.state_dict()
    assert not torch.equal(state["fc1.weight"], start["fc1.weight"])
    convs = [k for k in state if k.endswith("weight") and state[k].dim() == 4]
    assert convs and all(torch.equal(state[k], start[k]) for k in convs)

    with pytest.raises(WeightsError, match="trained as tiny"):
        _run(runs, str(runs / "plain.res"), "other", recipe, init=str(runs / "tiny" / "best.pt"))


def test_train_cli_takes_init_and_skip(runs: Path, cli):
    (runs / "one.yaml").write_text(RECIPE.replace("iterations: 40", "iterations: 2"))
    args = ("train", "tiny.res", "--data", "data", "--recipe", "one.yaml")
    status, _, _ = cli(*args, "--out", "cli-init", "--init", "tiny/best.pt", "--skip", "fc1", cwd=runs)
    assert status == 0 and (runs / "cli-init" / "checkpoint.pt").is_file()
    status, _, err = cli(*args, "--out", "cli-bad", "--skip", "fc1", cwd=runs)
    assert status == 2 and "--skip and --allow-other-network apply to the weights of --init" in err


def test_a_progress_line_every_n_seconds_where_no_bar_shows(runs: Path):
    recipe = RECIPE.replace("eval_every: 20", "eval_every: 40") + "log_every_seconds: 0.000001\n"
    trainer = _run(runs, str(runs / "tiny.res"), "logged", recipe)
    progress = [line for line in trainer.log_lines if line.startswith("iter ") and "to go" in line]
    # Every step is past the interval: a line after each of steps 1..39 (none at the end, where the row prints).
    assert [int(line.split()[1].split("/")[0]) for line in progress] == list(range(1, 40))
    assert all(" img/s  " in line and "train " in line for line in progress)
    quiet = _run(runs, str(runs / "tiny.res"), "quiet", RECIPE + "log_every_seconds: 0\n")
    assert not [line for line in quiet.log_lines if "to go" in line]


def test_plot_takes_labels_after_one_flag_and_picks_the_x_unit(runs: Path, tmp_path: Path, cli):
    from resdsl.train.plot import iteration_unit, plot_runs

    status, _, err = cli("plot", "tiny", "plain", "-o", str(tmp_path / "f.png"), "--label", "ResNet", "plain", cwd=runs)
    assert status == 0, err
    fig = plot_runs([runs / "tiny", runs / "plain"], tmp_path / "g.png", labels=["ResNet", "plain"])
    (axes,) = fig.axes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["ResNet", "plain"]
    assert axes.get_xlabel() == "iter." and list(axes.get_lines()[1].get_xdata()) == [20, 40]
    assert iteration_unit(300) == (1.0, "iter.")
    assert iteration_unit(3000) == (1000.0, "iter. (1e3)")
    assert iteration_unit(64000) == (10000.0, "iter. (1e4)")
    assert iteration_unit(450450) == (100000.0, "iter. (1e5)")


def test_pt2_and_safetensors_exports_record_the_normalisation(runs: Path, cli):
    saved = torch.load(runs / "tiny" / "best.pt", weights_only=True)
    status, out, _ = cli("build", "tiny.res", "--weights", "tiny/best.pt", "-o", "tiny.pt2", cwd=runs)
    assert status == 0 and "recorded in tiny.pt2's metadata" in out
    extra = {"resdsl.input_normalization": ""}
    torch.export.load(str(runs / "tiny.pt2"), extra_files=extra)
    record = json.loads(extra["resdsl.input_normalization"])
    assert torch.equal(torch.tensor(record["shift"]), saved["normalizer"]["shift"].float())
    status, out, _ = cli("build", "tiny.res", "--weights", "tiny/best.pt", "-o", "tiny.pt", cwd=runs)
    assert status == 0 and "a .pt state dict cannot record it" in out
    safetensors = pytest.importorskip("safetensors", reason="the .safetensors export needs safetensors (test extra)")
    status, out, _ = cli("build", "tiny.res", "--weights", "tiny/best.pt", "-o", "tiny.safetensors", cwd=runs)
    assert status == 0
    with safetensors.safe_open(str(runs / "tiny.safetensors"), "pt") as handle:
        record = json.loads(handle.metadata()["resdsl.input_normalization"])
    assert record["scale"] == pytest.approx([1 / 255] * 3)


@pytest.mark.filterwarnings("error")
def test_a_run_stopped_before_its_first_evaluation_plots_without_a_warning():
    from resdsl.train.plot import figure

    # SIGINT before the first evaluation: training rows only, or no row at all.
    trained = {"iteration": [1.0, 2.0], "train_error": [80.0, 70.0], "test_error": [None, None]}
    empty: dict[str, list[float | None]] = {"iteration": [], "train_error": [], "test_error": []}
    (axes,) = figure([("tiny", trained)]).axes
    assert [t.get_text() for t in axes.get_legend().get_texts()] == ["tiny"]
    (axes,) = figure([("tiny", empty)]).axes
    assert axes.get_legend() is None


def test_threads_one_per_process_under_torchrun_else_the_available_cores():
    from resdsl.train.loop import available_cores, choose_threads

    assert choose_threads({}, 6) == (6, "the cores this process may use")
    assert choose_threads({"WORLD_SIZE": "1"}, 6)[0] == 6
    threads, reason = choose_threads({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "RANK": "1"}, 6)
    assert threads == 1 and "2 processes" in reason and "torchrun" in reason
    assert choose_threads({"WORLD_SIZE": "3"}, 6)[0] == 1
    assert choose_threads({"OMP_NUM_THREADS": "3", "LOCAL_WORLD_SIZE": "2"}, 6) == (3, "OMP_NUM_THREADS=3")
    assert choose_threads({"OMP_NUM_THREADS": "bad"}, 0) == (1, "the cores this process may use")
    import os

    assert available_cores() == len(os.sched_getaffinity(0))


def test_progress_below_one_image_a_second_prints_a_real_figure():
    from resdsl.train.loop import images_per_second

    assert images_per_second(0.42) == "0.42 img/s"
    assert images_per_second(0.0031) == "0.0031 img/s"
    assert images_per_second(0.996) == "1 img/s"
    assert images_per_second(1234.4) == "1,234 img/s"
    assert images_per_second(0) == "0 img/s"


def test_a_run_says_its_threads_and_leaves_the_callers_setting(runs: Path):
    before = torch.get_num_threads()
    trainer = _run(runs, str(runs / "tiny.res"), "threads", RECIPE.replace("iterations: 40", "iterations: 2"))
    (line,) = [line for line in trainer.log_lines if line.startswith("threads: ")]
    assert line.startswith(f"threads: {trainer.threads[0]} (") and trainer.threads[0] >= 1
    assert torch.get_num_threads() == before
