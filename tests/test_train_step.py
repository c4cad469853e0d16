"""The training step's speed options: each equals the eager fp32 step, and none reads the device inside a step.

On the CPU: the parts of the CUDA-graph step that are not the capture (a tensor learning
rate read by the fused SGD kernel, momentum buffers made in advance, warm-up iterations
undone, static input tensors), torch.compile, the optimizer kernels, and the loop with
every host read forbidden. The capture itself needs a GPU: its test runs there.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from resdsl.train.loop import Processes, RunOptions, Trainer
from resdsl.train.recipes import RecipeError, parse_recipe
from resdsl.train.step import GraphedStep, resolve_speed

BASE = """\
dataset: cifar10
batch_size: 32
pad: 1
iterations: 12
milestones: [6]
lr: 0.1
weight_decay: 0.0005
eval_every: 0
checkpoint_every: 0
log_every_seconds: 0
eval_batch_size: 64
device: cpu
"""


def _trainer(train_workspace: Path, extra: str = "", out: str = "run") -> Trainer:
    recipe = parse_recipe(BASE + extra, "r.yaml")
    trainer = Trainer(RunOptions(spec="tiny.res", data="data", recipe=recipe, out=train_workspace / out), Processes())
    trainer.setup()
    return trainer


def _state(trainer: Trainer) -> dict[str, torch.Tensor]:
    state = {f"model.{k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    for index, parameter in enumerate(trainer.model.parameters()):
        state[f"momentum.{index}"] = trainer.optimizer.state[parameter]["momentum_buffer"].detach().clone()
    return state


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        difference = (a[key].double() - b[key].double()).abs().max().item()
        assert difference <= tolerance * (1 + a[key].double().abs().max().item()), (key, difference)


def test_the_graph_steps_parts_train_as_the_eager_step(train_workspace: Path):
    eager = _trainer(train_workspace, "optimizer_kernels: foreach\n", "eager")
    graphed = _trainer(train_workspace, "optimizer_kernels: fused\n", "graphed")
    graphed.step = GraphedStep(graphed.step, graphed.model, capture=False)
    eager.train_steps(0, 12)
    graphed.train_steps(0, 12)
    # The milestone at 6 changed the learning rate in place, in the tensor the fused kernel reads.
    (group,) = graphed.optimizer.param_groups
    assert isinstance(group["lr"], torch.Tensor) and group["lr"].item() == pytest.approx(0.01)
    assert graphed.step.inputs is not None and graphed.step.graph is None
    # The warm-up's three iterations were undone: both ran exactly 12 steps from the same start.
    assert graphed.model.state_dict()["bn1.num_batches_tracked"].item() == 12
    _assert_close(_state(eager), _state(graphed), 1e-5)
    assert eager.window["images"] == graphed.window["images"] == 12 * 32
    assert float(eager.window["wrong"]) == float(graphed.window["wrong"])
    assert float(eager.window["loss"]) == pytest.approx(float(graphed.window["loss"]), rel=1e-5)


@pytest.mark.parametrize("kernels", ["fused", "for_loop"])
def test_optimizer_kernels_train_as_foreach(train_workspace: Path, kernels: str):
    reference = _trainer(train_workspace, "optimizer_kernels: foreach\n", "foreach")
    other = _trainer(train_workspace, f"optimizer_kernels: {kernels}\n", kernels)
    assert other.optimizer.defaults["fused" if kernels == "fused" else "foreach"] is (kernels == "fused")
    reference.train_steps(0, 8)
    other.train_steps(0, 8)
    _assert_close(_state(reference), _state(other), 1e-5)


def test_a_resumed_run_steps_with_its_own_kernels_not_the_checkpoints(train_workspace: Path):
    """Loading an optimizer's state replaces its groups' flags with the saved run's: they are set again."""
    recipe = parse_recipe(BASE + "optimizer_kernels: for_loop\n", "r.yaml")
    first = Trainer(RunOptions(spec="tiny.res", data="data", recipe=recipe, out=train_workspace / "run"), Processes())
    assert first.run() == 0
    saved = torch.load(train_workspace / "run" / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"][0]
    assert (saved["fused"], saved["foreach"]) == (False, False)
    # A copy of the run (the first trainer, still alive here, may hold the folder's lock).
    shutil.copytree(train_workspace / "run", train_workspace / "again")
    recipe = parse_recipe(BASE.replace("iterations: 12", "iterations: 14") + "optimizer_kernels: fused\n", "r.yaml")
    options = RunOptions(spec="tiny.res", data="data", recipe=recipe, out=train_workspace / "again", resume=True)
    resumed = Trainer(options, Processes())
    resumed.setup()
    assert resumed.iteration == 12
    assert all((group["fused"], group["foreach"]) == (True, False) for group in resumed.optimizer.param_groups)


def test_a_compiled_step_trains_as_the_eager_step(train_workspace: Path):
    eager = _trainer(train_workspace, "", "eager")
    compiled = _trainer(train_workspace, "compile: true\n", "compiled")
    eager.train_steps(0, 4)
    compiled.train_steps(0, 4)
    _assert_close(_state(eager), _state(compiled), 1e-4)


def test_bf16_autocast_trains_as_fp32_within_bf16s_precision(train_workspace: Path):
    fp32 = _trainer(train_workspace, "amp: none\n", "fp32")
    bf16 = _trainer(train_workspace, "amp: bf16\nchannels_last: true\n", "bf16")
    fp32.train_steps(0, 2)
    bf16.train_steps(0, 2)
    # Two steps at lr 0.1 from the same weights: the weights move by ~1e-2; bf16 keeps 8 bits of mantissa.
    _assert_close(_state(fp32), _state(bf16), 2e-2)


def test_no_step_reads_the_device(train_workspace: Path, monkeypatch):
    """Between evaluations the loop never waits on the device: every way of reading a tensor's value raises."""
    trainer = _trainer(train_workspace)

    def forbidden(self, *args, **kwargs):
        raise AssertionError("a host read inside the training steps")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    trainer.train_steps(0, 40)  # an epoch boundary (8 steps an epoch), a milestone, the metrics' sums
    monkeypatch.undo()
    assert trainer.window["images"] == 40 * 32 and float(trainer.window["wrong"]) >= 0


def test_speed_keys_resolve_per_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    recipe = parse_recipe(BASE.replace("device: cpu\n", ""), "r.yaml")
    gpu = resolve_speed(recipe, torch.device("cuda", 0), 1)
    assert (gpu.amp, gpu.channels_last, gpu.optimizer_kernels, gpu.cuda_graph) == ("bf16", True, "fused", True)
    assert gpu.describe() == "bf16 autocast, channels_last, fused SGD, CUDA graph"
    cpu = resolve_speed(recipe, torch.device("cpu"), 1)
    assert (cpu.amp, cpu.channels_last, cpu.optimizer_kernels, cpu.cuda_graph) == ("none", False, "foreach", False)
    assert cpu.graph_note == "CUDA graphs need a GPU"
    assert not resolve_speed(recipe, torch.device("cuda", 0), 2).cuda_graph  # DDP
    fp16 = parse_recipe(BASE + "amp: fp16\n", "r.yaml")
    assert "gradient scaler" in resolve_speed(fp16, torch.device("cuda", 0), 1).graph_note
    # The graph reads the learning rate from a tensor: only the fused kernel does so without a host read.
    foreach = parse_recipe(BASE + "optimizer_kernels: foreach\n", "r.yaml")
    assert resolve_speed(foreach, torch.device("cuda", 0), 1).optimizer_kernels == "fused"
    forced = parse_recipe(BASE + "cuda_graph: true\n", "r.yaml")
    with pytest.raises(RecipeError) as caught:
        resolve_speed(forced, torch.device("cpu"), 1)
    assert str(caught.value).startswith("r.yaml:13:13: 'cuda_graph' is true but this run cannot capture its step")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA graph capture needs a GPU; none is visible")
def test_the_captured_graph_trains_as_the_eager_step_on_a_gpu(train_workspace: Path):
    common = "device: cuda\namp: bf16\nchannels_last: true\noptimizer_kernels: fused\n"
    eager = _trainer(train_workspace, common + "cuda_graph: false\n", "eager")
    graphed = _trainer(train_workspace, common + "cuda_graph: true\n", "graphed")
    eager.train_steps(0, 12)
    graphed.train_steps(0, 12)
    assert graphed.step.graph is not None, graphed.step.note
    _assert_close(_state(eager), _state(graphed), 2e-2)
