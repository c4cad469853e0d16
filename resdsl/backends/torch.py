"""Torch backend: the IR becomes a ``torch.nn.Module``.

The module tree follows the IR's names (top-level layers as attributes, stage ``S``
an ``nn.Sequential`` of blocks ``S.0, S.1``...), so ``state_dict()`` keys are the
spec's. Forward code is generated once per distinct block structure, like
torch.fx's codegen: a straight-line function of ``self.<name>(...)`` calls and one
addition, so that eager speed equals hand-written code and ``torch.compile``,
``torch.export`` and ONNX export see plain Python. The generated text contains only
module names the IR validated as Python identifiers and fixed templates; nothing
from a spec is evaluated.
"""

from __future__ import annotations

import inspect
import itertools
import keyword
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from resdsl.errors import LimitError, WeightsError
from resdsl.ir import Network
from resdsl.layers import (
    Add,
    AvgPool,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    Input,
    Linear,
    MaxPool,
    Output,
    Projection,
    ReLU,
    ZeroPad,
)

CHECKPOINT_OPTIONS = ("none", "stage", "block")


class ZeroPadShortcut(nn.Module):
    """Option A: subsample by the stride, append zero channels. No parameters."""

    def __init__(self, stride: tuple[int, int], extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1):
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


class Stage(nn.Sequential):
    """A stage's blocks. Activation checkpointing ("stage" or "block") trades compute
    for memory when training: activations inside are recomputed in backward. The
    mode is a plain attribute fixed at build time, so tracing sees a constant."""

    def __init__(self, *blocks: nn.Module, checkpoint: str = "none") -> None:
        super().__init__(*blocks)
        self.checkpoint = checkpoint

    def _blocks(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint == "none" or not (self.training and torch.is_grad_enabled()):
            return self._blocks(x)
        if self.checkpoint == "stage":
            return _checkpoint(self._blocks, x, use_reentrant=False)
        for block in self:
            x = _checkpoint(block, x, use_reentrant=False)
        return x


@dataclass(frozen=True)
class Ctor:
    """How to construct one module: a class from :data:`CONSTRUCTORS` and its arguments.

    One description serves both the built model and the exported .py source, so the
    two cannot disagree.
    """

    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()
    children: tuple[Ctor, ...] = ()

    def instantiate(self) -> nn.Module:
        if self.children:
            return CONSTRUCTORS[self.name](*(child.instantiate() for child in self.children))
        return CONSTRUCTORS[self.name](*self.args, **dict(self.kwargs))

    def source(self, indent: str = "") -> str:
        prefix = "" if self.name == "ZeroPadShortcut" else "nn."
        if self.children:
            inner = ",\n".join(f"{indent}    {child.source(indent + '    ')}" for child in self.children)
            return f"{prefix}{self.name}(\n{inner},\n{indent})"
        parts = [repr(arg) for arg in self.args] + [f"{key}={value!r}" for key, value in self.kwargs]
        return f"{prefix}{self.name}({', '.join(parts)})"


CONSTRUCTORS: dict[str, type[nn.Module]] = {
    "Conv2d": nn.Conv2d,
    "BatchNorm1d": nn.BatchNorm1d,
    "BatchNorm2d": nn.BatchNorm2d,
    "ReLU": nn.ReLU,
    "MaxPool2d": nn.MaxPool2d,
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
    "AvgPool2d": nn.AvgPool2d,
    "Linear": nn.Linear,
    "Dropout": nn.Dropout,
    "Flatten": nn.Flatten,
    "Sequential": nn.Sequential,
    "ZeroPadShortcut": ZeroPadShortcut,
}


def module_ctor(layer: Any, in_shape: tuple[int, ...]) -> Ctor | None:
    """How to construct the torch module of one IR layer (None for add, an expression)."""
    match layer:
        case Conv():
            return Ctor(
                "Conv2d",
                (in_shape[0], layer.out_channels, layer.kernel),
                (
                    ("stride", layer.stride),
                    ("padding", layer.padding),
                    ("dilation", layer.dilation),
                    ("groups", layer.groups),
                    ("bias", layer.bias),
                ),
            )
        case BatchNorm():
            return Ctor("BatchNorm2d" if len(in_shape) == 3 else "BatchNorm1d", (in_shape[0],))
        case ReLU():
            return Ctor("ReLU", kwargs=(("inplace", True),))
        case MaxPool():
            return Ctor("MaxPool2d", (layer.kernel,), (("stride", layer.stride), ("padding", layer.padding)))
        case AvgPool():
            if layer.is_global:
                return Ctor("AdaptiveAvgPool2d", ((1, 1),))
            return Ctor("AvgPool2d", (layer.kernel,), (("stride", layer.stride), ("padding", layer.padding)))
        case Linear():
            return Ctor("Linear", (in_shape[0], layer.out_features), (("bias", layer.bias),))
        case Dropout():
            return Ctor("Dropout", (layer.p,))
        case Flatten():
            return Ctor("Flatten", (1,))
        case Projection():
            return Ctor(
                "Sequential",
                children=(
                    Ctor("Conv2d", (in_shape[0], layer.out_channels, 1), (("stride", layer.stride), ("bias", False))),
                    Ctor("BatchNorm2d", (layer.out_channels,)),
                ),
            )
        case ZeroPad():
            return Ctor("ZeroPadShortcut", (layer.stride, layer.extra_channels))
        case Add() | Input() | Output():
            return None
    raise TypeError(f"no torch module for {layer!r}")  # pragma: no cover


def make_module(layer: Any, in_shape: tuple[int, ...]) -> nn.Module | None:
    ctor = module_ctor(layer, in_shape)
    return ctor.instantiate() if ctor else None


def _identifier(name: str) -> str:
    if not name.isidentifier() or keyword.iskeyword(name):  # the naming pass guarantees this
        raise ValueError(f"module name {name!r} is not an identifier")
    return name


#: An add step that may write into its main input (torchvision's ``out += identity``).
INPLACE_ADD = "+="


def forward_source(steps: list[tuple[str, str | None, list[str]]]) -> str:
    """Generated forward: `steps` are (output variable, module name or None for add, input variables).

    A value's name is reused once its last reader has run, as hand-written code
    reuses ``out``: the old tensor is released at once instead of living until
    the function returns, which matters for peak memory.
    """
    last_use: dict[str, int] = {}
    for index, (_, _, inputs) in enumerate(steps):
        for name in inputs:
            last_use[name] = index
    current: dict[str, str] = {"x": "x"}  # step variable -> the Python name holding it
    lines = ["def forward(self, x):"]
    result = "x"
    for index, (target, module, inputs) in enumerate(steps):
        names = [current[name] for name in inputs]
        free = [current[name] for name in inputs if last_use[name] == index]
        if module == INPLACE_ADD:
            result = current[target] = names[0]
            lines.append(f"    {result} += {names[1]}")
            continue
        result = current[target] = free[0] if free else target
        if module is None:
            lines.append(f"    {result} = {names[0]} + {names[1]}")
        else:
            lines.append(f"    {result} = self.{_identifier(module)}({names[0]})")
    lines.append(f"    return {result}")
    return "\n".join(lines) + "\n"


_CLASSES: dict[tuple[str, str], type] = {}


def _generated_class(kind: str, source: str) -> type:
    """One nn.Module subclass per distinct forward (cached: blocks of a stage share one)."""
    key = (kind, source)
    if key not in _CLASSES:
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<resdsl {kind}>", "exec"), {"torch": torch}, namespace)
        cls = type(kind, (nn.Module,), {"forward": namespace["forward"], "__module__": __name__})
        cls._resdsl_source = source
        _CLASSES[key] = cls
    return _CLASSES[key]


def _steps(network: Network, nodes: list[int], entry: int, local) -> tuple[list, list[tuple[str, Ctor]]]:
    """Straight-line steps and the modules they call, for nodes whose input is `entry`."""
    graph = network.graph
    value = {entry: "x"}
    steps, modules = [], []
    for index, node in enumerate(nodes):
        attrs = graph.nodes[node]
        preds = {graph.edges[p, node]["role"]: p for p in graph.predecessors(node)}
        target = f"v{index}"
        if attrs["layer"].kind == "add":
            main = preds["main"]
            # In place saves a tensor per block, but only where autograd kept no copy of the
            # main value: BN and conv save their inputs, not their outputs.
            inplace = graph.nodes[main]["layer"].kind in ("bn", "conv") and graph.out_degree(main) == 1
            steps.append((target, INPLACE_ADD if inplace else None, [value[main], value[preds["shortcut"]]]))
        else:
            name = local(attrs["name"])
            source = preds["main"]
            modules.append((name, module_ctor(attrs["layer"], graph.nodes[source]["shape"])))
            steps.append((target, name, [value[source]]))
        value[node] = target
    return steps, modules


@dataclass
class BlockPlan:
    kind: str  # the block type's name
    forward: str  # generated forward source
    modules: list[tuple[str, Ctor]]


@dataclass
class ModelPlan:
    """What to build, read off the IR: the top-level forward and every module's constructor."""

    name: str
    forward: str
    items: list[tuple[str, Ctor | list[BlockPlan]]]  # a top-level layer, or a stage's blocks


def plan(network: Network) -> ModelPlan:
    graph = network.graph
    blocks: dict[tuple[str, int], list[int]] = {}
    top: list[int | str] = []  # top-level node ids and stage names, in execution order
    for node in network.order():
        scope = graph.nodes[node]["scope"]
        if graph.nodes[node]["layer"].kind in ("input", "output"):
            continue
        if scope.stage is None:
            top.append(node)
        else:
            if scope.stage not in top:
                top.append(scope.stage)
            blocks.setdefault((scope.stage, scope.index), []).append(node)

    stage_blocks: dict[str, list[BlockPlan]] = {}
    for (stage, index), nodes in blocks.items():
        prefix = f"{stage}.{index}."
        (entry,) = (p for p in graph.predecessors(nodes[0]))
        steps, modules = _steps(network, nodes, entry, lambda name, prefix=prefix: name.removeprefix(prefix))
        kind = graph.nodes[nodes[0]]["scope"].block
        stage_blocks.setdefault(stage, []).append(BlockPlan(kind, forward_source(steps), modules))

    # The top level: its own layers, and each stage as one call.
    steps: list[tuple[str, str | None, list[str]]] = []
    items: list[tuple[str, Ctor | list[BlockPlan]]] = []
    current = "x"
    for index, item in enumerate(top):
        target = f"v{index}"
        if isinstance(item, str):
            items.append((item, stage_blocks[item]))
            steps.append((target, item, [current]))
        else:
            attrs = graph.nodes[item]
            (pred,) = graph.predecessors(item)
            items.append((attrs["name"], module_ctor(attrs["layer"], graph.nodes[pred]["shape"])))
            steps.append((target, attrs["name"], [current]))
        current = target
    return ModelPlan(_class_name(network.name), forward_source(steps), items)


def build(
    network: Network,
    *,
    checkpoint: str | None = None,
    zero_init_residual: bool | None = None,
    device: torch.device | str | None = None,
    initialise: bool = True,
) -> nn.Module:
    """Build the module for a compiled network, initialised as the paper and torchvision do.

    The modules are made on the meta device and their tensors allocated once, on
    `device` (default: torch's default device), then initialised once: PyTorch's
    own initialisation at construction, which would be overwritten, took half of
    the build time. `initialise=False` leaves the memory unset, for a caller that
    loads every tensor next.
    """
    if network.num_params > network.limits.max_params:
        raise LimitError(
            f"{network.name} has {network.num_params:,} parameters, more than the limit of "
            f"{network.limits.max_params:,}",
            network.pos,
            "raise it with Limits(max_params=...) if this is intended",
        )
    mode = checkpoint or network.settings.checkpoint
    if mode not in CHECKPOINT_OPTIONS:
        raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINT_OPTIONS)}, not {mode!r}")
    model_plan = plan(network)
    target = torch.device(device) if device is not None else torch.get_default_device()
    with torch.device("meta"):
        model = _generated_class(model_plan.name, model_plan.forward)()
        for name, item in model_plan.items:
            if isinstance(item, Ctor):
                model.add_module(name, item.instantiate())
                continue
            blocks = []
            for block_plan in item:
                block = _generated_class(block_plan.kind, block_plan.forward)()
                for local, ctor in block_plan.modules:
                    block.add_module(local, ctor.instantiate())
                blocks.append(block)
            model.add_module(name, Stage(*blocks, checkpoint=mode))
    model.to_empty(device=target)
    if initialise:
        if zero_init_residual is None:
            zero_init_residual = network.settings.zero_init_residual
        _initialise(model, network, zero_init_residual)
    return model


