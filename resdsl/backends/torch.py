"""Torch backend: the IR becomes a ``torch.nn.Module``.

The module tree follows the IR's names (top-level layers as attributes, stage ``S``
a :class:`~resdsl.backends.torch_modules.Stage` of blocks ``S.0, S.1``..., dotted
names nested as paths), so ``state_dict()`` keys are the spec's. Forward code is
generated once per distinct block structure, as torch.fx's codegen does: a
straight-line function of module calls and joins (``+``, ``*``, ``torch.cat``) over
the IR's dataflow, so that eager speed equals hand-written code and
``torch.compile``, ``torch.export`` and ONNX export see plain Python.

Two decisions come from the IR's dataflow, never from module order: an operation
runs in place (ReLU, ``+=``) only where no later node reads the value it overwrites
and autograd kept no reference to it; and a BN folds into a convolution for
inference only where that convolution alone feeds it and nothing else reads the
convolution.

The generated text holds module paths made of segments that the naming pass
validated (identifiers that are not keywords, or numbers), quoted with ``repr``
where they are not identifiers, and fixed templates; nothing from a spec is
evaluated.
"""

from __future__ import annotations

import inspect
import itertools
import keyword
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from resdsl.backends.torch_modules import Container, Stage, resolve
from resdsl.backends.torch_modules import ZeroPadShortcut as ZeroPadShortcut
from resdsl.errors import LimitError
from resdsl.ir import BlockInstance, Network
from resdsl.layers import Ctor, Input, Layer, Output
from resdsl.passes.parallel_paths import ParallelPathFold
from resdsl.passes.rewrite import BatchNormFold

CHECKPOINT_OPTIONS = ("none", "stage", "block")


def _segment_ok(segment: str) -> bool:
    return segment.isdigit() or (segment.isidentifier() and not keyword.iskeyword(segment))


def _access(path: str, root: str = "self") -> str:
    """Python that reaches a submodule: ``self.layer1`` or ``getattr(self.stages, '0')``."""
    expression = root
    for segment in path.split("."):
        if not _segment_ok(segment):  # the naming pass guarantees this
            raise ValueError(f"module path {path!r} has a segment that is not a name or a number")
        expression = f"{expression}.{segment}" if segment.isidentifier() else f"getattr({expression}, {segment!r})"
    return expression


def install(root: nn.Module, path: str, module: nn.Module | nn.Parameter) -> None:
    """Register `module` (or a node's lone tensor) at the dotted `path` under `root`,
    making containers on the way."""
    *parents, last = path.split(".")
    parent = root
    for segment in parents:
        child = parent._modules.get(segment)
        if child is None:
            child = Container()
            parent.add_module(segment, child)
        parent = child
    if isinstance(module, nn.Parameter):
        parent.register_parameter(last, module)
    else:
        parent.add_module(last, module)


