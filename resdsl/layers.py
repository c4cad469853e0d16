"""The layer kinds: one class per kind, owning everything about it.

Each IR node's ``layer`` attribute is an instance of one of the frozen dataclasses
below, and ``layer.kind`` is the node kind (torch.fx keeps a similar small set of
ops). A kind's class is the one place that says, for that kind:

- how a spec writes it: :attr:`Layer.arguments`, its schema, and :attr:`Layer.usage`;
- its shape rule (:meth:`Layer.output_shape`) and its cost (:meth:`Layer.cost`);
- how the torch backend builds it (:meth:`Layer.constructor`, a :class:`Ctor` naming a
  class that :mod:`resdsl.backends.torch_modules` resolves) and initialises it
  (:meth:`Layer.initialise`);
- what it computes, written independently with ``torch.nn.functional``
  (:meth:`Layer.reference`, run by the reference interpreter :mod:`resdsl.interpret`);
- its label in figures (:meth:`Layer.figure_label`).

A class is its own registration (as sqlglot's expressions are): defining a subclass
with ``spelled = True`` adds it to :data:`LAYER_KINDS`, which lists the known names on
a miss. The torch-facing methods import torch when called, so this module (and
``import resdsl``) never does. Joins (``add``, ``mul``, ``cat``), ``zeropad``,
``input`` and ``output`` are node kinds that specs do not write as layers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from resdsl import syntax as ast
from resdsl.errors import Pos, SpecError, unknown
from resdsl.evaluate import Value, as_bool, as_float, as_int, as_pair, as_probability, evaluate

Pair = tuple[int, int]
Shape = tuple[int, ...]


class Tokens(tuple):
    """The shape of a token sequence: ``(N, C)``, N tokens of C channels, the channel
    axis last (timm's B x N x C without the batch). Leading axes group sequences that
    are attended separately (heads, windows): ``(H, N, C)``.

    A tuple, so it compares equal to the plain tuple of its sizes; its type is the
    layout, which every pass, table, figure and hover reads through :func:`layout`.
    A feature map is a plain ``(C, H, W)`` and a flat vector a plain ``(F,)``.

    ``grid`` is the H x W of the feature map that ``tokens`` made the sequence from,
    kept by the kinds that keep the tokens (a per-token ``fc``, ``ln``, attention, the
    joins) and lost where the tokens change (a learned token, ``take``, ``transpose``):
    ``grid`` without a size and spatial-reduction attention read it. It takes no part in
    equality, as a tuple's sizes alone are compared.
    """

    grid: Pair | None = None

    def __new__(cls, sizes: tuple[int, ...], grid: Pair | None = None) -> Tokens:
        shape = super().__new__(cls, sizes)
        if grid is not None:
            shape.grid = grid
        return shape

    def __repr__(self) -> str:
        grid = f", grid={self.grid!r}" if self.grid is not None else ""
        return f"Tokens({tuple(self)!r}{grid})"

    def __reduce__(self) -> tuple:
        return (Tokens, (tuple(self), self.grid))


def _has_grid(shape: Shape) -> bool:
    """Whether a shape is a grid of tokens: a sequence that ``tokens`` made from a feature
    map and that kept its H x W (``window=`` attention, ``merge_patches``, ``sr_ratio``
    and ``grid`` without a size read it)."""
    return isinstance(shape, Tokens) and shape.grid is not None


def layout(shape: Shape) -> str:
    """``"tokens"``, ``"map"`` (C x H x W) or ``"flat"``."""
    if isinstance(shape, Tokens):
        return "tokens"
    return "map" if len(shape) == 3 else "flat"


def channels(shape: Shape) -> int:
    """The channel count: a token sequence's last axis, a map's or a vector's first."""
    return shape[-1] if isinstance(shape, Tokens) else shape[0]


def shape_text(shape: Shape) -> str:
    """A shape as tables, hovers and errors print it: ``64x56x56``, ``197 x 192 tokens``."""
    if _has_grid(shape):
        return " x ".join(map(str, shape)) + f" tokens ({shape.grid[0]}x{shape.grid[1]})"
    if isinstance(shape, Tokens):
        return " x ".join(map(str, shape)) + " tokens"
    return "x".join(map(str, shape))


#: Every node kind, spelled or not, in definition order (the docs list them so).
NODE_KINDS: dict[str, type[Layer]] = {}
#: The kinds a spec may write as a layer statement.
LAYER_KINDS: dict[str, type[Layer]] = {}
#: The joins, written as a branch (``mul { ... }``): every kind whose ``is_join`` is set.
JOINS: dict[str, type[Layer]] = {}


class ShapeProblem(Exception):
    """A shape rule's complaint; the shape pass reports it as a ShapeError at the node."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Ctor:
    """How the torch backend constructs one module: a class name that
    :func:`resdsl.backends.torch_modules.resolve` knows, and its arguments. One
    description serves the built model and the exported .py source alike."""

    name: str
    args: tuple = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def source(self) -> str:
        parts = [repr(arg) for arg in self.args] + [f"{key}={value!r}" for key, value in self.kwargs]
        return f"{self.name}({', '.join(parts)})"


@dataclass(frozen=True)
class Argument:
    """One argument of a layer kind: its name (the keyword, and the dataclass field),
    how its value is checked, and whether it may or must be written positionally."""

    name: str
    convert: Callable[[Value, Pos, str], Any]
    what: str
    positional: bool = False
    required: bool = False
    #: The words it takes as written (``mode=bilinear``): a word, not a value, so no name lookup.
    words: tuple[str, ...] = ()


def _pair(minimum: int | None = 1) -> Callable[[Value, Pos, str], Pair]:
    return lambda value, pos, what: as_pair(value, pos, what, minimum=minimum)


def _positive_float(value: Value, pos: Pos, what: str) -> float:
    number = as_float(value, pos, what)
    if number <= 0:
        raise SpecError(f"{what} must be positive, got {number:g}", pos)
    return number


def _fraction(value: Value, pos: Pos, what: str) -> float:
    number = as_float(value, pos, what)
    if not 0 <= number <= 1:
        raise SpecError(f"{what} must be a number from 0 to 1, got {number:g}", pos)
    return number


def _int(minimum: int | None = 1) -> Callable[[Value, Pos, str], int]:
    return lambda value, pos, what: as_int(value, pos, what, minimum=minimum)


@dataclass(frozen=True)
class Layer:
    """The base of every node kind."""

    kind: ClassVar[str] = ""
    #: Whether specs write this kind as a layer statement.
    spelled: ClassVar[bool] = False
    arguments: ClassVar[tuple[Argument, ...]] = ()
    usage: ClassVar[str] = ""
    #: A statement that uses the kind (tests/test_kinds.py builds and checks it). A kind that
    #: is not a layer statement (a join, split, weighted) writes its statements after two
    #: values, ``a`` and ``b`` (C x H x W, the same shape), are named; ``b`` is current.
    example: ClassVar[str] = ""
    #: Further statements for options that change what the kind computes, checked as `example` is.
    variants: ClassVar[tuple[str, ...]] = ()
    #: The output is the input itself (a view or the same tensor): never overwrite it in place.
    aliases_input: ClassVar[bool] = False
    #: Autograd keeps the output for backward (ReLU, sigmoid): never overwrite it in place.
    saves_output: ClassVar[bool] = False
    #: How many inputs the node takes (None: two or more, for joins).
    arity: ClassVar[int | None] = 1
    #: A normalisation layer: what the ``norm`` setting replaces.
    is_norm: ClassVar[bool] = False
    #: The node is one tensor, not a module: its name is the tensor's key in the
    #: enclosing module (``layerscale``). Its constructor names a tensor factory.
    holds_tensor: ClassVar[bool] = False
    #: An activation: what the ``act`` setting may name.
    is_activation: ClassVar[bool] = False
    #: A join of two or more values, written as a branch (``mul { ... }``); its
    #: :meth:`forward_expression` is the generated forward's code for it.
    is_join: ClassVar[bool] = False
    #: Computed by the generated forward's own code (:meth:`forward_expression`), with no
    #: module, though not written as a branch: a split's part, a weighted sum.
    computed_inline: ClassVar[bool] = False
    #: Counts as a layer of the network's depth (the "34" of ResNet-34) on the main path.
    counts_as_layer: ClassVar[bool] = False
    #: Builds a module (and so owns its name: two nodes of such kinds may not share one).
    builds_module: ClassVar[bool] = True
    #: An end of the graph (input, output): it has no stage and no row in tables.
    graph_end: ClassVar[bool] = False
    #: The name every node of this kind has (``input``), instead of a numbered one.
    fixed_name: ClassVar[str | None] = None
    #: Its module takes ``inplace=True``, used where nothing else reads its input.
    runs_in_place: ClassVar[bool] = False
    #: A join's in-place operator (``+=``), used where nothing else reads its first input.
    in_place_operator: ClassVar[str | None] = None
    #: How a figure shows it at layer detail: ``"box"`` (a box of its own, as Fig. 3
    #: draws convolutions, pools and fc), ``"marker"`` (a dashed marker: drop path),
    #: ``"join"`` (where a side branch comes back) or ``"fold"`` (into the box above).
    figure: ClassVar[str] = "fold"
    #: A box's fill in figures: ``"width"`` (by output channels), ``"fc"`` or ``"pool"``.
    figure_fill: ClassVar[str] = "pool"

    def __init_subclass__(cls, register: bool = True, **kwargs: Any) -> None:
        # register=False: a kind made outside the language (a test's, a tool's), known to no registry.
        super().__init_subclass__(**kwargs)
        if cls.kind and register:
            NODE_KINDS[cls.kind] = cls
            if cls.spelled:
                LAYER_KINDS[cls.kind] = cls
            if cls.is_join:
                JOINS[cls.kind] = cls

    @classmethod
    def from_arguments(cls, values: Mapping[str, tuple[Value, Pos]], pos: Pos) -> Layer:
        """The layer for checked argument values; a kind with derived defaults overrides this."""
        converted = {
            argument.name: argument.convert(*values[argument.name], argument.what)
            for argument in cls.arguments
            if argument.name in values
        }
        return cls(**converted)

    # Shapes and cost ---------------------------------------------------------------

    def for_input(self, shape: Shape) -> Layer:
        """The layer for an input of `shape`: a kind whose computation depends on its
        input's layout (a softmax over a token sequence's last axis) records it here,
        so that its module, reference and generated code need not guess from a rank."""
        return self

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return inputs[0]

    def cost(self, inputs: list[Shape], output: Shape) -> tuple[int, int]:
        """(trainable parameters, multiply-accumulates for one input). MACs count
        convolutions and fully connected layers only (the paper's convention)."""
        return 0, 0

    # Torch ------------------------------------------------------------------------

    def constructor(self, inputs: list[Shape]) -> Ctor | None:
        """The module to build, or None where the generated forward computes the node inline."""
        return None

    def initialise(self, module: Any) -> None:
        """Set every parameter and buffer of a freshly allocated module."""
        if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
            module.reset_parameters()

    def reference(self, inputs: list[Any], tensors: Mapping[str, Any], training: bool) -> Any:
        """What the node computes, with torch.nn.functional and the module's tensors."""
        raise NotImplementedError(self.kind)  # pragma: no cover - every kind overrides it

    # Figures ----------------------------------------------------------------------

    def forward_expression(self, names: list[str]) -> str:
        """A join's (or another inline kind's) code in the generated forward, over the
        Python names of its inputs."""
        raise NotImplementedError(self.kind)  # pragma: no cover - every join overrides it

    def tensor_expression(self, value: str, tensor: str, shape: Shape) -> str:
        """A kind that holds one tensor: its code in the generated forward, given the
        input's Python name, the tensor's attribute access and the input's shape."""
        raise NotImplementedError(self.kind)  # pragma: no cover - every holds_tensor kind overrides it

    def figure_label(self) -> str:
        return self.kind

    def kernel_text(self) -> str:
        """The kernel's size as tables print it ("3x3"), or "" for a kind without a kernel."""
        return ""

    def describe(self) -> str:
        """The layer as a spec writes it (for tables and hover)."""
        parts = []
        values = vars(self)
        for field in fields(self):
            value = values[field.name]
            if isinstance(value, tuple) and len(value) == 2 and value[0] == value[1]:
                value = value[0]
            parts.append(f"{field.name}={_word(value)}")
        return f"{self.kind} {', '.join(parts)}".rstrip()


def _word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(map(str, value))
    return str(value)


def _refuse_tokens(kind: str, shape: Shape, hint: str) -> None:
    if isinstance(shape, Tokens):
        raise ShapeProblem(f"{kind} needs a feature map or a vector, but its input is {shape_text(shape)}", hint)


def spatial(kind: str, shape: Shape) -> tuple[int, int, int]:
    if isinstance(shape, Tokens):
        raise ShapeProblem(
            f"{kind} needs a C x H x W input, but its input is a token sequence ({shape_text(shape)})",
            "grid HxW turns a token sequence back into a feature map",
        )
    if len(shape) != 3:
        raise ShapeProblem(
            f"{kind} needs a C x H x W input, but its input is flat ({shape[0]} features)",
            "spatial layers must come before the first fc",
        )
    return shape  # type: ignore[return-value]


def window(size: int, kernel: int, stride: int, padding: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """torch.nn.Conv2d / MaxPool2d / AvgPool2d output size."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # PyTorch drops a last window that would start in the right padding.
    if (out - 1) * stride >= size + padding:
        out -= 1
    return out


def windowed(
    kind: str,
    shape: Shape,
    channels: int,
    kernel: Pair,
    stride: Pair,
    padding: Pair,
    dilation: Pair = (1, 1),
    ceil_mode: bool = False,
) -> Shape:
    _, height, width = spatial(kind, shape)
    out_h = window(height, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    out_w = window(width, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    if out_h < 1 or out_w < 1:
        raise ShapeProblem(
            f"{kind} {kernel[0]}x{kernel[1]} (stride {stride[0]}, padding {padding[0]}) on a {height}x{width} input "
            f"gives a {max(0, out_h)}x{max(0, out_w)} output: the spatial size reaches zero",
            "use a larger input, fewer downsampling stages or more padding",
        )
    return (channels, out_h, out_w)


def _check_pool_padding(kind: str, kernel: Pair, padding: Pair) -> None:
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ShapeProblem(
            f"{kind} padding {padding[0]} is more than half its {kernel[0]}x{kernel[1]} kernel",
            f"PyTorch allows at most padding={kernel[0] // 2} here",
        )


def _same_padding(kernel: Pair, dilation: Pair = (1, 1)) -> Pair:
    return (dilation[0] * (kernel[0] // 2), dilation[1] * (kernel[1] // 2))


def _functional() -> Any:
    import torch.nn.functional as functional

    return functional


# Graph ends -------------------------------------------------------------------------


@dataclass(frozen=True)
class Input(Layer):
    kind: ClassVar[str] = "input"
    arity: ClassVar[int | None] = 0
    builds_module: ClassVar[bool] = False
    graph_end: ClassVar[bool] = True
    fixed_name: ClassVar[str | None] = "input"
    shape: Shape = ()

    def output_shape(self, inputs: list[Shape]) -> Shape:
        return self.shape

    def reference(self, inputs, tensors, training):  # pragma: no cover - the interpreter feeds it
        raise TypeError("the input node is fed, not computed")


@dataclass(frozen=True)
class Output(Layer):
    kind: ClassVar[str] = "output"
    aliases_input: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    graph_end: ClassVar[bool] = True
    fixed_name: ClassVar[str | None] = "output"

    def reference(self, inputs, tensors, training):
        return inputs[0]


# Convolutions and fully connected layers ---------------------------------------------


@dataclass(frozen=True)
class Conv(Layer):
    kind: ClassVar[str] = "conv"
    example: ClassVar[str] = "conv 3x3, 8, stride=2, groups=2, bias=true"
    variants: ClassVar[tuple[str, ...]] = ("conv 3x3, 6, stride=2, groups=2, bias=true, standardize=true, gamma=1.7",)
    spelled: ClassVar[bool] = True
    counts_as_layer: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    figure_fill: ClassVar[str] = "width"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("kernel", _pair(), "the kernel size", positional=True, required=True),
        Argument("out_channels", _int(), "the number of output channels", positional=True, required=True),
        Argument("stride", _pair(), "stride"),
        Argument("padding", _pair(0), "padding"),
        Argument("dilation", _pair(), "dilation"),
        Argument("groups", _int(), "groups"),
        Argument("bias", as_bool, "bias"),
        Argument("standardize", as_bool, "standardize"),
        Argument("gamma", _positive_float, "gamma"),
        Argument("eps", _positive_float, "eps"),
    )
    usage: ClassVar[str] = (
        "conv KxK, OUT[, stride=S, padding=P, dilation=D, groups=G, bias=true, standardize=true[, gamma=K, eps=E]]"
    )
    kernel: Pair = (1, 1)
    out_channels: int = 1
    stride: Pair = (1, 1)
    padding: Pair | None = None  # None: "same" for odd kernels, dilation * (K // 2)
    dilation: Pair = (1, 1)
    groups: int = 1
    bias: bool = False
    # Scaled weight standardisation (Brock et al., 2021, "Characterizing signal propagation
    # to close the performance gap in unnormalized ResNets"): each output channel's weights
    # are standardised over their fan-in, then scaled by a learned `gain` per channel and by
    # gamma / sqrt(fan-in). timm's ScaledStdConv2d; NF-ResNet's convolutions.
    standardize: bool = False
    gamma: float = 1.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.padding is None:
            object.__setattr__(self, "padding", _same_padding(self.kernel, self.dilation))

    @classmethod
    def from_arguments(cls, values, pos):
        if not (values.get("standardize") and as_bool(*values["standardize"], "standardize")):
            for name in ("gamma", "eps"):
                if name in values:
                    raise SpecError(
                        f"{name} applies only to a weight-standardised convolution",
                        values[name][1],
                        "add standardize=true, or remove it",
                    )
        return super().from_arguments(values, pos)

    def output_shape(self, inputs):
        (shape,) = inputs
        channels = spatial("conv", shape)[0]
        if channels % self.groups or self.out_channels % self.groups:
            raise ShapeProblem(
                f"a conv with groups={self.groups} needs input and output channels divisible by {self.groups}, "
                f"but they are {channels} and {self.out_channels}"
            )
        return windowed("conv", shape, self.out_channels, self.kernel, self.stride, self.padding, self.dilation)

    def cost(self, inputs, output):
        weights = self.out_channels * (inputs[0][0] // self.groups) * self.kernel[0] * self.kernel[1]
        per_channel = int(self.bias) + int(self.standardize)  # a bias, a gain
        return weights + per_channel * self.out_channels, weights * output[1] * output[2]

    def constructor(self, inputs):
        options: tuple[tuple[str, Any], ...] = (
            ("stride", self.stride),
            ("padding", self.padding),
            ("dilation", self.dilation),
            ("groups", self.groups),
            ("bias", self.bias),
        )
        if self.standardize:
            options += (("gamma", self.gamma), ("eps", self.eps))
        return Ctor(
            "ScaledStdConv2d" if self.standardize else "nn.Conv2d",
            (inputs[0][0], self.out_channels, self.kernel),
            options,
        )

    def initialise(self, module):
        from torch import nn

        if self.standardize:
            # The standardisation removes the weights' scale; the gain starts at 1 (Brock et al., 2021).
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="linear")
            nn.init.ones_(module.gain)
        else:
            # He et al. (2015b), as the paper and torchvision initialise convolutions.
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    def reference(self, inputs, tensors, training):
        weight = tensors["weight"]
        if self.standardize:
            # Per output channel: W' = gain * gamma / sqrt(N) * (W - mean) / sqrt(var + eps),
            # mean and (biased) variance over the channel's N = fan-in weights.
            rows = weight.reshape(weight.shape[0], -1)
            fan_in = rows.shape[1]
            mean = rows.mean(dim=1, keepdim=True)
            variance = ((rows - mean) ** 2).mean(dim=1, keepdim=True)
            factor = tensors["gain"].reshape(-1, 1) * (self.gamma / math.sqrt(fan_in))
            weight = ((rows - mean) / (variance + self.eps).sqrt() * factor).reshape(weight.shape)
        return _functional().conv2d(
            inputs[0], weight, tensors.get("bias"), self.stride, self.padding, self.dilation, self.groups
        )

    def kernel_text(self):
        return _word(self.kernel)

    def figure_label(self):
        label = f"{self.kernel[0]}x{self.kernel[1]} conv, {self.out_channels}"
        if self.stride != (1, 1):
            label += f", /{self.stride[0]}"
        if self.dilation != (1, 1):
            # A dilated kernel sees a wider field (SK's 5x5 path): the paper writes it.
            label += (
                f", d{self.dilation[0]}"
                if self.dilation[0] == self.dilation[1]
                else f", d{self.dilation[0]}x{self.dilation[1]}"
            )
        if self.groups > 1:
            label += f", groups {self.groups}"
        if self.standardize:
            label += ", WS"
        return label


@dataclass(frozen=True)
class Linear(Layer):
    kind: ClassVar[str] = "fc"
    example: ClassVar[str] = "fc 7"
    spelled: ClassVar[bool] = True
    counts_as_layer: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    figure_fill: ClassVar[str] = "fc"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("out_features", _int(), "the number of outputs", positional=True, required=True),
        Argument("bias", as_bool, "bias"),
    )
    usage: ClassVar[str] = "fc OUT[, bias=false]"
    out_features: int = 1
    bias: bool = True

    def output_shape(self, inputs):
        (shape,) = inputs
        if isinstance(shape, Tokens):  # a linear layer per token, as timm's nn.Linear on B x N x C
            return Tokens((*shape[:-1], self.out_features), shape.grid)
        if len(shape) != 1:  # pragma: no cover - expand puts a flatten before the first fc
            raise ShapeProblem("fc needs a flat input or a token sequence")
        return (self.out_features,)

    def cost(self, inputs, output):
        weights = channels(inputs[0]) * self.out_features
        positions = math.prod(inputs[0][:-1]) if isinstance(inputs[0], Tokens) else 1
        return weights + (self.out_features if self.bias else 0), weights * positions

    def constructor(self, inputs):
        return Ctor("nn.Linear", (channels(inputs[0]), self.out_features), (("bias", self.bias),))

    def reference(self, inputs, tensors, training):
        return _functional().linear(inputs[0], tensors["weight"], tensors.get("bias"))

    def figure_label(self):
        return f"fc {self.out_features}"


@dataclass(frozen=True)
class ChannelConv(Layer):
    """ECA's 1-D convolution across channels (Wang et al., 2020), at every position:
    ``channel_conv K`` is timm's EcaModule ``conv`` (no bias, "same" padding)."""

    kind: ClassVar[str] = "channel_conv"
    example: ClassVar[str] = "channel_conv 3"
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("kernel", _int(), "the kernel size", positional=True, required=True),
    )
    usage: ClassVar[str] = "channel_conv K (K odd)"
    kernel: int = 3

    @classmethod
    def from_arguments(cls, values, pos):
        layer = super().from_arguments(values, pos)
        if layer.kernel % 2 == 0:
            raise SpecError(
                f"channel_conv needs an odd kernel, got {layer.kernel}",
                values["kernel"][1],
                "ECA rounds its kernel up to the next odd number",
            )
        return layer

    def output_shape(self, inputs):
        spatial("channel_conv", inputs[0])
        return inputs[0]

    def cost(self, inputs, output):
        return self.kernel, self.kernel * output[0] * output[1] * output[2]

    def constructor(self, inputs):
        return Ctor("ChannelConv", (self.kernel,))

    def initialise(self, module):
        from torch import nn

        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, 1, c)
        out = _functional().conv1d(rows, tensors["weight"], padding=(self.kernel - 1) // 2)
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2)

    def kernel_text(self):
        return str(self.kernel)  # one dimension: across the channels

    def figure_label(self):
        return f"channel conv {self.kernel}"


