"""The layer kinds: typed IR node payloads, and how statements become them.

Each IR node's ``layer`` attribute is one of the frozen dataclasses below; its
``kind`` is the node kind (torch.fx keeps a similar small, fixed set of ops).
:data:`LAYER_KINDS` is the registry of kinds a spec may write: it maps the kind's
name to its argument schema and constructor, and lists the known names on a miss.
``zeropad`` and ``projection`` are not written in specs: the shortcut pass inserts
them where ``add shortcut`` needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import ClassVar

from resdsl import syntax as ast
from resdsl.errors import Pos, SpecError, unknown
from resdsl.evaluate import Value, as_bool, as_int, as_pair, as_probability, evaluate

Pair = tuple[int, int]
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Input:
    kind: ClassVar[str] = "input"
    shape: Shape


@dataclass(frozen=True)
class Output:
    kind: ClassVar[str] = "output"


@dataclass(frozen=True)
class Conv:
    kind: ClassVar[str] = "conv"
    kernel: Pair
    out_channels: int
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = False


@dataclass(frozen=True)
class BatchNorm:
    kind: ClassVar[str] = "bn"


@dataclass(frozen=True)
class ReLU:
    kind: ClassVar[str] = "relu"


@dataclass(frozen=True)
class MaxPool:
    kind: ClassVar[str] = "maxpool"
    kernel: Pair
    stride: Pair
    padding: Pair


@dataclass(frozen=True)
class AvgPool:
    """``avgpool`` alone is global (to 1x1); ``avgpool KxK`` is a windowed pool."""

    kind: ClassVar[str] = "avgpool"
    kernel: Pair | None = None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)

    @property
    def is_global(self) -> bool:
        return self.kernel is None


@dataclass(frozen=True)
class Linear:
    kind: ClassVar[str] = "fc"
    out_features: int
    bias: bool = True


@dataclass(frozen=True)
class Dropout:
    kind: ClassVar[str] = "dropout"
    p: float


@dataclass(frozen=True)
class Flatten:
    kind: ClassVar[str] = "flatten"


@dataclass(frozen=True)
class Add:
    """The residual join: main branch + shortcut (``add shortcut``)."""

    kind: ClassVar[str] = "add"


@dataclass(frozen=True)
class ZeroPad:
    """Option A's parameter-free shortcut: subsample by `stride`, append zero channels."""

    kind: ClassVar[str] = "zeropad"
    stride: Pair
    extra_channels: int


@dataclass(frozen=True)
class Projection:
    """Options B and C: a 1x1 convolution with the stride, then BN (torchvision's downsample)."""

    kind: ClassVar[str] = "projection"
    out_channels: int
    stride: Pair


Layer = (
    Input
    | Output
    | Conv
    | BatchNorm
    | ReLU
    | MaxPool
    | AvgPool
    | Linear
    | Dropout
    | Flatten
    | Add
    | ZeroPad
    | Projection
)

#: Every node kind of the IR, in the order the docs list them.
NODE_KINDS = tuple(cls.kind for cls in Layer.__args__)

# Building layers from statements --------------------------------------------


@dataclass(frozen=True)
class LayerKind:
    """A kind a spec may write: its positional and keyword arguments."""

    name: str
    positional: tuple[str, ...]  # required positional arguments, in order
    keywords: tuple[str, ...]  # optional keyword arguments
    build: Callable[[dict[str, tuple[Value, Pos]], Pos], Layer]
    optional_positional: tuple[str, ...] = ()
    usage: str = ""