# Steps: what the generated forward does ---------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One line of a generated forward: ``target = op(inputs)``.

    ``op`` is ``call`` (the module at ``module``, given every input), ``join`` (the
    kind ``layer``'s own expression: a join, a split's part, a weighted sum),
    ``inplace`` (the join's in-place operator, into its first input), ``tensor`` (the
    kind's ``tensor_expression`` of the input and the tensor at ``module``: a layer
    scale, a learned token, a position embedding) or ``alias`` (no code: the target
    is the input).
    """

    target: str
    op: str
    inputs: tuple[str, ...]
    module: str | None = None
    layer: Layer | None = None  # the kind, for ``join``, ``inplace`` and ``tensor``
    #: For ``tensor``: the input's shape (the expression may depend on its layout).
    shape: tuple[int, ...] = ()


def forward_source(steps: list[Step], result: str) -> str:
    """The generated forward. A value's name is reused once its last reader has run,
    as hand-written code reuses ``out``: the old tensor is released at once instead of
    living until the function returns, which matters for peak memory."""
    last_use: dict[str, int] = {}
    for index, step in enumerate(steps):
        for name in step.inputs:
            last_use[name] = index
    last_use[result] = len(steps)
    current: dict[str, str] = {"x": "x"}  # step variable -> the Python name holding it
    lines = ["def forward(self, x):"]
    for index, step in enumerate(steps):
        names = [current[name] for name in step.inputs]
        if step.op == "alias":
            current[step.target] = names[0]
            continue
        if step.op == "inplace":
            current[step.target] = names[0]
            lines.append(f"    {names[0]} {step.layer.in_place_operator} {names[1]}")
            continue
        free = [current[name] for name in step.inputs if last_use.get(name) == index and current[name] != "x"]
        # Reuse a freed name, unless another live value still holds the same tensor (an alias).
        live_names = {current[name] for name, use in last_use.items() if use > index and name in current}
        free = [name for name in free if name not in live_names]
        target = current[step.target] = free[0] if free else step.target
        if step.op == "call":
            lines.append(f"    {target} = {_access(step.module)}({', '.join(names)})")
        elif step.op == "tensor":
            lines.append(f"    {target} = {step.layer.tensor_expression(names[0], _access(step.module), step.shape)}")
        elif step.op == "join":
            lines.append(f"    {target} = {step.layer.forward_expression(names)}")
        else:  # pragma: no cover - the planner makes only the ops above
            raise ValueError(f"unknown step {step.op!r}")
    lines.append(f"    return {current[result]}")
    return "\n".join(lines) + "\n"


_CLASSES: dict[tuple[str, str], type] = {}


def _generated_class(kind: str, source: str) -> type:
    """One nn.Module subclass per distinct forward (cached: blocks of a stage share one)."""
    key = (kind, source)
    if key not in _CLASSES:
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<resdsl {kind}>", "exec"), {"torch": torch}, namespace)
        cls = type(_class_name(kind), (nn.Module,), {"forward": namespace["forward"], "__module__": __name__})
        cls._resdsl_source = source
        _CLASSES[key] = cls
    return _CLASSES[key]


#: Producers whose output may be overwritten in place: autograd kept no reference to
#: it (ReLU and sigmoid keep their outputs) and it is not another value's alias.
def _writable(layer: Layer) -> bool:
    return not layer.graph_end and not layer.aliases_input and not layer.saves_output


class _Planner:
    """Reads the IR once: every module's constructor and every forward's steps."""

    def __init__(self, network: Network) -> None:
        self.network = network
        self.graph = network.graph
        self.order_index = {node: index for index, node in enumerate(network.order())}

    def ctor(self, node: int, in_place: bool) -> Ctor | None:
        typed = self.graph.node(node)
        inputs = [self.graph.node(source).shape for source in typed.inputs]
        ctor = typed.layer.constructor(inputs)
        if ctor is not None and in_place and typed.layer.runs_in_place:
            ctor = Ctor(ctor.name, ctor.args, (*ctor.kwargs, ("inplace", True)))
        return ctor

    def in_place_ok(self, node: int, operand: int, local: set[int]) -> bool:
        """Whether `node` may overwrite `operand`'s value: nothing else reads it, it was
        made in this function, and autograd did not keep it."""
        users = self.graph.node(operand).users
        return operand in local and users == (node,) and _writable(self.graph.node(operand).layer)

    def step(
        self, node: int, target: str, value: dict[int, str], local: set[int], strip: str = ""
    ) -> tuple[Step, tuple[str, Ctor] | None]:
        """The forward line of one node, and the module it calls (named without `strip`), if any."""
        typed = self.graph.node(node)
        inputs = typed.inputs
        names = tuple(value[source] for source in inputs)
        layer = typed.layer
        if layer.is_join:
            in_place = layer.in_place_operator is not None and len(inputs) == 2 and inputs[0] != inputs[1]
            if in_place and self.in_place_ok(node, inputs[0], local):
                return Step(target, "inplace", names, layer=layer), None
            return Step(target, "join", names, layer=layer), None
        if layer.computed_inline:
            return Step(target, "join", names, layer=layer), None
        # A module that takes several inputs may overwrite none of them.
        ctor = self.ctor(node, len(inputs) == 1 and self.in_place_ok(node, inputs[0], local))
        if ctor is None:  # identity, output: the value itself
            return Step(target, "alias", names), None
        name = typed.name.removeprefix(strip)
        if layer.holds_tensor:
            return Step(target, "tensor", names, name, layer, self.graph.node(inputs[0]).shape), (name, ctor)
        return Step(target, "call", names, name), (name, ctor)

    def steps(
        self, nodes: list[int], entry: int, strip: str
    ) -> tuple[list[Step], list[tuple[str, Ctor]], dict[int, str]]:
        """Steps and modules for `nodes` (in execution order) whose outside input is `entry`."""
        value = {entry: "x"}
        local: set[int] = set()
        steps: list[Step] = []
        modules: list[tuple[str, Ctor]] = []
        for index, node in enumerate(nodes):
            target = f"v{index}"
            step, module = self.step(node, target, value, local, strip)
            steps.append(step)
            if module is not None:
                modules.append(module)
            value[node] = target
            local.add(node)
        return steps, modules, value


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
    planner = _Planner(network)
    order = network.order()
    stage_blocks: dict[str, list[BlockInstance]] = {}
    for block in network.stage_blocks():
        stage_blocks.setdefault(block.stage, []).append(block)
    in_stage = {node for block in network.stage_blocks() for node in block.nodes}

    plans: dict[str, list[BlockPlan]] = {}
    for stage, blocks in stage_blocks.items():
        for block in blocks:
            members = set(block.nodes)
            nodes = [node for node in order if node in members]
            steps, modules, value = planner.steps(nodes, block.entry, block.path + ".")
            forward = forward_source(steps, value[block.exit])
            plans.setdefault(stage, []).append(BlockPlan(block.type, forward, modules))

    # The top level: its own layers, and each stage as one call.
    (entry,) = [node.id for node in graph.walk(Input.kind)]
    value = {entry: "x"}
    local: set[int] = set()
    steps: list[Step] = []
    items: list[tuple[str, Ctor | list[BlockPlan]]] = []
    stage_done: set[str] = set()
    for node in order:
        if node == entry:
            continue
        target = f"v{len(steps)}"
        if node in in_stage:
            stage = graph.node(node).scope.stage
            if stage in stage_done:
                continue
            stage_done.add(stage)
            blocks = stage_blocks[stage]
            items.append((stage, plans[stage]))
            steps.append(Step(target, "call", (value[blocks[0].entry],), stage))
            value[blocks[-1].exit] = target
            continue
        step, module = planner.step(node, target, value, local)
        steps.append(step)
        if module is not None:
            items.append(module)
        value[node] = target
        local.add(node)
    (output,) = [node.id for node in graph.walk(Output.kind)]
    return ModelPlan(_class_name(network.name), forward_source(steps, value[output]), items)


def _instantiate(ctor: Ctor) -> nn.Module:
    return resolve(ctor.name)(*ctor.args, **dict(ctor.kwargs))


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
                install(model, name, _instantiate(item))
                continue
            blocks = []
            for block_plan in item:
                block = _generated_class(block_plan.kind, block_plan.forward)()
                for local, ctor in block_plan.modules:
                    install(block, local, _instantiate(ctor))
                blocks.append(block)
            install(model, name, Stage(*blocks, checkpoint=mode))
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
    from resdsl.backends import torch_modules

    model_plan = plan(network)
    classes: dict[str, str] = {}  # forward source -> class name
    taken = {"Model", "Stage", *torch_modules.CUSTOM_MODULES}
    used = {"Container", "Stage"}
    for _, item in model_plan.items:
        ctors = [item] if isinstance(item, Ctor) else [ctor for plan_ in item for _, ctor in plan_.modules]
        used |= {ctor.name for ctor in ctors if not ctor.name.startswith("nn.")}
    lines = [
        # The network's name and the spec's path are text from outside: they reach the
        # generated source only as the repr of a str, which Python reads back as that str.
        repr(f"{network.name}: generated by resdsl from {network.path}. Imports only torch."),
        "",
        "import torch",
        "from torch import nn",
        "from torch.utils.checkpoint import checkpoint as _checkpoint",
    ]
    for name, cls in (*torch_modules.CUSTOM_MODULES.items(), *torch_modules.TENSOR_FACTORIES.items()):
        if name in used:
            lines += ["", "", inspect.getsource(cls).rstrip()]
    lines += [
        "",
        "",
        "def _install(root, path, module):",
        "    *parents, last = path.split('.')",
        "    for segment in parents:",
        "        if segment not in root._modules:",
        "            root.add_module(segment, Container())",
        "        root = root._modules[segment]",
        "    if isinstance(module, nn.Parameter):",
        "        root.register_parameter(last, module)",
        "    else:",
        "        root.add_module(last, module)",
        "",
        "",
        "def _block(block, *modules):",
        "    for path, module in modules:",
        "        _install(block, path, module)",
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
            lines.append(f"        _install(self, {name!r}, {item.source()})")
            continue
        lines.append(f"        _install(self, {name!r}, Stage(")
        for block_plan in item:
            lines.append(f"            _block(\n                {classes[block_plan.forward]}(),")
            for local, ctor in block_plan.modules:
                lines.append(f"                ({local!r}, {ctor.source()}),")
            lines.append("            ),")
        lines.append("        ))")
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
    """Every parameter and buffer, once, by its layer kind: the modules were allocated
    uninitialised."""
    graph = network.graph
    modules = dict(model.named_modules())
    tensors = dict(model.named_parameters())
    done: set[str] = set()
    for node in graph.walk():
        if node.layer.holds_tensor:
            node.layer.initialise(tensors[node.name])
            done.add(node.name)
            continue
        module = modules.get(node.name)
        if module is None or node.name in done:
            continue
        node.layer.initialise(module)
        # A kind's module may hold others (attention's qkv and proj): the kind initialises them.
        done.update(f"{node.name}.{child}" if child else node.name for child, _ in module.named_modules())
    for name, module in modules.items():
        if name in done or isinstance(module, Container | Stage) or module is model:
            continue
        own = itertools.chain(
            (f"{name}.{key}" if name else key for key, _ in module.named_parameters(recurse=False)),
            (f"{name}.{key}" if name else key for key, _ in module.named_buffers(recurse=False)),
        )
        if any(key not in done for key in own):
            # A module no layer kind owns would keep uninitialised memory.
            raise TypeError(f"no initialisation for {name} ({type(module).__name__})")  # pragma: no cover
    if zero_init_residual:
        for block in network.blocks:
            if block.join is None:
                continue
            main = graph.node(graph.node(block.join).inputs[0])
            if main.layer.is_norm:
                nn.init.zeros_(modules[main.name].weight)


def fold_for_inference(model: nn.Module, network: Network) -> nn.Module:
    """The model rebuilt from the inference IR (:func:`resdsl.passes.for_inference`:
    each sum of parallel linear paths folded into one convolution, then each foldable
    BN into its convolution), with the weights those rewrites call for, in eval mode
    and channels_last. Its ``.network`` is the rewritten IR, so its table and figures
    describe what it computes.

    Measured on the CPU (bench/torch_runtime.py): folding saves the BN passes;
    channels_last lets oneDNN pick its blocked convolution kernels.
    """
    from resdsl.passes import for_inference

    model.eval()
    folded_network = for_inference(network)
    state = model.state_dict()
    first = next(iter(state.values()), None)
    dtype = first.dtype if first is not None else torch.get_default_dtype()
    device = first.device if first is not None else None
    for record in folded_network.rewrites[len(network.rewrites) :]:
        state = WEIGHT_TRANSFORMS[type(record)](record, state)
    folded = build(folded_network, device=device, initialise=False).to(dtype)
    folded.load_state_dict({key: value.to(dtype) for key, value in state.items()})
    folded.network = folded_network
    return folded.eval().to(memory_format=torch.channels_last)


def fold_parallel_paths(model: nn.Module, network: Network) -> tuple[nn.Module, Network]:
    """The model rebuilt from the IR with every sum of parallel linear paths folded into
    one convolution (resdsl.passes.parallel_paths), and that IR; in eval mode, it
    computes what `model` computes in eval mode. The folded weights are computed in
    float64 and stored in the model's dtype."""
    from resdsl.passes import apply_rewrite
    from resdsl.passes.parallel_paths import fold_parallel_paths as rewrite

    folded_network = apply_rewrite(network, rewrite)
    state = model.state_dict()
    first = next(iter(state.values()))
    for record in folded_network.rewrites[len(network.rewrites) :]:
        state = WEIGHT_TRANSFORMS[type(record)](record, state)
    folded = build(folded_network, device=first.device, initialise=False).to(first.dtype)
    folded.load_state_dict({key: value.to(first.dtype) for key, value in state.items()})
    folded.network = folded_network
    return folded.eval(), folded_network