# Normalisation ------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchNorm(Layer):
    """Batch normalisation; ``eps`` and ``momentum`` as torch's BatchNorm2d (timm's DPN,
    Xception and Inception-ResNet use eps 1e-3)."""

    kind: ClassVar[str] = "bn"
    example: ClassVar[str] = "bn"
    variants: ClassVar[tuple[str, ...]] = ("bn eps=1e-3, momentum=0.01",)
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("eps", _positive_float, "eps"),
        Argument("momentum", lambda v, p, w: _fraction(v, p, w), "momentum"),
    )
    usage: ClassVar[str] = "bn[ eps=1e-5, momentum=0.1]"
    is_norm: ClassVar[bool] = True
    eps: float = 1e-5
    # How far each training step moves the running statistics: it changes no output of
    # the step itself, only the statistics a checkpoint carries to eval.
    momentum: float = 0.1

    def output_shape(self, inputs):
        _refuse_tokens(self.kind, inputs[0], "ln normalises each token over its channels")
        return inputs[0]

    def cost(self, inputs, output):
        return 2 * inputs[0][0], 0

    def constructor(self, inputs):
        options: tuple[tuple[str, Any], ...] = ()
        # Only what differs from torch's defaults, so that the generated source of every
        # network written before bn took options stays as it was.
        if self.eps != 1e-5:
            options += (("eps", self.eps),)
        if self.momentum != 0.1:
            options += (("momentum", self.momentum),)
        return Ctor("nn.BatchNorm2d" if len(inputs[0]) == 3 else "nn.BatchNorm1d", (inputs[0][0],), options)

    def reference(self, inputs, tensors, training):
        # Written out rather than through F.batch_norm: batch statistics (the biased
        # variance) in training, running ones in eval; the reference never updates the
        # model's buffers, so momentum changes nothing it computes.
        (x,) = inputs
        axes = [0, *range(2, x.dim())]
        if training:
            mean = x.mean(axes)
            var = x.var(axes, unbiased=False)
        else:
            mean, var = tensors["running_mean"], tensors["running_var"]
        shape = (1, -1, *([1] * (x.dim() - 2)))
        normalised = (x - mean.reshape(shape)) / (var.reshape(shape) + self.eps).sqrt()
        return normalised * tensors["weight"].reshape(shape) + tensors["bias"].reshape(shape)

    def figure_label(self):
        return "bn" if self.eps == 1e-5 else f"bn, eps {self.eps:g}"


@dataclass(frozen=True)
class GroupNorm(Layer):
    kind: ClassVar[str] = "gn"
    example: ClassVar[str] = "gn 2"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("groups", _int(), "the number of groups", positional=True, required=True),
        Argument("eps", lambda v, p, w: as_float(v, p, w, minimum=0), "eps"),
    )
    usage: ClassVar[str] = "gn GROUPS[, eps=1e-5]"
    is_norm: ClassVar[bool] = True
    groups: int = 32
    eps: float = 1e-5

    def output_shape(self, inputs):
        channels = spatial("gn", inputs[0])[0]
        if channels % self.groups:
            raise ShapeProblem(
                f"gn {self.groups} needs channels divisible by {self.groups}, but there are {channels}",
                "choose a number of groups that divides every width it normalises",
            )
        return inputs[0]

    def cost(self, inputs, output):
        return 2 * inputs[0][0], 0

    def constructor(self, inputs):
        return Ctor("nn.GroupNorm", (self.groups, inputs[0][0]), (("eps", self.eps),))

    def reference(self, inputs, tensors, training):
        return _functional().group_norm(inputs[0], self.groups, tensors["weight"], tensors["bias"], self.eps)

    def figure_label(self):
        return f"gn {self.groups}"


