"""The torch backend against its ground truth: torchvision's models and the IR's figures."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import torchvision

import resdsl
from resdsl import interpret
from resdsl.backends.loading import load
from resdsl.backends.torch import build
from resdsl.errors import LimitError, WeightsError
from resdsl.ir import Limits
from resdsl.layers import Ctor, Layer
from resdsl.passes import assign_names, count_cost, infer_shapes
from tests.oracle import randomise, relative_error

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.mark.parametrize("depth", [18, 50, pytest.param(34, marks=pytest.mark.slow), *(
    pytest.param(depth, marks=pytest.mark.slow) for depth in (101, 152))])  # fmt: skip
def test_torchvision_parity(depth: int) -> None:
    torch.manual_seed(depth)
    reference = getattr(torchvision.models, f"resnet{depth}")().eval()
    model = load(f"torchvision/resnet{depth}").eval()
    assert list(model.state_dict()) == list(reference.state_dict())
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    model.load_state_dict(reference.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-5, atol=1e-5)


#: Built in the ordinary suite; every other shipped spec is built in CI's slow step.
FAST_BUILDS = ("cifar20", "resnet50", "timm/skresnet18", "timm/dla34", "timm/efficientnet_b0")


@pytest.mark.parametrize(
    "name",
    [name if name in FAST_BUILDS else pytest.param(name, marks=pytest.mark.slow) for name in resdsl.shipped_specs()],
)
def test_built_module_matches_the_ir(name: str) -> None:
    network = resdsl.compile(name)
    with torch.device("meta"):
        model = build(network)
    assert sum(p.numel() for p in model.parameters()) == network.num_params
    with torch.device("meta"):
        out = model.eval()(torch.empty(1, *network.input_shape, device="meta"))
    assert tuple(out.shape[1:]) == network.output_shape


def test_cifar_loss_falls() -> None:
    torch.manual_seed(0)
    model = load("cifar20").train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_for_inference_matches_eval() -> None:
    torch.manual_seed(0)
    model = load("torchvision/resnet18")
    for module in model.modules():  # non-trivial running statistics, so folding matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    reference = model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(x)
    fast = load("torchvision/resnet18", weights=model.state_dict(), for_inference=True, engine="eager")
    assert not fast.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        torch.testing.assert_close(fast(x), expected, rtol=1e-4, atol=1e-4)


def test_zero_init_residual() -> None:
    model = load("torchvision/resnet50", zero_init_residual=True)
    assert all(block.bn3.weight.abs().sum() == 0 for stage in (model.layer1, model.layer4) for block in stage)
    assert model.bn1.weight.abs().sum() > 0
    assert load("torchvision/resnet50").layer1[0].bn3.weight.abs().sum() > 0


@pytest.mark.parametrize("spec", ["torchvision/resnet50", "cifar20", "vgg19"])
def test_every_tensor_is_initialised_as_documented(spec: str) -> None:
    """Modules are allocated uninitialised (meta, then to_empty) and initialised once:
    nothing may keep whatever the allocator left there."""
    torch.manual_seed(0)
    model = load(spec)
    seen: set[str] = set()
    for prefix, module in model.named_modules():
        names = {f"{prefix}.{name}".lstrip(".") for name, _ in module.named_parameters(recurse=False)}
        names |= {f"{prefix}.{name}".lstrip(".") for name, _ in module.named_buffers(recurse=False)}
        seen |= names
        if isinstance(module, torch.nn.Conv2d):
            fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1] // module.groups
            if module.weight.numel() >= 20_000:  # enough samples for the standard deviation to be close
                assert module.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05), prefix
            assert module.weight.mean().abs().item() < 4 * (2 / fan_out) ** 0.5 / module.weight.numel() ** 0.5
            assert module.bias is None or not module.bias.any()
        elif isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), prefix
            assert not module.bias.any() and not module.running_mean.any(), prefix
            assert torch.equal(module.running_var, torch.ones_like(module.running_var)), prefix
            assert module.num_batches_tracked.item() == 0, prefix
        elif isinstance(module, torch.nn.Linear):
            bound = (1 + 1e-6) / module.in_features**0.5  # float32 rounding at the edge
            assert module.weight.abs().max().item() <= bound and module.weight.std().item() > bound / 3, prefix
            assert module.bias.abs().max().item() <= bound, prefix
    assert seen == set(model.state_dict()) | {name for name, _ in model.named_parameters()}
    torch.manual_seed(0)
    again = load(spec)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_device_argument_and_ambient_device() -> None:
    assert {p.device.type for p in load("cifar20", device="meta").parameters()} == {"meta"}
    with torch.device("meta"):
        assert {p.device.type for p in load("cifar20").parameters()} == {"meta"}
    assert {p.device.type for p in load("cifar20", device="cpu").parameters()} == {"cpu"}


def test_weights_replace_initialisation_entirely() -> None:
    """With weights= nothing is initialised first; every tensor is the checkpoint's."""
    reference = torchvision.models.resnet18()
    with torch.no_grad():
        for tensor in reference.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(-1, 1)
    model = load("torchvision/resnet18", weights=reference.state_dict())
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("mode", ["stage", "block"])
def test_checkpointing_gives_the_same_gradients(mode: str) -> None:
    torch.manual_seed(0)
    plain = load("cifar20")
    checkpointed = load("cifar20", checkpoint=mode, weights=plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    for model in (plain, checkpointed):
        model.train()
        model(x).square().mean().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-6, msg=name)
    assert list(plain.state_dict()) == list(checkpointed.state_dict())