def export_source(network: Network) -> str:
    """A standalone PyTorch source file of the model that imports only torch.

    Its ``Model`` class has the same modules, state_dict keys and forward code as
    ``build(network)``; training-time checkpointing is left out.
    """
    model_plan = plan(network)
    classes: dict[str, str] = {}  # forward source -> class name
    taken = {"Model", "ZeroPadShortcut", "Stage"}
    lines = [
        # The network's name and the spec's path are text from outside: they reach the
        # generated source only as the repr of a str, which Python reads back as that str.
        repr(f"{network.name}: generated by resdsl from {network.path}. Imports only torch."),
        "",
        "import torch",
        "from torch import nn",
        "",
        "",
        inspect.getsource(ZeroPadShortcut).rstrip(),
        "",
        "",
        "def _block(block, **modules):",
        "    for name, module in modules.items():",
        "        block.add_module(name, module)",
        "    return block",
    ]
    for _, item in model_plan.items:
        for block_plan in item if isinstance(item, list) else ():
            if block_plan.forward not in classes:
                name = _class_name(block_plan.kind)
                if name in taken:
                    name = next(f"{name}{n}" for n in itertools.count(1) if f"{name}{n}" not in taken)
                taken.add(name)
                classes[block_plan.forward] = name
                lines += ["", "", f"class {name}(nn.Module):", _indent(block_plan.forward)]
    lines += ["", "", "class Model(nn.Module):", "    def __init__(self):", "        super().__init__()"]
    for name, item in model_plan.items:
        if isinstance(item, Ctor):
            lines.append(f"        self.{name} = {item.source('        ')}")
            continue
        lines.append(f"        self.{name} = nn.Sequential(")
        for block_plan in item:
            lines.append(f"            _block(\n                {classes[block_plan.forward]}(),")
            for local, ctor in block_plan.modules:
                lines.append(f"                {local}={ctor.source('                ')},")
            lines.append("            ),")
        lines.append("        )")
    lines += ["", _indent(model_plan.forward)]
    return "\n".join(lines).rstrip() + "\n"