@dataclass(frozen=True)
class LayerNorm(Layer):
    """A layer norm over channels at each position (timm's LayerNorm2d)."""

    kind: ClassVar[str] = "ln"
    example: ClassVar[str] = "ln"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (Argument("eps", lambda v, p, w: as_float(v, p, w, minimum=0), "eps"),)
    usage: ClassVar[str] = "ln[, eps=1e-6]"
    is_norm: ClassVar[bool] = True
    eps: float = 1e-6
    #: Its input is a token sequence: a 4-d tensor is then sequences of tokens (unfold's
    #: patches, windows), not a feature map; filled in by for_input, as the reference sees only tensors.
    on_tokens: bool = dataclasses.field(default=False, repr=False)

    def for_input(self, shape):
        return dataclasses.replace(self, on_tokens=True) if isinstance(shape, Tokens) else self

    def cost(self, inputs, output):
        return 2 * channels(inputs[0]), 0

    def constructor(self, inputs):
        if layout(inputs[0]) != "map":  # a vector, or each token over its channels
            return Ctor("nn.LayerNorm", (channels(inputs[0]),), (("eps", self.eps),))
        return Ctor("LayerNorm2d", (inputs[0][0],), (("eps", self.eps),))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        if x.dim() != 4 or self.on_tokens:  # a vector, or a token sequence: over the last axis, written out
            mean = x.mean(-1, keepdim=True)
            var = x.var(-1, keepdim=True, unbiased=False)
            return (x - mean) / (var + self.eps).sqrt() * tensors["weight"] + tensors["bias"]
        mean = x.mean(1, keepdim=True)
        var = x.var(1, keepdim=True, unbiased=False)
        normalised = (x - mean) / (var + self.eps).sqrt()
        return normalised * tensors["weight"][:, None, None] + tensors["bias"][:, None, None]


# Activations ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReLU(Layer):
    kind: ClassVar[str] = "relu"
    example: ClassVar[str] = "relu"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "relu"
    saves_output: ClassVar[bool] = True
    is_activation: ClassVar[bool] = True
    runs_in_place: ClassVar[bool] = True

    def constructor(self, inputs):
        return Ctor("nn.ReLU")

    def reference(self, inputs, tensors, training):
        return inputs[0].clamp_min(0)


@dataclass(frozen=True)
class Activation(Layer):
    """An activation without arguments; each subclass names its torch module and rule."""

    module: ClassVar[str] = ""
    is_activation: ClassVar[bool] = True

    def constructor(self, inputs):
        return Ctor(self.module)


@dataclass(frozen=True)
class Sigmoid(Activation):
    kind: ClassVar[str] = "sigmoid"
    example: ClassVar[str] = "sigmoid"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "sigmoid"
    saves_output: ClassVar[bool] = True
    module: ClassVar[str] = "nn.Sigmoid"

    def reference(self, inputs, tensors, training):
        return 1 / (1 + (-inputs[0]).exp())


@dataclass(frozen=True)
class Tanh(Activation):
    kind: ClassVar[str] = "tanh"
    example: ClassVar[str] = "tanh"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "tanh"
    saves_output: ClassVar[bool] = True
    module: ClassVar[str] = "nn.Tanh"

    def reference(self, inputs, tensors, training):
        x = inputs[0]
        return (x.exp() - (-x).exp()) / (x.exp() + (-x).exp())


@dataclass(frozen=True)
class SiLU(Activation):
    kind: ClassVar[str] = "silu"
    example: ClassVar[str] = "silu"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "silu"
    module: ClassVar[str] = "nn.SiLU"

    def reference(self, inputs, tensors, training):
        return inputs[0] / (1 + (-inputs[0]).exp())


@dataclass(frozen=True)
class GELU(Activation):
    kind: ClassVar[str] = "gelu"
    example: ClassVar[str] = "gelu"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "gelu"
    module: ClassVar[str] = "nn.GELU"

    def reference(self, inputs, tensors, training):
        x = inputs[0]
        return 0.5 * x * (1 + (x / math.sqrt(2)).erf())


@dataclass(frozen=True)
class HardSigmoid(Activation):
    kind: ClassVar[str] = "hardsigmoid"
    example: ClassVar[str] = "hardsigmoid"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "hardsigmoid"
    module: ClassVar[str] = "nn.Hardsigmoid"

    def reference(self, inputs, tensors, training):
        return (inputs[0] / 6 + 0.5).clamp(0, 1)


@dataclass(frozen=True)
class HardSwish(Activation):
    kind: ClassVar[str] = "hardswish"
    example: ClassVar[str] = "hardswish"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "hardswish"
    module: ClassVar[str] = "nn.Hardswish"

    def reference(self, inputs, tensors, training):
        x = inputs[0]
        return x * (x + 3).clamp(0, 6) / 6


@dataclass(frozen=True)
class LeakyReLU(Layer):
    kind: ClassVar[str] = "leaky_relu"
    example: ClassVar[str] = "leaky_relu 0.2"
    spelled: ClassVar[bool] = True
    is_activation: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("slope", lambda v, p, w: as_float(v, p, w, minimum=0), "the negative slope", positional=True),
    )
    usage: ClassVar[str] = "leaky_relu[ SLOPE] (default 0.01)"
    slope: float = 0.01

    def constructor(self, inputs):
        return Ctor("nn.LeakyReLU", (self.slope,))

    def reference(self, inputs, tensors, training):
        x = inputs[0]
        return x.clamp_min(0) + self.slope * x.clamp_max(0)

    def figure_label(self):
        return f"leaky relu {self.slope:g}"


@dataclass(frozen=True)
class ReLU6(Activation):
    """min(max(x, 0), 6): MobileNetV2's activation (Sandler et al., 2018)."""

    kind: ClassVar[str] = "relu6"
    example: ClassVar[str] = "relu6"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "relu6"
    module: ClassVar[str] = "nn.ReLU6"

    def reference(self, inputs, tensors, training):
        return _clamp(inputs[0], 0.0, 6.0)


@dataclass(frozen=True)
class HardTanh(Activation):
    """min(max(x, MIN), MAX); ``hardtanh 0, 6`` is ``relu6``."""

    kind: ClassVar[str] = "hardtanh"
    example: ClassVar[str] = "hardtanh -0.5, 2"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("min_val", as_float, "the lower bound", positional=True, required=True),
        Argument("max_val", as_float, "the upper bound", positional=True, required=True),
    )
    usage: ClassVar[str] = "hardtanh MIN, MAX (MIN < MAX)"
    min_val: float = -1.0
    max_val: float = 1.0

    @classmethod
    def from_arguments(cls, values, pos):
        layer = super().from_arguments(values, pos)
        if not layer.min_val < layer.max_val:
            raise SpecError(
                f"hardtanh needs MIN < MAX, got {layer.min_val:g} and {layer.max_val:g}",
                values["max_val"][1],
                "write: hardtanh 0, 6",
            )
        return layer

    def constructor(self, inputs):
        return Ctor("nn.Hardtanh", (self.min_val, self.max_val))

    def reference(self, inputs, tensors, training):
        return _clamp(inputs[0], self.min_val, self.max_val)

    def figure_label(self):
        return f"hardtanh {self.min_val:g}, {self.max_val:g}"


def _clamp(x: Any, low: float, high: float) -> Any:
    # Written with a selection, not torch.clamp, so the reference does not share the module's kernel.
    import torch

    return torch.where(x < low, torch.full_like(x, low), torch.where(x > high, torch.full_like(x, high), x))


@dataclass(frozen=True)
class Softmax(Layer):
    """A softmax across channel groups (SKNet's attention over its paths, Li et al.,
    2019; ResNeSt's over its radix, Zhang et al., 2020).

    The channels are read as ``cardinality`` x ``groups`` x R (cardinal group, group,
    channel); at each (cardinal group, channel, position) the softmax runs across the
    ``groups`` values. The output is laid out group-major, ``groups`` x
    ``cardinality`` x R, so that ``split groups`` would give each group's weights
    (timm's RadixSoftmax does the same transpose). ``groups=1`` (the default) is a
    softmax over all R channels of each cardinal group."""

    kind: ClassVar[str] = "softmax"
    example: ClassVar[str] = "softmax groups=2, cardinality=2"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("groups", _int(), "groups"),
        Argument("cardinality", _int(), "cardinality"),
    )
    usage: ClassVar[str] = "softmax[ groups=G, cardinality=K] (across G channel groups; default over all channels)"
    variants: ClassVar[tuple[str, ...]] = ("tokens; softmax",)
    groups: int = 1
    cardinality: int = 1
    #: The channel axis: 1 for a feature map, -1 (the last) for a token sequence, whose
    #: channels are attention scores' keys.
    axis: int = 1

    def for_input(self, shape):
        return dataclasses.replace(self, axis=-1) if isinstance(shape, Tokens) else self

    def output_shape(self, inputs):
        if self.axis == -1 and (self.groups, self.cardinality) != (1, 1):
            raise ShapeProblem("a softmax over a token sequence's channels takes no groups or cardinality")
        channels = inputs[0][-1] if self.axis == -1 else inputs[0][0]
        if channels % (self.groups * self.cardinality):
            raise ShapeProblem(
                f"softmax groups={self.groups}, cardinality={self.cardinality} needs channels divisible by "
                f"{self.groups * self.cardinality}, but there are {channels}"
            )
        return inputs[0]

    def constructor(self, inputs):
        if self.axis == -1:
            return Ctor("nn.Softmax", (), (("dim", -1),))
        return Ctor("GroupSoftmax", (self.groups, self.cardinality))

    def reference(self, inputs, tensors, training):
        import torch

        (x,) = inputs
        if self.axis == -1:
            return _softmax_last(x)
        k, g = self.cardinality, self.groups
        width = x.shape[1] // (k * g)
        if g == 1:
            parts = [x[:, c * width : (c + 1) * width] for c in range(k)]
            out = []
            for part in parts:
                e = (part - part.amax(1, keepdim=True)).exp()
                out.append(e / e.sum(1, keepdim=True))
            return torch.cat(out, 1)
        # slices[c][r]: cardinal group c, group r, R channels each.
        slices = [[x[:, (c * g + r) * width : (c * g + r + 1) * width] for r in range(g)] for c in range(k)]
        weights: list[list[Any]] = [[None] * k for _ in range(g)]
        for c in range(k):
            top = slices[c][0]
            for r in range(1, g):
                top = torch.maximum(top, slices[c][r])
            exps = [(slices[c][r] - top).exp() for r in range(g)]
            total = sum(exps[1:], exps[0])
            for r in range(g):
                weights[r][c] = exps[r] / total
        return torch.cat([weights[r][c] for r in range(g) for c in range(k)], 1)

    def figure_label(self):
        if self.groups == 1:
            return "softmax"
        return f"softmax across {self.groups}" + (f", cardinality {self.cardinality}" if self.cardinality > 1 else "")


@dataclass(frozen=True)
class Identity(Layer):
    """Passes its input on: a placeholder where a choice writes nothing (avg_down's
    first layer when the stride is 1). It holds a position in numbered names."""

    kind: ClassVar[str] = "identity"
    example: ClassVar[str] = "identity"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "identity"
    aliases_input: ClassVar[bool] = True
    is_activation: ClassVar[bool] = True  # `act identity`: no activation
    builds_module: ClassVar[bool] = False

    def reference(self, inputs, tensors, training):
        return inputs[0]


# Scaling ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale(Layer):
    """Multiplies by a constant (NF-ResNet's alpha and beta): no parameters."""

    kind: ClassVar[str] = "scale"
    example: ClassVar[str] = "scale 0.2"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("factor", as_float, "the factor", positional=True, required=True),
    )
    usage: ClassVar[str] = "scale K"
    factor: float = 1.0

    def constructor(self, inputs):
        return Ctor("Scale", (self.factor,))

    def reference(self, inputs, tensors, training):
        return inputs[0] * self.factor

    def figure_label(self):
        return f"× {self.factor:g}"


@dataclass(frozen=True)
class LayerScale(Layer):
    """A learned scale per channel (Touvron et al., 2021; ConvNeXt's ``gamma``), one
    tensor of C values initialised to INIT.

    The tensor is not a module: the node's name is its key, held by the enclosing
    module. ``gamma: layerscale 1e-6`` in a block is ConvNeXt's ``stages.0.blocks.0.gamma``;
    ``ls1.gamma: layerscale 1e-5`` is timm's LayerScale module layout."""

    kind: ClassVar[str] = "layerscale"
    example: ClassVar[str] = "layerscale 0.5"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("init", as_float, "the initial scale", positional=True, required=True),
    )
    usage: ClassVar[str] = "layerscale INIT (a learned scale per channel, its tensor named by the label)"
    holds_tensor: ClassVar[bool] = True
    init: float = 1e-6

    def cost(self, inputs, output):
        return channels(inputs[0]), 0

    def constructor(self, inputs):
        return Ctor("full_parameter", ((channels(inputs[0]),), self.init))

    def initialise(self, module):
        from torch import nn

        nn.init.constant_(module, self.init)

    def tensor_expression(self, value, tensor, shape):
        if isinstance(shape, Tokens):  # channels last: the tensor broadcasts as it is
            return f"{value} * {tensor}"
        return f"{value} * {tensor}.view(-1{', 1' * (len(shape) - 1)})"

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        gamma = tensors["tensor"]
        if x.dim() == 3:  # a token sequence: one scale per channel, the last axis
            return x * gamma
        return x * gamma.reshape(gamma.shape[0], *([1] * (x.dim() - 2)))

    def figure_label(self):
        return f"layer scale {self.init:g}"


# Pooling ------------------------------------------------------------------------


@dataclass(frozen=True)
class MaxPool(Layer):
    kind: ClassVar[str] = "maxpool"
    example: ClassVar[str] = "maxpool 3x3, stride=2, ceil_mode=true"
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("kernel", _pair(), "the kernel size", positional=True, required=True),
        Argument("stride", _pair(), "stride"),
        Argument("padding", _pair(0), "padding"),
        Argument("ceil_mode", as_bool, "ceil_mode"),
    )
    usage: ClassVar[str] = "maxpool KxK[, stride=S, padding=P, ceil_mode=true]"
    kernel: Pair = (1, 1)
    stride: Pair = (1, 1)
    padding: Pair | None = None  # None: K // 2
    ceil_mode: bool = False

    def __post_init__(self) -> None:
        if self.padding is None:
            object.__setattr__(self, "padding", _same_padding(self.kernel))

    def output_shape(self, inputs):
        _check_pool_padding("maxpool", self.kernel, self.padding)
        shape = inputs[0]
        return windowed(
            "maxpool",
            shape,
            spatial("maxpool", shape)[0],
            self.kernel,
            self.stride,
            self.padding,
            (1, 1),
            self.ceil_mode,
        )

    def constructor(self, inputs):
        kwargs: tuple = (("stride", self.stride), ("padding", self.padding))
        if self.ceil_mode:
            kwargs += (("ceil_mode", True),)
        return Ctor("nn.MaxPool2d", (self.kernel,), kwargs)

    def reference(self, inputs, tensors, training):
        return _functional().max_pool2d(inputs[0], self.kernel, self.stride, self.padding, ceil_mode=self.ceil_mode)

    def kernel_text(self):
        return _word(self.kernel)

    def figure_label(self):
        label = f"{self.kernel[0]}x{self.kernel[1]} max pool"
        return label + (f", /{self.stride[0]}" if self.stride != (1, 1) else "")