def test_weights_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    state = load("resnet18").state_dict()
    path = tmp_path / "resnet18.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError) as caught:
        load("torchvision/resnet18", weights=path)
    message = str(caught.value)
    assert "missing" in message and "unexpected" in message and "layer1.0.conv1.weight" in message
    state["fc.weight"] = torch.zeros(3, 3)
    with pytest.raises(WeightsError, match=r"wrong shape: fc1?.weight"):
        load("resnet18", weights={**load("resnet18").state_dict(), "fc1.weight": torch.zeros(3, 3)})


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo resdsl-test-would-run-code",))


def test_code_carrying_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"conv1.weight": _Payload()}, handle)
    with pytest.raises(WeightsError, match="refused to load"):
        load("cifar20", weights=path)


def test_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    model = load("cifar20")
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    again = load("cifar20", weights=path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_parameter_bound_is_checked_before_allocation() -> None:
    network = resdsl.compile("vgg19", limits=Limits(max_params=1_000_000))
    with pytest.raises(LimitError, match="143,667,240 parameters"):
        build(network)
    huge = resdsl.compile_text("network wide { input 3x8x8\n head { flatten; fc 1000000000 } }")
    with pytest.raises(LimitError):
        build(huge)


def test_forward_is_generated_code_and_prints_readably() -> None:
    model = load("cifar20")
    source = type(model.conv2_x[0])._resdsl_source
    assert "self.conv1(x)" in source and "v0 += x" in source  # torchvision's in-place join
    text = repr(model)
    assert "(conv2_x): Stage(" in text and "(downsample): ZeroPadShortcut(" in text


def test_torch_export_and_dynamo_see_one_graph() -> None:
    model = load("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(x), model(x))
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    assert explanation.graph_count == 1


def test_onnx_export_runs_in_onnxruntime(tmp_path: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    model = load("cifar20").eval()
    x = torch.randn(2, 3, 32, 32)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"], dynamo=False)
    session = onnxruntime.InferenceSession(str(path))
    (result,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(result), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = load("cifar20").train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.autocast("cpu", dtype=dtype):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
    assert out.dtype == dtype
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = load("torchvision/resnet18").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_distributed_data_parallel_step(tmp_path: Path) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        model = torch.nn.parallel.DistributedDataParallel(load("cifar20", checkpoint="block"))
        model(torch.randn(2, 3, 32, 32)).sum().backward()
        assert all(p.grad is not None for p in model.parameters())
    finally:
        dist.destroy_process_group()


def test_join_after_relu_stays_out_of_place() -> None:
    # ReLU saves its output for backward, so adding into it in place would corrupt the gradient.
    text = "block post(w) { conv 3x3, w; bn; relu; add shortcut }\nnetwork t { input 4x8x8; stage s: 2 x post(4) }"
    network = resdsl.compile_text(text)
    model = build(network).train()
    source = type(model.s[0])._resdsl_source
    assert " += " not in source and " + x" in source
    model(torch.randn(2, 4, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@dataclass(frozen=True)
class _Bilinear(Layer, register=False):
    """A kind built as a module with two inputs (torch's nn.Bilinear), known to no registry."""

    kind: ClassVar[str] = "bilinear"
    arity: ClassVar[int | None] = 2
    out_features: int = 5

    def output_shape(self, inputs):
        return (self.out_features,)

    def cost(self, inputs, output):
        weights = inputs[0][0] * inputs[1][0] * self.out_features
        return weights + self.out_features, weights

    def constructor(self, inputs):
        return Ctor("nn.Bilinear", (inputs[0][0], inputs[1][0], self.out_features))

    def reference(self, inputs, tensors, training):
        # y_o = x1^T W_o x2 + b_o, the bilinear form written out.
        first, second = inputs
        return torch.einsum("bi,oij,bj->bo", first, tensors["weight"], second) + tensors["bias"]


@pytest.mark.parametrize("where", ["head", "block"])
def test_a_module_with_two_inputs_receives_both(where: str) -> None:
    # An `add { fc 8 }` join of two flat values, replaced through the Graph API by a
    # bilinear module reading both: the generated forward must pass it both.
    body = "fc 8\n add { fc 8 }"
    if where == "head":
        text = f"network t {{ input 3x4x4\n head {{ avgpool\n flatten\n {body} }} }}"
    else:
        network_text = "network t { input 3x4x4\n stem { avgpool; flatten }\n stage s: 1 x pair() }"
        text = f"block pair() {{ {body} }}\n{network_text}"
    network = resdsl.compile_text(text)
    graph = network.graph
    (join,) = network.nodes("add")
    made = graph.create(
        _Bilinear(5),
        join.inputs,
        pos=join.pos,
        trace=join.trace,
        scope=join.scope,
        block=join.block,
        names=join.names,
        label="bilinear",
        written="bilinear",
    )
    for block in network.blocks:
        block.nodes = [made.id if node == join.id else node for node in block.nodes]
        block.exit = made.id if block.exit == join.id else block.exit
    assert graph.replace_all_uses_with(join.id, made.id) == [join.id + 1]  # the output node
    graph.erase(join.id)
    for compiler_pass in (infer_shapes, assign_names, count_cost):
        compiler_pass(network)
    network.lint(("shape", "name", "params", "macs"))
    assert network.output_shape == (5,) and made.params == 8 * 8 * 5 + 5

    model = randomise(build(network)).double().eval()
    source = type(model if where == "head" else model.s[0])._resdsl_source
    call = next(line for line in source.splitlines() if "self.bilinear(" in line)
    assert call.count(",") == 1, call
    x = torch.randn(3, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        expected = interpret.run(network, model.state_dict(), x)
    assert out.shape == (3, 5)
    assert relative_error(out, expected) < 1e-12