def _indent(source: str) -> str:
    return "\n".join(f"    {line}" if line else line for line in source.rstrip().splitlines())


def _class_name(name: str) -> str:
    parts = [part for part in name.split("_") if part]
    cleaned = "".join(part[:1].upper() + part[1:] for part in parts)
    # 'none' becomes 'None', a keyword: a class of that name would not even parse.
    return cleaned if cleaned.isidentifier() and not keyword.iskeyword(cleaned) else "Network"


def _initialise(model: nn.Module, network: Network, zero_init_residual: bool) -> None:
    """Every parameter and buffer, once: the modules were allocated uninitialised."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            module.reset_parameters()  # weight 1, bias 0, running mean 0 and variance 1
        elif isinstance(module, nn.Linear):
            module.reset_parameters()  # PyTorch's default, which torchvision keeps for fc
        elif any(True for _ in itertools.chain(module.parameters(recurse=False), module.buffers(recurse=False))):
            # A new module kind must say how it starts, or it would keep uninitialised memory.
            raise TypeError(f"no initialisation for {type(module).__name__}")  # pragma: no cover
    if zero_init_residual:
        graph = network.graph
        named = dict(model.named_modules())
        for node, _ in network.nodes("add"):
            (main,) = [p for p in graph.predecessors(node) if graph.edges[p, node]["role"] == "main"]
            if graph.nodes[main]["layer"].kind == "bn":
                nn.init.zeros_(named[graph.nodes[main]["name"]].weight)


def read_weights(weights: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a .safetensors file or a torch.save file (weights only).

    Whatever the file holds, the result is a dict of str to tensor or a WeightsError
    naming the file: empty, truncated and foreign files, headers that lie about their
    size, and pickles of other objects are all refused.
    """
    if isinstance(weights, Mapping):
        return _tensors_only(dict(weights), None)
    path = Path(weights)
    shown = str(path)
    try:
        exists, regular = path.exists(), path.is_file()
    except (OSError, ValueError) as error:  # a name too long, a NUL in the path
        raise WeightsError(f"cannot read weights: {error}", file=shown) from None
    if not exists:
        raise WeightsError(f"no such weights file: {shown}", file=shown)
    if not regular:  # a FIFO would block, /dev/zero would never end
        raise WeightsError("the weights are not a regular file", file=shown)
    if path.stat().st_size == 0:
        raise WeightsError("the weights file is empty", file=shown)
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise WeightsError(
                "reading .safetensors needs the safetensors package: pip install safetensors", file=shown
            ) from None
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors' own error: a truncated file, a header too large
            raise WeightsError(f"cannot read weights: {_first_line(error)}", file=shown) from None
        return _tensors_only(state, shown)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise WeightsError(
            "refused to load: the file holds Python objects other than tensors, which could run code "
            f"({_first_line(error)})",
            file=shown,
            hint="save plain state dicts (torch.save(model.state_dict(), path)) or use .safetensors",
        ) from None
    except Exception as error:  # a truncated or foreign file
        raise WeightsError(f"cannot read weights: {type(error).__name__}: {_first_line(error)}", file=shown) from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"expected a state dict, found {type(state).__name__}", file=shown)
    return _tensors_only(dict(state), shown)