def _float64(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    return state[key].to(torch.float64)


def _bn_scale_shift(state: Mapping[str, torch.Tensor], prefix: str, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A BN in eval mode as y = x * scale + shift, in float64."""
    scale = _float64(state, f"{prefix}.weight") / (_float64(state, f"{prefix}.running_var") + eps).sqrt()
    shift = _float64(state, f"{prefix}.bias") - _float64(state, f"{prefix}.running_mean") * scale
    return scale, shift


def _without(state: Mapping[str, torch.Tensor], prefixes: set[str]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in state.items() if key.rpartition(".")[0] not in prefixes}


def _fold_batch_norm_weights(record: Any, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNormFold: the convolution's weight scaled per output channel, the BN's shift its bias."""
    scale, shift = _bn_scale_shift(state, record.norm, record.eps)
    weight = _float64(state, f"{record.conv}.weight")
    bias = _float64(state, f"{record.conv}.bias") if record.had_bias else torch.zeros_like(scale)
    result = _without(state, {record.norm, record.conv})
    result[f"{record.conv}.weight"] = weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    result[f"{record.conv}.bias"] = bias * scale + shift
    return result


def _fold_parallel_weights(record: Any, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ParallelPathFold: each path as a convolution of the source (a pool's kernel is
    1 / K^2 on its channel, the identity's 1 at the centre), scaled by its BN,
    zero-padded into the largest kernel, summed."""
    conv, channels = record.layer, record.in_channels
    weight = torch.zeros(conv.out_channels, channels // conv.groups, *conv.kernel, dtype=torch.float64)
    bias = torch.zeros(conv.out_channels, dtype=torch.float64)
    gone = set()
    for term in record.terms:
        if term.conv is not None:
            w = _float64(state, f"{term.conv}.weight")
            b = state.get(f"{term.conv}.bias")
            b = b.to(torch.float64) if b is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            gone.add(term.conv)
        else:
            # The identity, a BN or a pool: one channel to itself (a depthwise kernel).
            kh, kw = term.kernel
            w = torch.full((channels, 1, kh, kw), 1.0 / (kh * kw), dtype=torch.float64)
            b = torch.zeros(channels, dtype=torch.float64)
        if term.norm is not None:
            scale, shift = _bn_scale_shift(state, term.norm, term.eps)
            w = w * scale[:, None, None, None]
            b = b * scale + shift
            gone.add(term.norm)
        w = _regroup(w, term.groups, conv.groups, channels)
        top, left = conv.padding[0] - term.padding[0], conv.padding[1] - term.padding[1]
        weight[:, :, top : top + term.kernel[0], left : left + term.kernel[1]] += w
        bias += b
    result = _without(state, gone)
    result[f"{record.conv}.weight"] = weight
    result[f"{record.conv}.bias"] = bias
    return result


#: How each IR rewrite's record (resdsl.passes.rewrite) changes the weights: the torch
#: backend's table, so that a rewrite needs no torch and a new backend no rewrite's code.
WEIGHT_TRANSFORMS: dict[type, Callable[[Any, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]] = {
    BatchNormFold: _fold_batch_norm_weights,
    ParallelPathFold: _fold_parallel_weights,
}


def _regroup(weight: torch.Tensor, groups: int, target: int, in_channels: int) -> torch.Tensor:
    """A grouped convolution's weight as one with fewer groups (`target` divides
    `groups`): block-diagonal, zero where an output channel did not read an input."""
    if groups == target:
        return weight
    out_channels = weight.shape[0]
    wide = weight.new_zeros(out_channels, in_channels // target, *weight.shape[2:])
    out_per, in_per = out_channels // groups, in_channels // groups
    out_per_target, in_per_target = out_channels // target, in_channels // target
    for group in range(groups):
        rows = slice(group * out_per, (group + 1) * out_per)
        start = group * in_per - (group * out_per // out_per_target) * in_per_target
        wide[rows, start : start + in_per] = weight[rows]
    return wide


def _replace_module(model: nn.Module, path: str, module: nn.Module) -> None:
    *parents, last = path.split(".")
    parent = model
    for segment in parents:
        parent = parent._modules[segment]
    parent._modules[last] = module