def _same_padding(kernel: Pair, dilation: Pair = (1, 1)) -> Pair:
    return (dilation[0] * (kernel[0] // 2), dilation[1] * (kernel[1] // 2))


def _build_conv(args: dict[str, tuple[Value, Pos]], pos: Pos) -> Conv:
    kernel = as_pair(*args["kernel"], "the kernel size")
    out = as_int(*args["out"], "the number of output channels")
    stride = as_pair(*args["stride"], "stride") if "stride" in args else (1, 1)
    dilation = as_pair(*args["dilation"], "dilation") if "dilation" in args else (1, 1)
    padding = as_pair(*args["padding"], "padding", minimum=0) if "padding" in args else _same_padding(kernel, dilation)
    groups = as_int(*args["groups"], "groups") if "groups" in args else 1
    bias = as_bool(*args["bias"], "bias") if "bias" in args else False
    return Conv(kernel, out, stride, padding, dilation, groups, bias)


def _build_maxpool(args: dict[str, tuple[Value, Pos]], pos: Pos) -> MaxPool:
    kernel = as_pair(*args["kernel"], "the kernel size")
    stride = as_pair(*args["stride"], "stride") if "stride" in args else (1, 1)
    padding = as_pair(*args["padding"], "padding", minimum=0) if "padding" in args else _same_padding(kernel)
    return MaxPool(kernel, stride, padding)


def _build_avgpool(args: dict[str, tuple[Value, Pos]], pos: Pos) -> AvgPool:
    if "kernel" not in args:
        for name in ("stride", "padding"):
            if name in args:
                raise SpecError(
                    f"the global avgpool takes no {name}", args[name][1], "give a kernel: avgpool 7x7, stride=1"
                )
        return AvgPool()
    kernel = as_pair(*args["kernel"], "the kernel size")
    stride = as_pair(*args["stride"], "stride") if "stride" in args else (1, 1)
    padding = as_pair(*args["padding"], "padding", minimum=0) if "padding" in args else (0, 0)
    return AvgPool(kernel, stride, padding)


def _build_fc(args: dict[str, tuple[Value, Pos]], pos: Pos) -> Linear:
    out = as_int(*args["out"], "the number of outputs")
    bias = as_bool(*args["bias"], "bias") if "bias" in args else True
    return Linear(out, bias)


def _build_dropout(args: dict[str, tuple[Value, Pos]], pos: Pos) -> Dropout:
    return Dropout(as_probability(*args["p"], "the dropout probability"))


LAYER_KINDS: dict[str, LayerKind] = {
    kind.name: kind
    for kind in (
        LayerKind(
            "conv",
            ("kernel", "out"),
            ("stride", "padding", "dilation", "groups", "bias"),
            _build_conv,
            usage="conv KxK, OUT[, stride=S, padding=P, dilation=D, groups=G, bias=true]",
        ),
        LayerKind("bn", (), (), lambda args, pos: BatchNorm(), usage="bn"),
        LayerKind("relu", (), (), lambda args, pos: ReLU(), usage="relu"),
        LayerKind(
            "maxpool", ("kernel",), ("stride", "padding"), _build_maxpool, usage="maxpool KxK[, stride=S, padding=P]"
        ),
        LayerKind(
            "avgpool",
            (),
            ("stride", "padding"),
            _build_avgpool,
            optional_positional=("kernel",),
            usage="avgpool (global) or avgpool KxK[, stride=S, padding=P]",
        ),
        LayerKind("fc", ("out",), ("bias",), _build_fc, usage="fc OUT[, bias=false]"),
        LayerKind("dropout", ("p",), (), _build_dropout, usage="dropout P"),
        LayerKind("flatten", (), (), lambda args, pos: Flatten(), usage="flatten"),
    )
}

#: The one statement that is not a layer kind of its own: the residual join.
ADD_SHORTCUT = "add"

#: Other frameworks' names for our layer kinds: no spelling distance leads from
#: "batchnorm" to "bn", so users coming from PyTorch or Keras get told directly.
SYNONYMS = {
    "batchnorm": "bn",
    "batchnorm2d": "bn",
    "batch_norm": "bn",
    "bn2d": "bn",
    "linear": "fc",
    "dense": "fc",
    "conv2d": "conv",
    "convolution": "conv",
    "maxpool2d": "maxpool",
    "max_pool": "maxpool",
    "avgpool2d": "avgpool",
    "avg_pool": "avgpool",
    "adaptiveavgpool2d": "avgpool",
    "shortcut": "add",
    "residual": "add",
}


def build_layer(statement: ast.Statement, env: Mapping[str, Value]) -> Layer:
    """Evaluate a layer statement's arguments in `env` and build its typed layer."""
    if statement.kind == ADD_SHORTCUT:
        return _build_add(statement)
    kind = LAYER_KINDS.get(statement.kind)
    if kind is None:
        raise unknown(
            "layer kind",
            statement.kind,
            [*LAYER_KINDS, ADD_SHORTCUT],
            statement.kind_pos,
            guess=SYNONYMS.get(statement.kind.lower()),
        )
    names = kind.positional + kind.optional_positional
    values: dict[str, tuple[Value, Pos]] = {}
    positional_seen = 0
    for arg in statement.args:
        if isinstance(arg, ast.Positional):
            if positional_seen >= len(names):
                raise SpecError(
                    f"too many arguments for {kind.name}: takes {len(kind.positional) or 'none'} before keywords",
                    arg.pos,
                    f"write: {kind.usage}",
                )
            values[names[positional_seen]] = (evaluate(arg.value, env), arg.value.pos)
            positional_seen += 1
        else:
            if arg.name not in kind.keywords:
                err = unknown("keyword argument", arg.name, kind.keywords, arg.name_pos, of=kind.name)
                if not kind.keywords:
                    err.hint = f"{kind.name} takes no keywords"
                raise err
            if arg.name in values:
                raise SpecError(f"{arg.name} is given twice", arg.name_pos)
            values[arg.name] = (evaluate(arg.value, env), arg.value.pos)
    missing = [name for name in kind.positional if name not in values]
    if missing:
        wanted = " and ".join(_ARGUMENT_NAMES.get(name, name) for name in missing)
        raise SpecError(f"{kind.name} needs {wanted}", statement.pos, f"write: {kind.usage}")
    return kind.build(values, statement.pos)


#: How a missing positional argument is named in "conv needs ...".
_ARGUMENT_NAMES = {"kernel": "a kernel size (KxK)", "out": "an output size (OUT)", "p": "a probability (P)"}


def _build_add(statement: ast.Statement) -> Add:
    args = statement.args
    value = args[0].value if len(args) == 1 and isinstance(args[0], ast.Positional) else None
    if not (isinstance(value, ast.Name) and value.id == "shortcut"):
        raise SpecError("the residual join is written 'add shortcut'", statement.pos, "write: add shortcut")
    return Add()