@dataclass(frozen=True)
class AvgPool(Layer):
    """``avgpool`` alone is global (to C x 1 x 1); ``avgpool KxK`` is a windowed pool."""

    kind: ClassVar[str] = "avgpool"
    example: ClassVar[str] = "avgpool 3x3, stride=2, padding=1, ceil_mode=true, count_include_pad=false"
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("kernel", _pair(), "the kernel size", positional=True),
        Argument("stride", _pair(), "stride"),
        Argument("padding", _pair(0), "padding"),
        Argument("ceil_mode", as_bool, "ceil_mode"),
        Argument("count_include_pad", as_bool, "count_include_pad"),
    )
    usage: ClassVar[str] = (
        "avgpool (global) or avgpool KxK[, stride=S, padding=P, ceil_mode=true, count_include_pad=false]"
    )
    kernel: Pair | None = None
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True

    @classmethod
    def from_arguments(cls, values, pos):
        if "kernel" not in values:
            for name in ("stride", "padding", "ceil_mode", "count_include_pad"):
                if name in values:
                    raise SpecError(
                        f"the global avgpool takes no {name}", values[name][1], "give a kernel: avgpool 2x2, stride=2"
                    )
        return super().from_arguments(values, pos)

    @property
    def is_global(self) -> bool:
        return self.kernel is None

    def output_shape(self, inputs):
        shape = inputs[0]
        channels = spatial("avgpool", shape)[0]
        if self.is_global:
            return (channels, 1, 1)
        _check_pool_padding("avgpool", self.kernel, self.padding)
        return windowed("avgpool", shape, channels, self.kernel, self.stride, self.padding, (1, 1), self.ceil_mode)

    def constructor(self, inputs):
        if self.is_global:
            return Ctor("nn.AdaptiveAvgPool2d", ((1, 1),))
        kwargs: tuple = (("stride", self.stride), ("padding", self.padding))
        if self.ceil_mode:
            kwargs += (("ceil_mode", True),)
        if not self.count_include_pad:
            kwargs += (("count_include_pad", False),)
        return Ctor("nn.AvgPool2d", (self.kernel,), kwargs)

    def reference(self, inputs, tensors, training):
        x = inputs[0]
        if self.is_global:
            return x.mean((2, 3), keepdim=True)
        return _functional().avg_pool2d(
            x, self.kernel, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )

    def kernel_text(self):
        return "global" if self.is_global else _word(self.kernel)

    def figure_label(self):
        if self.is_global:
            return "avg pool"
        label = f"{self.kernel[0]}x{self.kernel[1]} avg pool"
        return label + (f", /{self.stride[0]}" if self.stride != (1, 1) else "")


@dataclass(frozen=True)
class Upsample(Layer):
    """``upsample S``: each position repeated S x S times (nearest), or with
    ``mode=bilinear`` interpolated as torch's ``nn.Upsample(mode="bilinear")`` with its
    default ``align_corners=False``; HRNet's fusion brings a lower branch up this way."""

    kind: ClassVar[str] = "upsample"
    example: ClassVar[str] = "upsample 2"
    variants: ClassVar[tuple[str, ...]] = ("upsample 3x2, mode=bilinear",)
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("scale", _pair(), "the scale factor", positional=True, required=True),
        Argument("mode", lambda v, p, w: v, "mode", words=("nearest", "bilinear")),
    )
    usage: ClassVar[str] = "upsample S[, mode=bilinear] (nearest by default)"
    scale: Pair = (2, 2)
    mode: str = "nearest"

    def output_shape(self, inputs):
        channels, height, width = spatial("upsample", inputs[0])
        return (channels, height * self.scale[0], width * self.scale[1])

    def constructor(self, inputs):
        scale = self.scale[0] if self.scale[0] == self.scale[1] else tuple(float(s) for s in self.scale)
        return Ctor("nn.Upsample", (), (("scale_factor", scale), ("mode", self.mode)))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        if self.mode == "nearest":
            return x.repeat_interleave(self.scale[0], 2).repeat_interleave(self.scale[1], 3)
        # Bilinear, align_corners=False: output position o reads the input at
        # (o + 1/2) / s - 1/2, clamped at 0, between its two neighbours.
        for axis, scale in ((2, self.scale[0]), (3, self.scale[1])):
            x = _interpolate_axis(x, axis, scale)
        return x

    def kernel_text(self):
        return ""

    def figure_label(self):
        factor = self.scale[0] if self.scale[0] == self.scale[1] else _word(self.scale)
        return f"upsample ×{factor}" + (", bilinear" if self.mode == "bilinear" else "")


def _interpolate_axis(x: Any, axis: int, scale: int) -> Any:
    import torch

    size = x.shape[axis]
    out = torch.arange(size * scale, dtype=x.dtype, device=x.device)
    source = ((out + 0.5) / scale - 0.5).clamp_min(0)
    low = source.floor().long().clamp_max(size - 1)
    high = (low + 1).clamp_max(size - 1)
    weight = (source - low.to(x.dtype)).reshape([-1 if dim == axis else 1 for dim in range(x.dim())])
    return x.index_select(axis, low) * (1 - weight) + x.index_select(axis, high) * weight


# Regularisation and reshaping ------------------------------------------------------


@dataclass(frozen=True)
class Dropout(Layer):
    kind: ClassVar[str] = "dropout"
    example: ClassVar[str] = "dropout 0.25"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("p", as_probability, "the dropout probability", positional=True, required=True),
    )
    usage: ClassVar[str] = "dropout P"
    aliases_input: ClassVar[bool] = True  # in eval mode
    p: float = 0.5

    def constructor(self, inputs):
        return Ctor("nn.Dropout", (self.p,))

    def reference(self, inputs, tensors, training):
        if training and self.p > 0:
            raise NotImplementedError("the reference runs dropout only in eval mode or with p = 0")
        return inputs[0]

    def figure_label(self):
        return f"dropout {self.p:g}"


@dataclass(frozen=True)
class DropPath(Layer):
    """Stochastic depth (Huang et al., 2016): in training, each sample's branch is
    dropped with probability P and kept ones are scaled by 1 / (1 - P); the identity
    in eval mode."""

    kind: ClassVar[str] = "drop_path"
    example: ClassVar[str] = "drop_path 0.1"
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "marker"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("p", as_probability, "the drop path probability", positional=True, required=True),
    )
    usage: ClassVar[str] = "drop_path P"
    aliases_input: ClassVar[bool] = True  # in eval mode
    p: float = 0.0

    def constructor(self, inputs):
        return Ctor("DropPath", (self.p,))

    def reference(self, inputs, tensors, training):
        if training and self.p > 0:
            raise NotImplementedError("the reference runs drop path only in eval mode or with p = 0")
        return inputs[0]

    def figure_label(self):
        return f"drop path {self.p:.3g}"


@dataclass(frozen=True)
class Flatten(Layer):
    kind: ClassVar[str] = "flatten"
    example: ClassVar[str] = "flatten"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "flatten"
    aliases_input: ClassVar[bool] = True  # a view

    def output_shape(self, inputs):
        return (math.prod(inputs[0]),)

    def constructor(self, inputs):
        return Ctor("nn.Flatten", (1,))

    def reference(self, inputs, tensors, training):
        return inputs[0].reshape(inputs[0].shape[0], -1)


# Tokens and attention ----------------------------------------------------------------


def _token_input(kind: str, shape: Shape) -> Tokens:
    if not isinstance(shape, Tokens):
        raise ShapeProblem(
            f"{kind} needs a token sequence, but its input is "
            f"{'a feature map' if layout(shape) == 'map' else 'flat'} ({shape_text(shape)})",
            "tokens turns a C x H x W feature map into an (H W) x C token sequence",
        )
    return shape


@dataclass(frozen=True)
class ToTokens(Layer):
    """A feature map as a token sequence: C x H x W -> (H W) x C, positions row-major
    (timm's ``x.flatten(2).transpose(1, 2)`` after a patch embedding)."""

    kind: ClassVar[str] = "tokens"
    example: ClassVar[str] = "tokens"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "tokens (C x H x W -> (H W) x C)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False

    def output_shape(self, inputs):
        channels_, height, width = spatial(self.kind, inputs[0])
        return Tokens((height * width, channels_), (height, width))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        return x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)

    def forward_expression(self, names):
        return f"{names[0]}.flatten(2).transpose(1, 2)"


@dataclass(frozen=True)
class Grid(Layer):
    """A token sequence as a feature map: N x C -> C x H x W, N = H W, row-major.
    Without a size, the grid the tokens were made from (:attr:`Tokens.grid`)."""

    kind: ClassVar[str] = "grid"
    example: ClassVar[str] = "tokens; grid 11x11"
    variants: ClassVar[tuple[str, ...]] = ("tokens; fc 5; grid",)
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("size", _pair(), "the grid's height and width", positional=True),
    )
    usage: ClassVar[str] = "grid [HxW] (N x C tokens -> C x H x W, N = H W; no size: the grid they came from)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    size: Pair | None = None  # None: the tokens' own grid, filled in by for_input

    def for_input(self, shape):
        if self.size is None and isinstance(shape, Tokens) and shape.grid is not None:
            return dataclasses.replace(self, size=shape.grid)
        return self

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        if self.size is None:
            raise ShapeProblem(
                f"grid without a size needs tokens made from a feature map, but these {shape_text(shape)} "
                "have no grid (a learned token, take or transpose made them)",
                "write the size: grid HxW",
            )
        height, width = self.size
        if len(shape) != 2 or shape[0] != height * width:
            raise ShapeProblem(
                f"grid {height}x{width} needs {height * width} tokens, but there are {shape_text(shape)}",
                "take away learned tokens (the class token) before grid, or choose H and W with H W = N",
            )
        return (shape[1], height, width)

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        return x.permute(0, 2, 1).reshape(x.shape[0], x.shape[2], *self.size)

    def forward_expression(self, names):
        return f"{names[0]}.transpose(1, 2).unflatten(2, {tuple(self.size)!r})"

    def figure_label(self):
        return f"grid {self.size[0]}x{self.size[1]}"


@dataclass(frozen=True)
class Transpose(Layer):
    """Swaps the token and channel axes: N x C -> C x N, so that an ``fc`` mixes tokens
    (MLP-Mixer's token mixing)."""

    kind: ClassVar[str] = "transpose"
    example: ClassVar[str] = "tokens; transpose"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "transpose (N x C tokens -> C x N)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    aliases_input: ClassVar[bool] = True  # a view

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        return Tokens((*shape[:-2], shape[-1], shape[-2]))

    def reference(self, inputs, tensors, training):
        return inputs[0].transpose(-1, -2)

    def forward_expression(self, names):
        return f"{names[0]}.transpose(-1, -2)"


@dataclass(frozen=True)
class Heads(Layer):
    """A token sequence as H heads: N x C -> H x N x C/H, each head's channels
    consecutive (timm's ``reshape(B, N, H, D).transpose(1, 2)``)."""

    kind: ClassVar[str] = "heads"
    example: ClassVar[str] = "tokens; heads 2"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("count", _int(), "the number of heads", positional=True, required=True),
    )
    usage: ClassVar[str] = "heads H (N x C tokens -> H x N x C/H)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False

    count: int = 1

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        if shape[-1] % self.count:
            raise ShapeProblem(
                f"heads {self.count} needs channels divisible by {self.count}, but there are {shape[-1]}"
            )
        return Tokens((*shape[:-2], self.count, shape[-2], shape[-1] // self.count), shape.grid)

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        *lead, tokens, width = x.shape
        return x.reshape(*lead, tokens, self.count, width // self.count).transpose(-2, -3)

    def forward_expression(self, names):
        return f"{names[0]}.unflatten(-1, ({self.count}, -1)).transpose(-2, -3)"

    def figure_label(self):
        return f"{self.count} heads"


@dataclass(frozen=True)
class Merge(Layer):
    """Heads back into one sequence: H x N x D -> N x H D (``merge heads``)."""

    kind: ClassVar[str] = "merge"
    example: ClassVar[str] = "tokens; heads 2; merge heads"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("what", lambda value, pos, what: value, "what", positional=True, required=True, words=("heads",)),
    )
    usage: ClassVar[str] = "merge heads (H x N x D -> N x H D)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    what: str = "heads"

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        if len(shape) < 3:
            raise ShapeProblem(f"merge heads needs H x N x D heads, but its input is {shape_text(shape)}")
        return Tokens((*shape[:-3], shape[-2], shape[-3] * shape[-1]), shape.grid)

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        moved = x.transpose(-2, -3)
        return moved.reshape(*moved.shape[:-2], moved.shape[-2] * moved.shape[-1])

    def forward_expression(self, names):
        return f"{names[0]}.transpose(-2, -3).flatten(-2)"

    def figure_label(self):
        return "merge heads"


def _indices(value: Value, pos: Pos, what: str) -> tuple[int, ...] | int:
    if isinstance(value, list | tuple):
        if not value:
            raise SpecError(f"{what} needs at least one index", pos)
        return tuple(as_int(item, pos, what, minimum=0) for item in value)
    return as_int(value, pos, what, minimum=0)


@dataclass(frozen=True)
class Take(Layer):
    """Chosen tokens: ``take K`` is token K as a vector of C (the class token for the
    head), ``take [0, 1]`` a sequence of those tokens."""

    kind: ClassVar[str] = "take"
    example: ClassVar[str] = "tokens; take 1"
    variants: ClassVar[tuple[str, ...]] = ("tokens; take [0, 2]",)
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("index", _indices, "the token index", positional=True, required=True),
    )
    usage: ClassVar[str] = "take K | take [K, ...] (token K as a vector; a list keeps a sequence)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    index: tuple[int, ...] | int = 0

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        chosen = self.index if isinstance(self.index, tuple) else (self.index,)
        if max(chosen) >= shape[-2]:
            raise ShapeProblem(f"take {max(chosen)} is past the last of {shape[-2]} tokens (counting from 0)")
        if isinstance(self.index, tuple):
            return Tokens((*shape[:-2], len(self.index), shape[-1]))
        return (shape[-1],) if len(shape) == 2 else Tokens((*shape[:-2], shape[-1]))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        if isinstance(self.index, tuple):
            return x[..., list(self.index), :]
        return x[..., self.index, :]

    def forward_expression(self, names):
        index = list(self.index) if isinstance(self.index, tuple) else self.index
        return f"{names[0]}[..., {index!r}, :]"

    def figure_label(self):
        return f"token {self.index}" if isinstance(self.index, int) else f"tokens {list(self.index)}"


@dataclass(frozen=True)
class Mean(Layer):
    """The mean over tokens: N x C -> C (MLP-Mixer's and DeiT-style average pooling)."""

    kind: ClassVar[str] = "mean"
    example: ClassVar[str] = "tokens; mean tokens"
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("axis", lambda value, pos, what: value, "the axis", positional=True, required=True, words=("tokens",)),
    )
    usage: ClassVar[str] = "mean tokens (N x C -> C)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    axis: str = "tokens"

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        return (shape[-1],) if len(shape) == 2 else Tokens((*shape[:-2], shape[-1]))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        return x.sum(-2) / x.shape[-2]

    def forward_expression(self, names):
        return f"{names[0]}.mean(-2)"

    def figure_label(self):
        return "mean over tokens"