def _first_line(error: BaseException) -> str:
    lines = str(error).splitlines()
    return lines[0][:200] if lines else type(error).__name__


def _tensors_only(state: dict, shown: str | None) -> dict[str, torch.Tensor]:
    """The state dict itself if it maps names to real tensors, else a WeightsError saying which entry is not."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise WeightsError(f"a state dict's keys are names; found the key {_first_line(repr(key))}", file=shown)
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"'{key[:200]}' holds a {type(value).__name__}, not a tensor", file=shown)
        if value.is_meta:
            raise WeightsError(f"'{key[:200]}' is a meta tensor: it has a shape but no values", file=shown)
    return state


def load_weights(model: nn.Module, weights: Any, *, source: str = "weights") -> None:
    state = read_weights(weights)
    shown = str(weights) if isinstance(weights, str | Path) else None
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    # Loading would cast silently: complex values lose their imaginary part.
    wrong += [
        f"{k} (checkpoint {state[k].dtype}, model {expected[k].dtype})"
        for k in expected
        if k in state and state[k].is_complex() != expected[k].is_complex()
    ]
    if missing or unexpected or wrong:
        parts = []
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of the wrong shape", wrong)):
            if keys:
                listed = ", ".join(keys[:5]) + (f", ... ({len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{len(keys)} {what}: {listed}")
        raise WeightsError(
            "the weights do not fit the network: " + "; ".join(parts),
            file=shown,
            hint="module names come from the spec's labels; see docs/language.md, 'Naming'",
        )
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as error:  # a dtype that cannot become the model's (complex, say)
        raise WeightsError(f"cannot load the weights: {_first_line(error)}", file=shown) from None


def fold_for_inference(model: nn.Module) -> nn.Module:
    """Eval mode, every BN folded into the convolution before it, channels_last weights.

    Measured on the CPU (bench/torch_runtime.py): folding alone saves the BN passes;
    channels_last lets oneDNN pick its blocked convolution kernels, the larger gain.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for parent in list(model.modules()):
        children = list(parent.named_children())
        # Modules are registered in execution order, so a conv directly followed by
        # its BN is adjacent here, in a block as in a projection's Sequential.
        for (name, child), (next_name, following) in itertools.pairwise(children):
            if isinstance(child, nn.Conv2d) and isinstance(following, nn.BatchNorm2d):
                setattr(parent, name, fuse_conv_bn_eval(child, following))
                setattr(parent, next_name, nn.Identity())
    return model.to(memory_format=torch.channels_last)


def load(
    spec: Any,
    *,
    network: str | None = None,
    weights: Any = None,
    for_inference: bool = False,
    zero_init_residual: bool | None = None,
    checkpoint: str | None = None,
    device: torch.device | str | None = None,
    limits: Any = None,
    **params: Any,
) -> nn.Module:
    """Compile `spec` (a path, a shipped name, or a compiled Network) and build it on `device`."""
    if isinstance(spec, Network):
        compiled = spec
    else:
        from resdsl.compiler import compile

        compiled = compile(spec, network=network, limits=limits, **params)
    # With weights, a strict load sets every tensor, so initialising them first is wasted.
    model = build(
        compiled,
        checkpoint=checkpoint,
        zero_init_residual=zero_init_residual,
        device=device,
        initialise=weights is None,
    )
    model.resdsl_network = compiled.name
    if weights is not None:
        load_weights(model, weights)
    if for_inference:
        model = fold_for_inference(model)
    return model