@dataclass(frozen=True)
class Token(Layer):
    """K learned tokens inserted at position AT (0: before the first): one tensor of
    1 x K x C named by the label, as timm's ``cls_token`` and ``dist_token``."""

    kind: ClassVar[str] = "token"
    example: ClassVar[str] = "tokens; token 1"
    variants: ClassVar[tuple[str, ...]] = ("tokens; token 1; token 2, at=1",)
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("count", _int(), "the number of tokens", positional=True, required=True),
        Argument("at", _int(0), "the position"),
    )
    usage: ClassVar[str] = "token K[, at=P] (K learned tokens inserted before token P, one tensor named by the label)"
    holds_tensor: ClassVar[bool] = True
    count: int = 1
    at: int = 0

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        if len(shape) != 2:
            raise ShapeProblem(f"token needs one sequence of N x C tokens, not {shape_text(shape)}")
        if self.at > shape[0]:
            raise ShapeProblem(f"token at={self.at} is past the end of {shape[0]} tokens")
        return Tokens((shape[0] + self.count, shape[1]))

    def cost(self, inputs, output):
        return self.count * channels(inputs[0]), 0

    def constructor(self, inputs):
        return Ctor("full_parameter", ((1, self.count, channels(inputs[0])), 0.0))

    def initialise(self, module):
        from torch import nn

        nn.init.normal_(module, std=1e-6)  # timm's class token

    def tensor_expression(self, value, tensor, shape):
        learned = f"{tensor}.expand({value}.shape[0], -1, -1)"
        if self.at == 0:
            return f"torch.cat(({learned}, {value}), 1)"
        return f"torch.cat(({value}[:, :{self.at}], {learned}, {value}[:, {self.at}:]), 1)"

    def reference(self, inputs, tensors, training):
        import torch

        (x,) = inputs
        learned = tensors["tensor"].repeat(x.shape[0], 1, 1)
        return torch.cat((x[:, : self.at], learned, x[:, self.at :]), 1)

    def figure_label(self):
        return f"+{self.count} token" + ("s" if self.count > 1 else "")


@dataclass(frozen=True)
class Position(Layer):
    """A learned position embedding added to the tokens: one tensor of 1 x N x C named
    by the label, as timm's ``pos_embed``."""

    kind: ClassVar[str] = "position"
    example: ClassVar[str] = "tokens; position"
    spelled: ClassVar[bool] = True
    usage: ClassVar[str] = "position (adds a learned N x C tensor, named by the label)"
    holds_tensor: ClassVar[bool] = True

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        if len(shape) != 2:
            raise ShapeProblem(f"position needs one sequence of N x C tokens, not {shape_text(shape)}")
        return shape

    def cost(self, inputs, output):
        return math.prod(inputs[0]), 0

    def constructor(self, inputs):
        return Ctor("full_parameter", ((1, *inputs[0]), 0.0))

    def initialise(self, module):
        from torch import nn

        nn.init.trunc_normal_(module, std=0.02)  # timm's position embedding

    def tensor_expression(self, value, tensor, shape):
        return f"{value} + {tensor}"

    def reference(self, inputs, tensors, training):
        return inputs[0] + tensors["tensor"]

    def figure_label(self):
        return "+ position"


@dataclass(frozen=True)
class Attention(Layer):
    """Multi-head self-attention over a token sequence, in timm's ``Attention`` layout:
    ``qkv`` (one linear layer to queries, keys and values), optional ``q_norm`` and
    ``k_norm`` (a layer norm per head), ``proj``. N x C -> N x C.

    The reference is the textbook formula written out, softmax(Q K^T / sqrt(d)) V per
    head; the module calls ``torch.nn.functional.scaled_dot_product_attention``. MACs
    count the two linear layers and, as fvcore does, the two matrix products Q K^T and
    A V (N x N x C each)."""

    kind: ClassVar[str] = "attention"
    example: ClassVar[str] = "tokens; attention heads=2"
    variants: ClassVar[tuple[str, ...]] = (
        "tokens; attention heads=2, qkv_bias=false, qk_norm=true",
        "tokens; attention heads=4, head_dim=3",
        "attention heads=2, qkv_bias=false, rel_pos=logits, proj=false",
        "attention heads=4, head_dim=3, rel_pos=logits",
        "tokens; attention heads=2, proj=false",
        "attention heads=2, out=12, head_first=true, rel_pos=bias",
        "tokens; attention heads=2, out=6, head_first=true",
        "tokens; attention heads=2, sr_ratio=3",
        "tokens; attention heads=1, sr_ratio=1",
        "tokens; attention heads=2, sr_ratio=2, qkv_bias=false, qk_norm=true, proj_bias=false",
        "tokens; attention heads=2, window=4, shift=2",
        "tokens; attention heads=2, window=5",
        "tokens; merge_patches 2x2; attention heads=2, window=4x3, shift=2x1",
    )
    spelled: ClassVar[bool] = True
    figure: ClassVar[str] = "box"
    figure_fill: ClassVar[str] = "fc"
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("heads", _int(), "heads", required=False),
        Argument("head_dim", _int(), "head_dim"),
        Argument("qkv_bias", as_bool, "qkv_bias"),
        Argument("qk_norm", as_bool, "qk_norm"),
        Argument("proj_bias", as_bool, "proj_bias"),
        Argument("rel_pos", lambda value, pos, what: value, "rel_pos", words=("none", "logits", "bias")),
        Argument("proj", as_bool, "proj"),
        Argument("out_channels", _int(), "out"),
        Argument("head_first", as_bool, "head_first"),
        Argument("sr_ratio", _int(), "sr_ratio"),
        Argument("window", _pair(), "window"),
        Argument("shift", _pair(0), "shift"),
    )
    usage: ClassVar[str] = (
        "attention heads=H[, head_dim=D, qkv_bias=true, qk_norm=false, proj_bias=true, rel_pos=none|logits|bias, "
        "proj=true, out=C, head_first=false, sr_ratio=R, window=W, shift=S]"
    )
    heads: int = 8
    head_dim: int | None = None  # None: C / heads
    qkv_bias: bool = True
    qk_norm: bool = False
    proj_bias: bool = True
    # Relative position logits (BoTNet: Srinivas et al., 2021, after Bello et al., 2019):
    # a learned table per axis of a feature map, timm's PosEmbedRel (`pos_embed.height_rel`,
    # `pos_embed.width_rel`), each query's dot product with the rows of its offsets to the key.
    rel_pos: str = "none"
    # Without it (BoTNet's BottleneckAttn) the heads' concatenated values are the output.
    proj: bool = True
    # proj's output width (None: the input's), as timm's Attention2d widens a CoAtNet stage's first block.
    out_channels: int | None = None
    # qkv's channels grouped by head, each head's q, k, v together (timm's Attention2d head_first).
    head_first: bool = False
    #: PVT v2's spatial-reduction attention (its ``q``/``kv`` layout): keys and values from
    #: the tokens' grid reduced by an R x R convolution of stride R. None: one ``qkv``.
    sr_ratio: int | None = None
    #: Attention within W x W windows of a grid of tokens, with a learned relative position bias.
    window: Pair | None = None
    #: The shifted windows' cyclic shift (and its mask); 0: none.
    shift: Pair = (0, 0)
    #: The input grid's height and width (sr_ratio= and window= read it), recorded when the node
    #: is made (for_input).
    grid: Pair | None = None
    #: Its input is a token sequence: a 4-d tensor is then sequences of tokens (unfold's
    #: patches), not a feature map; filled in by for_input, as the reference sees only tensors.
    on_tokens: bool = dataclasses.field(default=False, repr=False)

    def _head_dim(self, shape: Shape) -> int:
        return self.head_dim if self.head_dim is not None else channels(shape) // self.heads

    def output_shape(self, inputs):
        shape = inputs[0] if layout(inputs[0]) == "map" else _token_input(self.kind, inputs[0])
        if self.head_dim is None and channels(shape) % self.heads:
            raise ShapeProblem(
                f"attention heads={self.heads} needs channels divisible by {self.heads}, "
                f"but there are {channels(shape)}",
                "choose heads that divide the channels, or give head_dim=",
            )
        _check_windows(self, shape)
        if self.sr_ratio is not None:
            _reduced_grid(self, shape)
        return _attention_output_shape(self, shape)

    def for_input(self, shape):
        if not isinstance(shape, Tokens):
            return self
        reads_grid = (self.sr_ratio is not None or self.window is not None) and _has_grid(shape)
        return dataclasses.replace(self, on_tokens=True, grid=shape.grid if reads_grid else self.grid)

    def cost(self, inputs, output):
        if self.window is not None:
            return _windowed_cost(self, inputs[0])
        if self.sr_ratio is not None:
            return _reduction_cost(self, inputs[0])
        shape = inputs[0]
        groups, tokens, width = _attention_extent(shape)
        inner = self.heads * self._head_dim(shape)
        params = width * 3 * inner + (3 * inner if self.qkv_bias else 0)
        out = self.out_channels or width
        params += inner * out + (out if self.proj_bias else 0) if self.proj else 0
        params += 4 * self._head_dim(shape) if self.qk_norm else 0
        macs = groups * (tokens * width * 3 * inner + 2 * tokens * tokens * inner)
        macs += groups * tokens * inner * out if self.proj else 0
        extra_params, extra_macs = _relative_position_cost(self, shape)
        return params + extra_params, macs + extra_macs

    def constructor(self, inputs):
        if self.sr_ratio is not None:
            return _reduction_constructor(self, inputs[0])
        return Ctor(
            "Attention",
            (channels(inputs[0]), self.heads, self._head_dim(inputs[0])),
            (
                ("qkv_bias", self.qkv_bias),
                ("qk_norm", self.qk_norm),
                ("proj_bias", self.proj_bias),
                *_attention_options(self, inputs[0]),
                *_window_kwargs(self, inputs[0]),
            ),
        )

    def initialise(self, module):
        if self.sr_ratio is not None:
            return _reduction_initialise(module)
        for child in (module.qkv, module.q_norm, module.k_norm, module.proj):
            if any(True for _ in child.parameters()):
                child.reset_parameters()
        _initialise_relative_position(self, module)
        _initialise_windows(module)

    def reference(self, inputs, tensors, training):
        if self.sr_ratio is not None:
            return _reduction_reference(self, inputs[0], tensors)
        (x,) = inputs
        if self.window is not None:
            return _windowed_reference(self, x, tensors)
        if x.dim() == 4 and not self.on_tokens:
            return _attention_map_reference(self, x, tensors)
        functional = _functional()
        *groups, tokens, _ = x.shape
        dim = self.head_dim if self.head_dim is not None else x.shape[-1] // self.heads
        qkv = functional.linear(x, tensors["qkv.weight"], tensors.get("qkv.bias"))
        qkv = _qkv_in_order(self, qkv.reshape(*groups, tokens, -1), dim)
        qkv = qkv.reshape(*groups, tokens, 3, self.heads, dim)
        q, k, v = (qkv.select(-3, index).transpose(-2, -3) for index in range(3))  # ... x heads x N x d
        if self.qk_norm:
            q = _layer_norm_last(q, tensors["q_norm.weight"], tensors["q_norm.bias"], 1e-6)
            k = _layer_norm_last(k, tensors["k_norm.weight"], tensors["k_norm.bias"], 1e-6)
        scores = (q @ k.transpose(-1, -2)) / dim**0.5
        weights = _softmax_last(scores)
        out = (weights @ v).transpose(-2, -3).reshape(*groups, tokens, self.heads * dim)
        if not self.proj:
            return out
        return functional.linear(out, tensors["proj.weight"], tensors.get("proj.bias"))

    def figure_label(self):
        if self.sr_ratio is not None and self.sr_ratio > 1:
            return f"attention, {self.heads} heads, keys /{self.sr_ratio}"
        return f"attention, {self.heads} heads" + _window_label(self)


# Windows (Swin): attention within windows of a grid of tokens -------------------------


@dataclass(frozen=True)
class WindowPlan:
    """Where a grid's windows fall, by timm's rule (SwinTransformerBlock): along an axis
    where the grid is no larger than the window, the window is the grid and nothing is
    shifted; the grid is padded at its end to whole windows (after the shift)."""

    grid: Pair
    window: Pair
    shift: Pair

    @property
    def padded(self) -> Pair:
        return (
            -(-self.grid[0] // self.window[0]) * self.window[0],
            -(-self.grid[1] // self.window[1]) * self.window[1],
        )

    @property
    def count(self) -> int:
        """The number of windows."""
        return self.padded[0] // self.window[0] * (self.padded[1] // self.window[1])

    @property
    def area(self) -> int:
        """Tokens per window."""
        return self.window[0] * self.window[1]


def _windows_for_input(layer: Attention, shape: Shape) -> Attention:
    import dataclasses

    if layer.window is None or not _has_grid(shape):
        return layer  # without a grid, output_shape reports it
    return dataclasses.replace(layer, grid=shape.grid)


def window_plan(layer: Attention) -> WindowPlan:
    grid = layer.grid
    assert layer.window is not None and grid is not None
    window = tuple(min(size, wanted) for size, wanted in zip(grid, layer.window, strict=True))
    shift = tuple(
        0 if size <= wanted else moved for size, wanted, moved in zip(grid, layer.window, layer.shift, strict=True)
    )
    return WindowPlan(grid, window, shift)  # type: ignore[arg-type]


def _check_windows(layer: Attention, shape: Shape) -> None:
    if layer.window is None:
        if any(layer.shift):
            raise ShapeProblem("attention shift= needs window=", "shifted windows: window=7, shift=3")
        return
    if not _has_grid(shape):
        raise ShapeProblem(
            f"attention window= needs a grid of tokens, but its input ({shape_text(shape)}) is not one",
            "the tokens of `tokens` (from a feature map) form a grid; learned tokens, take and transpose end it",
        )
    others = [
        written
        for written, used in (
            ("rel_pos=", layer.rel_pos != "none"),
            ("proj=false", not layer.proj),
            ("out=", layer.out_channels is not None),
            ("head_first=", layer.head_first),
            ("sr_ratio=", layer.sr_ratio is not None),
        )
        if used
    ]
    if others:
        # The windowed module and reference follow timm's WindowAttention alone: the other
        # layouts' options would be ignored or fail inside torch, so they are refused here.
        raise ShapeProblem(
            f"attention window= does not combine with {', '.join(others)}: window attention is timm's "
            "WindowAttention, with its own relative position bias",
            "write window= (and shift=) with heads=, head_dim=, qkv_bias=, qk_norm= and proj_bias= only",
        )
    if any(moved >= size for moved, size in zip(layer.shift, layer.window, strict=True)):
        raise ShapeProblem(
            f"attention shift={_size(layer.shift)} must be less than its window ({_size(layer.window)})",
            "Swin shifts by half a window: window=7, shift=3",
        )


def _windowed_cost(layer: Attention, shape: Shape) -> tuple[int, int]:
    # As the windows attend separately: qkv and proj run on the padded grid's tokens, and
    # Q K^T and A V within each window; the bias table adds (2 Wh - 1)(2 Ww - 1) x H parameters.
    from dataclasses import replace

    plan = window_plan(layer)
    params, macs = Attention.cost(
        replace(layer, window=None, shift=(0, 0), grid=None), [Tokens((plan.count, plan.area, channels(shape)))], shape
    )
    table = (2 * plan.window[0] - 1) * (2 * plan.window[1] - 1) * layer.heads
    return params + table, macs


def _window_kwargs(layer: Attention, shape: Shape) -> tuple[tuple[str, Any], ...]:
    if layer.window is None:
        return ()
    plan = window_plan(layer)
    return (("window", plan.window), ("shift", plan.shift), ("grid", plan.grid))


def _initialise_windows(module: Any) -> None:
    table = getattr(module, "relative_position_bias_table", None)
    if table is not None:
        from torch import nn

        nn.init.trunc_normal_(table, std=0.02)  # timm's WindowAttention


def _window_label(layer: Attention) -> str:
    if layer.window is None:
        return ""
    return f", window {_size(layer.window)}" + (f", shift {_size(layer.shift)}" if any(layer.shift) else "")


def _size(pair: Pair) -> str:
    """A size as a spec writes it: ``7`` for 7x7, ``7x5`` otherwise."""
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _windowed_reference(layer: Attention, x: Any, tensors: Mapping[str, Any]) -> Any:
    """Swin's shifted-window attention written out (Liu et al., 2021, section 3.2), as
    timm computes it: the grid shifted cyclically up and left, zero-padded to whole
    windows, each window attending within itself with a relative position bias, tokens
    of different regions of the shifted grid kept apart by -100 added to their scores,
    then everything undone."""
    import torch

    functional = _functional()
    plan = window_plan(layer)
    (height, width), (win_h, win_w), (shift_h, shift_w) = plan.grid, plan.window, plan.shift
    pad_h, pad_w = plan.padded
    batch, _, width_c = x.shape
    grid = x.reshape(batch, height, width, width_c)
    rows = (torch.arange(height, device=x.device) + shift_h) % height  # out[i] = in[i + shift]
    cols = (torch.arange(width, device=x.device) + shift_w) % width
    shifted = grid[:, rows][:, :, cols]
    padded = x.new_zeros(batch, pad_h, pad_w, width_c)
    padded[:, :height, :width] = shifted

    # Each padded position's region: before the last window, in the last window but not
    # shifted in, shifted in from the start (per axis; one region where nothing shifts).
    def regions(size: int, window: int, shift: int) -> list[int]:
        if not shift:
            return [0] * size
        return [0 if i < size - window else 1 if i < size - shift else 2 for i in range(size)]

    region_h, region_w = regions(pad_h, win_h, shift_h), regions(pad_w, win_w, shift_w)
    dim = layer.head_dim if layer.head_dim is not None else width_c // layer.heads
    table = tensors["relative_position_bias_table"]
    positions = [(i, j) for i in range(win_h) for j in range(win_w)]
    index = torch.tensor(
        [[(a[0] - b[0] + win_h - 1) * (2 * win_w - 1) + a[1] - b[1] + win_w - 1 for b in positions] for a in positions],
        device=x.device,
    )
    bias = table[index].permute(2, 0, 1)  # heads x area x area
    out = x.new_zeros(batch, pad_h, pad_w, width_c)
    for top in range(0, pad_h, win_h):
        for left in range(0, pad_w, win_w):
            tokens = padded[:, top : top + win_h, left : left + win_w].reshape(batch, plan.area, width_c)
            labels = torch.tensor([3 * region_h[top + i] + region_w[left + j] for i, j in positions], device=x.device)
            mask = (labels[:, None] != labels[None, :]) * -100.0
            qkv = functional.linear(tokens, tensors["qkv.weight"], tensors.get("qkv.bias"))
            qkv = qkv.reshape(batch, plan.area, 3, layer.heads, dim)
            q, k, v = (qkv.select(2, part).transpose(1, 2) for part in range(3))  # batch x heads x area x d
            if layer.qk_norm:
                q = _layer_norm_last(q, tensors["q_norm.weight"], tensors["q_norm.bias"], 1e-6)
                k = _layer_norm_last(k, tensors["k_norm.weight"], tensors["k_norm.bias"], 1e-6)
            scores = (q @ k.transpose(-1, -2)) / dim**0.5 + bias + mask.to(x.dtype)
            weights = _softmax_last(scores)
            attended = (weights @ v).transpose(1, 2).reshape(batch, plan.area, layer.heads * dim)
            attended = functional.linear(attended, tensors["proj.weight"], tensors.get("proj.bias"))
            out[:, top : top + win_h, left : left + win_w] = attended.reshape(batch, win_h, win_w, width_c)
    out = out[:, :height, :width]
    back_rows = (torch.arange(height, device=x.device) - shift_h) % height
    back_cols = (torch.arange(width, device=x.device) - shift_w) % width
    return out[:, back_rows][:, :, back_cols].reshape(batch, height * width, width_c)


def _grid_input(kind: str, shape: Shape) -> Tokens:
    if not _has_grid(shape):
        raise ShapeProblem(
            f"{kind} needs a grid of tokens, but its input ({shape_text(shape)}) is not one",
            "the tokens of `tokens` (from a feature map) form a grid; learned tokens, take and transpose end it",
        )
    return shape


@dataclass(frozen=True)
class MergePatches(Layer):
    """Swin's patch merging, less its norm and linear layer: each SH x SW patch of
    neighbouring tokens of a grid becomes one token of their channels concatenated, in
    timm's order (column offset, then row offset, then channel: x0, x1, x2, x3 of the
    paper's code for 2x2). An odd grid is zero-padded at its end first, as timm does."""

    kind: ClassVar[str] = "merge_patches"
    example: ClassVar[str] = "tokens; merge_patches 2x2"
    variants: ClassVar[tuple[str, ...]] = ("tokens; merge_patches 3x2",)
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("size", _pair(), "the patch's height and width", positional=True, required=True),
    )
    usage: ClassVar[str] = "merge_patches SHxSW (H x W grid of C-channel tokens -> H/SH x W/SW grid of SH SW C)"
    size: Pair = (2, 2)
    #: The input grid's height and width, recorded when the node is made.
    grid: Pair | None = None

    def for_input(self, shape):
        import dataclasses

        return dataclasses.replace(self, grid=shape.grid) if _has_grid(shape) else self

    def output_shape(self, inputs):
        shape = _grid_input(self.kind, inputs[0])
        (height, width), (step_h, step_w) = shape.grid, self.size
        grid = (-(-height // step_h), -(-width // step_w))
        return Tokens((grid[0] * grid[1], shape[-1] * step_h * step_w), grid)

    def constructor(self, inputs):
        return Ctor("MergePatches", (self.grid, self.size))

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        (height, width), (step_h, step_w) = self.grid, self.size
        batch, _, width_c = x.shape
        padded = x.new_zeros(batch, -(-height // step_h) * step_h, -(-width // step_w) * step_w, width_c)
        padded[:, :height, :width] = x.reshape(batch, height, width, width_c)
        parts = [padded[:, row::step_h, col::step_w] for col in range(step_w) for row in range(step_h)]
        merged = _cat(parts, -1)
        return merged.reshape(batch, -1, merged.shape[-1])

    def figure_label(self):
        return f"merge {self.size[0]}x{self.size[1]} patches"


def _cat(parts: list[Any], axis: int) -> Any:
    import torch

    return torch.cat(parts, axis)


def _attention_extent(shape: Shape) -> tuple[int, int, int]:
    """(sequences attended separately, tokens in each, channels) of attention's input: a
    feature map's H W positions are one sequence."""
    if layout(shape) == "map":
        return 1, shape[1] * shape[2], shape[0]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def _attention_output_shape(layer: Attention, shape: Shape) -> Shape:
    if layer.rel_pos != "none" and layout(shape) != "map":
        raise ShapeProblem(
            f"attention rel_pos={layer.rel_pos} needs a C x H x W feature map (its tables follow H and W), "
            f"but its input is {shape_text(shape)}",
            "grid HxW turns a token sequence back into a feature map",
        )
    if layer.out_channels is not None and not layer.proj:
        raise ShapeProblem("attention out= sets proj's output width, but proj=false leaves proj out", "remove out=")
    out = (layer.out_channels or channels(shape)) if layer.proj else layer.heads * layer._head_dim(shape)
    if layout(shape) == "map":
        return (out, shape[1], shape[2])
    return Tokens((*shape[:-1], out), shape.grid)


def _relative_position_cost(layer: Attention, shape: Shape) -> tuple[int, int]:
    """The tables' parameters, and the MACs of each query against them (one matrix product
    per axis, Q R^T, as timm's rel_logits_1d computes and fvcore counts)."""
    if layer.rel_pos == "bias":  # a table lookup and an add: no MACs
        return (2 * shape[1] - 1) * (2 * shape[2] - 1) * layer.heads, 0
    if layer.rel_pos != "logits":
        return 0, 0
    _, height, width = shape
    dim = layer._head_dim(shape)
    rows = (2 * height - 1) + (2 * width - 1)
    return rows * dim, layer.heads * height * width * dim * rows


def _attention_options(layer: Attention, shape: Shape) -> tuple[tuple[str, Any], ...]:
    """The module's keyword arguments for the options after proj_bias, only where they
    differ from its defaults (so the generated source of a ViT is as it was)."""
    options: tuple[tuple[str, Any], ...] = ()
    if not layer.proj:
        options += (("proj", False),)
    if layout(shape) == "map":
        options += (("feature_map", (shape[1], shape[2])),)
    if layer.rel_pos != "none":
        options += (("rel_pos", layer.rel_pos),)
    if layer.out_channels is not None:
        options += (("out", layer.out_channels),)
    if layer.head_first:
        options += (("head_first", True),)
    return options


def _initialise_relative_position(layer: Attention, module: Any) -> None:
    if layer.rel_pos == "logits":
        from torch import nn

        for table in module.pos_embed.values():
            nn.init.trunc_normal_(table, std=module.head_dim**-0.5)  # timm's BottleneckAttn
    if layer.rel_pos == "bias":
        from torch import nn

        nn.init.trunc_normal_(module.rel_pos["relative_position_bias_table"], std=0.02)  # timm's RelPosBias


def _attention_map_reference(layer: Attention, x: Any, tensors: Mapping[str, Any]) -> Any:
    """Attention over a feature map's positions, qkv (and proj) as 1x1 convolutions, the
    textbook formula: softmax(Q K^T / sqrt(d) + L) V, where L[i, j] = q_i . (h[y_j - y_i]
    + w[x_j - x_i]) with rel_pos=logits (rows offset by H - 1 and W - 1)."""
    import torch

    functional = _functional()
    batch, _, height, width = x.shape
    dim = layer._head_dim((x.shape[1], height, width))
    qkv = functional.conv2d(x, tensors["qkv.weight"], tensors.get("qkv.bias"))
    qkv = _qkv_in_order(layer, qkv.reshape(batch, -1, height * width).transpose(1, 2), dim).transpose(1, 2)
    qkv = qkv.reshape(batch, 3, layer.heads, dim, height * width).transpose(-1, -2)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]  # batch x heads x N x d
    if layer.qk_norm:
        q = _layer_norm_last(q, tensors["q_norm.weight"], tensors["q_norm.bias"], 1e-6)
        k = _layer_norm_last(k, tensors["k_norm.weight"], tensors["k_norm.bias"], 1e-6)
    scores = (q @ k.transpose(-1, -2)) / dim**0.5
    if layer.rel_pos == "logits":
        rows = torch.arange(height, device=x.device).repeat_interleave(width)  # y of each position
        cols = torch.arange(width, device=x.device).repeat(height)  # x of each position
        offsets_h = tensors["pos_embed.height_rel"][rows[None, :] - rows[:, None] + height - 1]  # N x N x d
        offsets_w = tensors["pos_embed.width_rel"][cols[None, :] - cols[:, None] + width - 1]
        scores = scores + torch.einsum("bhic,ijc->bhij", q, offsets_h + offsets_w)
    if layer.rel_pos == "bias":
        # B[h, i, j] = T[y_i - y_j, x_i - x_j, h]: the table's rows, (2 H - 1) x (2 W - 1), by offset.
        rows = torch.arange(height, device=x.device).repeat_interleave(width)
        cols = torch.arange(width, device=x.device).repeat(height)
        table = tensors["rel_pos.relative_position_bias_table"].reshape(2 * height - 1, 2 * width - 1, layer.heads)
        offsets = table[rows[:, None] - rows[None, :] + height - 1, cols[:, None] - cols[None, :] + width - 1]
        scores = scores + offsets.permute(2, 0, 1)
    weights = _softmax_last(scores)
    out = (weights @ v).transpose(-1, -2).reshape(batch, layer.heads * dim, height, width)
    if layer.proj:
        out = functional.conv2d(out, tensors["proj.weight"], tensors.get("proj.bias"))
    return out


def _qkv_in_order(layer: Attention, qkv: Any, dim: int) -> Any:
    """qkv's channels (the last axis) as q, k, v, each heads x dim: with head_first they
    come as heads x (q, k, v) x dim."""
    if not layer.head_first:
        return qkv
    import torch

    parts = qkv.reshape(*qkv.shape[:-1], layer.heads, 3, dim)
    return torch.cat([parts[..., which, :].flatten(-2) for which in range(3)], -1)


# PVT v2's spatial-reduction attention (attention sr_ratio=R), timm's pvt_v2.Attention. Its
# reduction lives inside the attention's module (timm's keys attn.sr, attn.norm), so it is
# an option of the kind rather than layers written before it.


def _reduced_grid(layer: Attention, shape: Shape) -> Pair:
    """The grid of the keys and values: the tokens' grid after the R x R, stride R convolution."""
    ratio = layer.sr_ratio or 1
    if len(shape) != 2 or not isinstance(shape, Tokens):
        raise ShapeProblem(f"attention sr_ratio={ratio} needs one sequence of N x C tokens, not {shape_text(shape)}")
    if layer.rel_pos != "none" or not layer.proj or layer.out_channels is not None or layer.head_first:
        raise ShapeProblem(
            f"attention sr_ratio={ratio} is PVT v2's layout (q, kv, proj) and takes no rel_pos, proj=false, out= "
            "or head_first",
            "leave those options out, or sr_ratio",
        )
    if layer.grid is None:
        raise ShapeProblem(
            f"attention sr_ratio={ratio} reduces the tokens' grid, but these {shape_text(shape)} have none "
            "(a learned token, take or transpose made them)",
            "make the tokens from a feature map (tokens) and keep learned tokens out of this block",
        )
    height, width = layer.grid
    if ratio > 1 and (height < ratio or width < ratio):
        raise ShapeProblem(
            f"attention sr_ratio={ratio} needs a grid of at least {ratio}x{ratio}, but the tokens' grid is "
            f"{height}x{width}",
            "use a smaller sr_ratio or a larger input",
        )
    return height // ratio, width // ratio


def _reduction_cost(layer: Attention, shape: Shape) -> tuple[int, int]:
    tokens, width = shape[-2], shape[-1]
    head_dim = layer._head_dim(shape)
    inner = layer.heads * head_dim
    ratio = layer.sr_ratio or 1
    keys = math.prod(_reduced_grid(layer, shape))
    params = width * inner + width * 2 * inner + inner * width
    params += 3 * inner if layer.qkv_bias else 0
    params += width if layer.proj_bias else 0
    params += 4 * head_dim if layer.qk_norm else 0
    macs = tokens * width * inner + keys * width * 2 * inner + 2 * tokens * keys * inner + tokens * inner * width
    if ratio > 1:
        params += width * width * ratio * ratio + width + 2 * width  # sr (with its bias) and norm
        macs += keys * width * width * ratio * ratio
    return params, macs


def _reduction_constructor(layer: Attention, shape: Shape) -> Ctor:
    return Ctor(
        "SpatialReductionAttention",
        (channels(shape), layer.heads, layer._head_dim(shape), tuple(layer.grid or (1, 1)), layer.sr_ratio),
        (("qkv_bias", layer.qkv_bias), ("qk_norm", layer.qk_norm), ("proj_bias", layer.proj_bias)),
    )


def _reduction_initialise(module: Any) -> None:
    for child in module.children():
        if any(True for _ in child.parameters()):
            child.reset_parameters()


def _reduction_reference(layer: Attention, x: Any, tensors: Mapping[str, Any]) -> Any:
    """softmax(Q K^T / sqrt(d)) V per head, with K and V from the reduced tokens, written out."""
    functional = _functional()
    batch, tokens, width = x.shape
    dim = layer.head_dim if layer.head_dim is not None else width // layer.heads
    ratio = layer.sr_ratio or 1
    q = functional.linear(x, tensors["q.weight"], tensors.get("q.bias"))
    q = q.reshape(batch, tokens, layer.heads, dim).transpose(1, 2)
    source = x
    if ratio > 1:
        height, grid_width = layer.grid or (1, 1)
        feature_map = x.transpose(1, 2).reshape(batch, width, height, grid_width)
        reduced = functional.conv2d(feature_map, tensors["sr.weight"], tensors["sr.bias"], stride=ratio)
        source = reduced.reshape(batch, width, -1).transpose(1, 2)
        source = _layer_norm_last(source, tensors["norm.weight"], tensors["norm.bias"], 1e-5)
    kv = functional.linear(source, tensors["kv.weight"], tensors.get("kv.bias"))
    kv = kv.reshape(batch, source.shape[1], 2, layer.heads, dim)
    k, v = (kv[:, :, index].transpose(1, 2) for index in range(2))  # batch x heads x M x d
    if layer.qk_norm:
        q = _layer_norm_last(q, tensors["q_norm.weight"], tensors["q_norm.bias"], 1e-6)
        k = _layer_norm_last(k, tensors["k_norm.weight"], tensors["k_norm.bias"], 1e-6)
    scores = (q @ k.transpose(-1, -2)) / dim**0.5
    weights = _softmax_last(scores)
    out = (weights @ v).transpose(1, 2).reshape(batch, tokens, layer.heads * dim)
    return functional.linear(out, tensors["proj.weight"], tensors.get("proj.bias"))


def _softmax_last(scores: Any) -> Any:
    """The softmax over the last axis, written out (the references never call the fused kernels)."""
    weights = (scores - scores.amax(-1, keepdim=True)).exp()
    return weights / weights.sum(-1, keepdim=True)


def _layer_norm_last(x: Any, weight: Any, bias: Any, eps: float) -> Any:
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt() * weight + bias


# MobileViT's patches (Mehta and Rastegari, 2022): a feature map as one sequence of patches
# per position within a patch, attended separately, and back.


@dataclass(frozen=True)
class Unfold(Layer):
    """A feature map as patches: C x H x W -> (P_h P_w) x (H/P_h W/P_w) x C tokens, one
    sequence of the patches for each position within a patch (MobileViT's unfolding,
    timm's MobileVitBlock), positions and patches row-major. The patches' grid is the
    tokens' grid, which ``fold`` reads."""

    kind: ClassVar[str] = "unfold"
    example: ClassVar[str] = "unfold 1x1"
    variants: ClassVar[tuple[str, ...]] = ("unfold 11x1", "unfold 1x11")
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("patch", _pair(), "the patch size", positional=True, required=True),
    )
    usage: ClassVar[str] = "unfold PxP (C x H x W -> (P P) x (H W / P P) x C tokens: the patches at each position)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    patch: Pair = (2, 2)

    def output_shape(self, inputs):
        channels_, height, width = spatial(self.kind, inputs[0])
        patch_h, patch_w = self.patch
        if height % patch_h or width % patch_w:
            raise ShapeProblem(
                f"unfold {patch_h}x{patch_w} needs a feature map whose height and width divide by the patch, "
                f"but it is {shape_text(inputs[0])}",
                "choose an input size that divides (timm's MobileViT resizes the map instead)",
            )
        grid = (height // patch_h, width // patch_w)
        return Tokens((patch_h * patch_w, grid[0] * grid[1], channels_), grid)

    def reference(self, inputs, tensors, training):
        import torch

        (x,) = inputs
        patch_h, patch_w = self.patch
        # The sequence of position (i, j) holds pixel (i, j) of every patch, patches row-major.
        sequences = [
            x[:, :, i::patch_h, j::patch_w].flatten(2).transpose(1, 2) for i in range(patch_h) for j in range(patch_w)
        ]
        return torch.stack(sequences, 1)

    def forward_expression(self, names):
        patch_h, patch_w = self.patch
        return (
            f"{names[0]}.unflatten(2, (-1, {patch_h})).unflatten(4, (-1, {patch_w}))"
            ".permute(0, 3, 5, 2, 4, 1).flatten(3, 4).flatten(1, 2)"
        )

    def figure_label(self):
        return f"unfold {self.patch[0]}x{self.patch[1]} patches"


@dataclass(frozen=True)
class Fold(Layer):
    """Patches back to a feature map, the inverse of ``unfold``: (P_h P_w) x N x C tokens
    on their grid of N = h x w patches -> C x (h P_h) x (w P_w)."""

    kind: ClassVar[str] = "fold"
    example: ClassVar[str] = "unfold 1x1; fold 1x1"
    variants: ClassVar[tuple[str, ...]] = (
        "unfold 11x1; ln; fold 11x1",
        "unfold 1x11; fc 5; fold 1x11",
        "unfold 11x1; attention heads=2; fold 11x1",  # a 4-d tensor of sequences, not a map
    )
    spelled: ClassVar[bool] = True
    arguments: ClassVar[tuple[Argument, ...]] = (
        Argument("patch", _pair(), "the patch size", positional=True, required=True),
    )
    usage: ClassVar[str] = "fold PxP ((P P) x N x C tokens on their grid -> C x H x W: unfold's inverse)"
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    patch: Pair = (2, 2)
    grid: Pair | None = None  # the patches' grid, filled in by for_input

    def for_input(self, shape):
        if isinstance(shape, Tokens) and shape.grid is not None:
            return dataclasses.replace(self, grid=shape.grid)
        return self

    def output_shape(self, inputs):
        shape = _token_input(self.kind, inputs[0])
        patch_h, patch_w = self.patch
        if len(shape) != 3 or shape[0] != patch_h * patch_w:
            raise ShapeProblem(
                f"fold {patch_h}x{patch_w} needs {patch_h * patch_w} sequences of patches, "
                f"but its input is {shape_text(shape)}",
                "fold with the patch size that unfold used",
            )
        if self.grid is None or self.grid[0] * self.grid[1] != shape[1]:
            raise ShapeProblem(
                f"fold {patch_h}x{patch_w} needs the patches' grid, but these {shape_text(shape)} have none",
                "fold the tokens that unfold made (a learned token, take or transpose loses their grid)",
            )
        return (shape[2], self.grid[0] * patch_h, self.grid[1] * patch_w)

    def reference(self, inputs, tensors, training):
        (x,) = inputs
        patch_h, patch_w = self.patch
        rows, columns = self.grid or (1, 1)
        out = x.new_empty(x.shape[0], x.shape[-1], rows * patch_h, columns * patch_w)
        for i in range(patch_h):
            for j in range(patch_w):
                out[:, :, i::patch_h, j::patch_w] = (
                    x[:, i * patch_w + j].transpose(1, 2).reshape(x.shape[0], x.shape[-1], rows, columns)
                )
        return out

    def forward_expression(self, names):
        patch_h, patch_w = self.patch
        return (
            f"{names[0]}.unflatten(1, ({patch_h}, {patch_w})).unflatten(3, {tuple(self.grid or (1, 1))!r})"
            ".permute(0, 5, 3, 1, 4, 2).flatten(4, 5).flatten(2, 3)"
        )

    def figure_label(self):
        return f"fold {self.patch[0]}x{self.patch[1]} patches"


# Joins and shortcuts ------------------------------------------------------------------


@dataclass(frozen=True)
class Add(Layer):
    """A sum of two or more values of one shape: the residual join (``add shortcut``) or
    an ``add { ... }`` branch."""

    kind: ClassVar[str] = "add"
    example: ClassVar[str] = "add a, b"
    arity: ClassVar[int | None] = None
    in_place_operator: ClassVar[str | None] = "+="
    is_join: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"

    def output_shape(self, inputs):
        first = inputs[0]
        for other in inputs[1:]:
            if other != first:
                raise ShapeProblem(f"cannot add {_shape(other)} to {_shape(first)}: the shapes differ")
        return first

    def reference(self, inputs, tensors, training):
        total = inputs[0]
        for other in inputs[1:]:
            total = total + other
        return total

    def forward_expression(self, names):
        return " + ".join(names)

    def figure_label(self):
        return "+"


@dataclass(frozen=True)
class Mul(Layer):
    """The current value times a branch's output, which may be C x 1 x 1 (a gate per
    channel, broadcast over positions: squeeze-and-excitation) or the same shape."""

    kind: ClassVar[str] = "mul"
    example: ClassVar[str] = "mul a, b"
    variants: ClassVar[tuple[str, ...]] = ("avgpool; sigmoid; let g; mul a, g",)
    arity: ClassVar[int | None] = None
    is_join: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"

    def output_shape(self, inputs):
        first = inputs[0]
        for other in inputs[1:]:
            gate = len(first) == 3 and other == (first[0], 1, 1)
            if other != first and not gate:
                raise ShapeProblem(
                    f"cannot multiply {_shape(first)} by {_shape(other)}",
                    f"the branch must end at {_shape(first)} or at {first[0]}x1x1 (one factor per channel)",
                )
        return first

    def reference(self, inputs, tensors, training):
        product = inputs[0]
        for other in inputs[1:]:
            product = product * other
        return product

    def forward_expression(self, names):
        return " * ".join(names)

    def figure_label(self):
        return "×"


@dataclass(frozen=True)
class Cat(Layer):
    """Values concatenated along channels."""

    kind: ClassVar[str] = "cat"
    example: ClassVar[str] = "cat a, b"
    arity: ClassVar[int | None] = None
    is_join: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"

    def output_shape(self, inputs):
        first = inputs[0]
        for other in inputs[1:]:
            if len(other) != len(first) or other[1:] != first[1:]:
                raise ShapeProblem(
                    f"cannot concatenate {_shape(other)} to {_shape(first)}: the sizes after the channels differ"
                )
        return (sum(shape[0] for shape in inputs), *first[1:])

    def reference(self, inputs, tensors, training):
        import torch

        return torch.cat(inputs, 1)

    def forward_expression(self, names):
        return f"torch.cat(({', '.join(names)},), 1)"

    def figure_label(self):
        return "concat"


@dataclass(frozen=True)
class Sub(Layer):
    """The first value less the others, all of one shape: PoolFormer's token mixer,
    ``pool(x) - x`` (``sub p, x``), or ``sub { ... }``, the current value less a branch's."""

    kind: ClassVar[str] = "sub"
    example: ClassVar[str] = "sub a, b"
    arity: ClassVar[int | None] = None
    in_place_operator: ClassVar[str | None] = "-="
    is_join: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"

    def output_shape(self, inputs):
        first = inputs[0]
        for other in inputs[1:]:
            if other != first:
                raise ShapeProblem(f"cannot subtract {_shape(other)} from {_shape(first)}: the shapes differ")
        return first

    def reference(self, inputs, tensors, training):
        difference = inputs[0]
        for other in inputs[1:]:
            difference = difference - other
        return difference

    def forward_expression(self, names):
        return " - ".join(names)

    def figure_label(self):
        return "−"


@dataclass(frozen=True)
class Matmul(Layer):
    """The matrix product of two token values, over their last two axes: (..., N, K)
    times (..., K, M) -> (..., N, M). Attention's Q K^T (with K transposed first) and
    A V, written out; its MACs are N K M per leading group (fvcore's count)."""

    kind: ClassVar[str] = "matmul"
    example: ClassVar[str] = "from a; tokens; let p; from b; tokens; transpose; let q; matmul p, q"
    arity: ClassVar[int | None] = 2
    is_join: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"

    def output_shape(self, inputs):
        left, right = (_token_input(self.kind, shape) for shape in inputs)
        if len(left) != len(right) or left[:-2] != right[:-2] or left[-1] != right[-2]:
            raise ShapeProblem(
                f"cannot multiply {shape_text(left)} by {shape_text(right)}",
                "the first's last size must be the second's next to last (transpose one of them)",
            )
        return Tokens((*left[:-1], right[-1]), left.grid)

    def cost(self, inputs, output):
        left, right = inputs
        return 0, math.prod(left[:-1]) * left[-1] * right[-1]

    def reference(self, inputs, tensors, training):
        left, right = inputs
        return (left.unsqueeze(-1) * right.unsqueeze(-3)).sum(-2)  # written out, not through matmul

    def forward_expression(self, names):
        return f"{names[0]} @ {names[1]}"

    def figure_label(self):
        return "matmul"


@dataclass(frozen=True)
class FusedAttention(Layer):
    """``torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=S)``: what the
    attention fusion pass (resdsl/passes/fuse_attention.py) makes of a written-out
    softmax(Q K^T * S) V. Never written in a spec; its reference is the formula."""

    kind: ClassVar[str] = "fused_attention"
    arity: ClassVar[int | None] = 3
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"
    scale: float = 1.0

    def output_shape(self, inputs):
        query, key, value = inputs
        if key != value[:-1] + key[-1:] or query[:-2] != key[:-2] or query[-1] != key[-1]:
            raise ShapeProblem(f"attention of {shape_text(query)} over {shape_text(key)}, {shape_text(value)}")
        return Tokens((*query[:-1], value[-1]), getattr(query, "grid", None))

    def cost(self, inputs, output):
        query, key, value = inputs
        groups = math.prod(query[:-2])
        return 0, groups * (query[-2] * key[-2] * query[-1] + query[-2] * key[-2] * value[-1])

    def reference(self, inputs, tensors, training):
        query, key, value = inputs
        scores = (query @ key.transpose(-1, -2)) * self.scale
        return _softmax_last(scores) @ value

    def forward_expression(self, names):
        q, k, v = names
        return f"torch.nn.functional.scaled_dot_product_attention({q}, {k}, {v}, scale={self.scale!r})"

    def figure_label(self):
        return "attention"


@dataclass(frozen=True)
class Split(Layer):
    """One part of a value split along channels (``split N`` or ``split [SIZES]``): part
    `part` of `parts` equal groups, or of the groups `sizes`. A spec's list of parts
    exists only in the front end; in the IR each part is one node reading the value."""

    kind: ClassVar[str] = "split"
    example: ClassVar[str] = "split [3, 5]; let s; cat s[1], a, s[0]"
    variants: ClassVar[tuple[str, ...]] = ("split 2; let s; add s[1], s[0]",)
    aliases_input: ClassVar[bool] = True  # a view of its input
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    part: int = 0
    parts: int = 1
    sizes: tuple[int, ...] = ()
    #: The channel axis of the input: 1 for a feature map, -1 for a token sequence
    #: (attention's qkv split in three), set by the expander from the value's layout.
    axis: int = 1

    def bounds(self, channels: int) -> tuple[int, int]:
        """The channels [start, stop) of this part, for an input of `channels`."""
        if self.sizes:
            if sum(self.sizes) != channels:
                raise ShapeProblem(
                    f"split {list(self.sizes)} makes {sum(self.sizes)} channels, but its input has {channels}",
                    "the sizes of a split must add up to the channels it splits",
                )
            start = sum(self.sizes[: self.part])
            return start, start + self.sizes[self.part]
        if channels % self.parts:
            raise ShapeProblem(
                f"split {self.parts} does not divide the input's {channels} channels",
                f"split into a divisor of {channels}, or give the sizes: split [..]",
            )
        width = channels // self.parts
        return self.part * width, (self.part + 1) * width

    def output_shape(self, inputs):
        (shape,) = inputs
        start, stop = self.bounds(channels(shape))
        if isinstance(shape, Tokens):
            return Tokens((*shape[:-1], stop - start), shape.grid)
        return (stop - start, *shape[1:])

    def reference(self, inputs, tensors, training):
        import torch

        x = inputs[0]
        sizes = list(self.sizes) or [x.shape[self.axis] // self.parts] * self.parts
        return torch.split(x, sizes, dim=self.axis)[self.part]

    def forward_expression(self, names):
        if self.sizes:
            start = sum(self.sizes[: self.part])
            where = f"{start}:{start + self.sizes[self.part]}"
            return f"{names[0]}[..., {where}]" if self.axis == -1 else f"{names[0]}[:, {where}]"
        # Equal parts: the shape pass checked they divide.
        return f"{names[0]}.chunk({self.parts}, {self.axis})[{self.part}]"

    def figure_label(self):
        return f"split {self.part + 1}/{len(self.sizes) or self.parts}"


@dataclass(frozen=True)
class Weighted(Layer):
    """``weighted WEIGHTS, VALUES``: the sum of WEIGHTS[i] * VALUES[i]. Its inputs are the
    `count` weights, then the `count` values; a weight may be C x 1 x 1 (one factor per
    channel, broadcast over positions) or the values' shape."""

    kind: ClassVar[str] = "weighted"
    example: ClassVar[str] = "avgpool; conv 1x1, 16; softmax groups=2; split 2; let w; weighted w, [a, b]"
    arity: ClassVar[int | None] = None
    computed_inline: ClassVar[bool] = True
    builds_module: ClassVar[bool] = False
    figure: ClassVar[str] = "join"
    count: int = 1

    def output_shape(self, inputs):
        weights, values = inputs[: self.count], inputs[self.count :]
        first = values[0]
        for other in values[1:]:
            if other != first:
                raise ShapeProblem(f"weighted values of different shapes: {_shape(first)} and {_shape(other)}")
        for weight in weights:
            if weight != first and not (len(first) == 3 and weight == (first[0], 1, 1)):
                raise ShapeProblem(
                    f"a weight of {_shape(weight)} cannot scale a value of {_shape(first)}",
                    f"weights must be {_shape(first)} or {first[0]}x1x1 (one factor per channel)",
                )
        return first

    def reference(self, inputs, tensors, training):
        import torch

        weights, values = inputs[: self.count], inputs[self.count :]
        return torch.stack([torch.mul(w, v) for w, v in zip(weights, values, strict=True)]).sum(0)

    def forward_expression(self, names):
        weights, values = names[: self.count], names[self.count :]
        return " + ".join(f"{w} * {v}" for w, v in zip(weights, values, strict=True))

    def figure_label(self):
        return "weighted sum"


@dataclass(frozen=True)
class ZeroPad(Layer):
    """Option A's parameter-free shortcut: subsample by `stride`, append zero channels."""

    kind: ClassVar[str] = "zeropad"
    stride: Pair = (1, 1)
    extra_channels: int = 0

    def output_shape(self, inputs):
        channels, height, width = inputs[0]
        return (channels + self.extra_channels, -(-height // self.stride[0]), -(-width // self.stride[1]))

    def constructor(self, inputs):
        return Ctor("ZeroPadShortcut", (self.stride, self.extra_channels))

    def reference(self, inputs, tensors, training):
        x = inputs[0][:, :, :: self.stride[0], :: self.stride[1]]
        return _functional().pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def figure_label(self):
        return "zero-pad" + (f", /{self.stride[0]}" if self.stride != (1, 1) else "")


def _shape(shape: Shape) -> str:
    return shape_text(shape)


# Statements to layers ------------------------------------------------------------

#: The residual join, written ``add shortcut``, and where a shortcut starts, ``tap shortcut``.
ADD_SHORTCUT = "add"
TAP_SHORTCUT = "tap"

#: Other frameworks' names for our layer kinds: no spelling distance leads from
#: "batchnorm" to "bn", so users coming from PyTorch or Keras get told directly.
SYNONYMS = {
    "batchnorm": "bn",
    "batchnorm2d": "bn",
    "batch_norm": "bn",
    "bn2d": "bn",
    "groupnorm": "gn",
    "group_norm": "gn",
    "layernorm": "ln",
    "layer_norm": "ln",
    "linear": "fc",
    "dense": "fc",
    "conv2d": "conv",
    "convolution": "conv",
    "maxpool2d": "maxpool",
    "max_pool": "maxpool",
    "avgpool2d": "avgpool",
    "avg_pool": "avgpool",
    "adaptiveavgpool2d": "avgpool",
    "swish": "silu",
    "leakyrelu": "leaky_relu",
    "droppath": "drop_path",
    "stochastic_depth": "drop_path",
    "eca": "channel_conv",
    "layer_scale": "layerscale",
    "ls": "layerscale",
    "radix_softmax": "softmax",
    "shortcut": "add",
    "residual": "add",
}

#: How a missing positional argument is named in "conv needs ...".
_ARGUMENT_NAMES = {
    "kernel": "a kernel size (KxK)",
    "out_channels": "an output size (OUT)",
    "out_features": "an output size (OUT)",
    "p": "a probability (P)",
    "groups": "a number of groups",
    "min_val": "a lower bound (MIN)",
    "max_val": "an upper bound (MAX)",
    "factor": "a factor (K)",
    "init": "an initial scale (INIT)",
}

#: Keyword spellings that differ from the field they set (``conv 3x3, 64, out=...`` is not one).
_KEYWORD_FIELDS = {"out": "out_channels"}


def layer_kind(name: str, pos: Pos, extra: tuple[str, ...] = ()) -> type[Layer]:
    kind = LAYER_KINDS.get(name)
    if kind is None:
        raise unknown("layer kind", name, [*LAYER_KINDS, *extra], pos, guess=SYNONYMS.get(name.lower()))
    return kind


def _argument_value(argument: Argument, expr: ast.Expr, env: Mapping[str, Value]) -> Any:
    if not argument.words:
        return evaluate(expr, env)
    if isinstance(expr, ast.Name):
        if expr.id in argument.words:
            return expr.id
        raise unknown(argument.what, expr.id, argument.words, expr.pos)
    raise SpecError(f"{argument.what} is one of the words {', '.join(argument.words)}", expr.pos)


def build_layer(kind: type[Layer], args: tuple[ast.Arg, ...], env: Mapping[str, Value], pos: Pos) -> Layer:
    """Evaluate a layer statement's arguments in `env` and build its typed layer."""
    positional = [argument for argument in kind.arguments if argument.positional]
    keywords = {argument.name: argument for argument in kind.arguments}
    values: dict[str, tuple[Value, Pos]] = {}
    positional_seen = 0
    for arg in args:
        if isinstance(arg, ast.Positional):
            if positional_seen >= len(positional):
                required = sum(1 for argument in positional if argument.required)
                raise SpecError(
                    f"too many arguments for {kind.kind}: takes {required or 'none'} before keywords",
                    arg.pos,
                    f"write: {kind.usage}",
                )
            values[positional[positional_seen].name] = (
                _argument_value(positional[positional_seen], arg.value, env),
                arg.value.pos,
            )
            positional_seen += 1
            continue
        name = _KEYWORD_FIELDS.get(arg.name, arg.name)
        if name not in keywords or keywords[name].required:
            allowed = [a.name for a in kind.arguments if not a.required]
            err = unknown("keyword argument", arg.name, allowed, arg.name_pos, of=kind.kind)
            if not allowed:
                err.hint = f"{kind.kind} takes no keywords"
            raise err
        if name in values:
            raise SpecError(f"{arg.name} is given twice", arg.name_pos)
        values[name] = (_argument_value(keywords[name], arg.value, env), arg.value.pos)
    missing = [argument.name for argument in kind.arguments if argument.required and argument.name not in values]
    if missing:
        wanted = " and ".join(_ARGUMENT_NAMES.get(name, name) for name in missing)
        raise SpecError(f"{kind.kind} needs {wanted}", pos, f"write: {kind.usage}")
    return kind.from_arguments(values, pos)
