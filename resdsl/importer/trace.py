"""Trace an ``nn.Module`` with torch.fx into the importer's flat graph (:class:`Graph`).

Modules the language has a kind for are leaves of the trace (their arguments are read
from the module); everything else is traced through, down to those leaves and to the
functions and methods in :data:`FUNCTIONS`. A module or operation with no meaning in
the language is an :class:`ImportFailure` naming it, the construct the language lacks
and the ``file:line`` of the code that called it.
"""

from __future__ import annotations

import math
import operator
import os
import re
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from resdsl.importer.ops import Graph, ImportFailure, Op, Size

_TORCH_DIR = os.path.dirname(torch.__file__)
_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def _where(node: fx.Node) -> str:
    """The innermost frame of the trace outside torch: the model's own line."""
    frames = _FRAME.findall(node.stack_trace or "")
    for path, line in reversed(frames):
        if not path.startswith(_TORCH_DIR):
            return f"{path}:{line}"
    return f"{frames[-1][0]}:{frames[-1][1]}" if frames else "?"


def _class_name(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _size(value: Any) -> Size:
    if isinstance(value, int):
        return Size((value, value))
    return Size(tuple(int(v) for v in value))


class _Leaf:
    """What a leaf module becomes: ``convert(builder, module, path, source)`` returns
    the op id of its output."""

    def __init__(self, convert: Callable[..., int]) -> None:
        self.convert = convert


# The builder ------------------------------------------------------------------------


class Builder:
    """Makes ops for one fx node at a time: each op takes the node's scope and file:line."""

    def __init__(self) -> None:
        self.ops: dict[int, Op] = {}
        self.scope: tuple[str, ...] = ()
        self.where = "?"
        self.shape: tuple[int, ...] = ()

    def add(
        self,
        kind: str,
        inputs: list[int],
        args: tuple[Any, ...] = (),
        kwargs: tuple[tuple[str, Any], ...] = (),
        label: str | None = None,
        shape: tuple[int, ...] | None = None,
        scope: tuple[str, ...] | None = None,
    ) -> int:
        for source in inputs:
            if not isinstance(source, int) or source not in self.ops:
                raise ImportFailure(
                    f"cannot import {kind}: it reads a value that is not a tensor the network computes",
                    file=self.where,
                )
        index = len(self.ops)
        self.ops[index] = Op(
            index,
            kind,
            args,
            kwargs,
            list(inputs),
            label,
            self.scope if scope is None else scope,
            self.where,
            tuple(self.ops[inputs[0]].shape) if shape is None and inputs else tuple(shape or ()),
        )
        return index

    def fail(self, what: str, lacks: str, hint: str | None = None) -> ImportFailure:
        return ImportFailure(f"cannot import {what}: {lacks}", hint=hint, file=self.where)


# Leaf modules -----------------------------------------------------------------------


def _conv(b: Builder, m: nn.Conv2d, path: str, x: int) -> int:
    if m.padding_mode != "zeros":
        raise b.fail(
            f"{path} ({_class_name(m)})", f"padding_mode={m.padding_mode!r}: the language pads with zeros only"
        )
    kernel, stride, dilation = _size(m.kernel_size), _size(m.stride), _size(m.dilation)
    if isinstance(m.padding, str):
        if m.padding == "valid":
            padding = Size((0, 0))
        elif all(s == 1 for s in stride) and all(d * (k - 1) % 2 == 0 for k, d in zip(kernel, dilation)):
            padding = Size(tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)))
        else:
            raise b.fail(f"{path} ({_class_name(m)})", "padding='same' with an even field: the language pads evenly")
    else:
        padding = _size(m.padding)
    return _conv_op(b, path, x, kernel, m.out_channels, stride, padding, dilation, m.groups, m.bias is not None)


def _conv_op(b, path, x, kernel, out, stride, padding, dilation, groups, bias, extra=()) -> int:
    same = Size(tuple(d * (k // 2) for k, d in zip(kernel, dilation)))
    kwargs: list[tuple[str, Any]] = []
    if stride != (1, 1):
        kwargs.append(("stride", stride))
    if padding != same:
        kwargs.append(("padding", padding))
    if dilation != (1, 1):
        kwargs.append(("dilation", dilation))
    if groups != 1:
        kwargs.append(("groups", groups))
    if bias:
        kwargs.append(("bias", True))
    kwargs.extend(extra)
    return b.add("conv", [x], (kernel, out), tuple(kwargs), label=path, shape=b.shape)


def _std_conv(b: Builder, m: nn.Conv2d, path: str, x: int) -> int:
    # timm's ScaledStdConv2d (and resdsl's own): the language's `standardize=true`.
    if not hasattr(m, "gain") or getattr(m, "use_layernorm", False):
        raise b.fail(f"{path} ({_class_name(m)})", "weight standardisation without a gain")
    padding = _size(m.padding) if not isinstance(m.padding, str) else None
    if padding is None or getattr(m, "same_pad", False):
        raise b.fail(f"{path} ({_class_name(m)})", "input-dependent ('same') padding: the language's padding is fixed")
    extra = [("standardize", True)]
    gamma = float(getattr(m, "gamma", getattr(m, "scale", 1.0)))
    extra.append(("gamma", gamma))
    if float(m.eps) != 1e-5:
        extra.append(("eps", float(m.eps)))
    if hasattr(m, "scale") and not hasattr(m, "gamma"):
        # timm keeps gamma * fan_in ** -0.5 as `scale`: undo the factor the language applies itself.
        fan_in = m.weight[0].numel()
        extra[1] = ("gamma", gamma * math.sqrt(fan_in))
    return _conv_op(
        b,
        path,
        x,
        _size(m.kernel_size),
        m.out_channels,
        _size(m.stride),
        padding,
        _size(m.dilation),
        m.groups,
        m.bias is not None,
        tuple(extra),
    )


def _bn(b: Builder, m: nn.modules.batchnorm._BatchNorm, path: str, x: int) -> int:
    if not (m.affine and m.track_running_stats):
        raise b.fail(f"{path} ({_class_name(m)})", "batch norm without affine weights or running statistics")
    if abs(m.eps - 1e-5) > 1e-12:
        raise b.fail(f"{path} ({_class_name(m)})", f"batch norm with eps={m.eps}: the language's bn has eps 1e-5")
    return b.add("bn", [x], label=path)


def _bn_act(b: Builder, m: nn.Module, path: str, x: int) -> int:
    # timm's BatchNormAct2d: a BN whose `act` and `drop` run after it (no parameters).
    out = _bn(b, m, path, x)
    for name in ("drop", "act"):
        child = getattr(m, name, None)
        if child is not None:
            # Unlabelled: a module inside the BN's own name would be a layer inside a layer.
            out = _leaf_op(b, child, f"{path}.{name}", out)
            if b.ops[out].label == f"{path}.{name}":
                b.ops[out].label = None
    return out


def _gn(b: Builder, m: nn.GroupNorm, path: str, x: int) -> int:
    if not m.affine:
        raise b.fail(f"{path} ({_class_name(m)})", "group norm without affine weights")
    kwargs = (("eps", float(m.eps)),) if m.eps != 1e-5 else ()
    return b.add("gn", [x], (m.num_groups,), kwargs, label=path)


def _ln2d(b: Builder, m: nn.LayerNorm, path: str, x: int) -> int:
    if not m.elementwise_affine or m.bias is None or len(m.normalized_shape) != 1:
        raise b.fail(f"{path} ({_class_name(m)})", "a layer norm without weight and bias, or over more than channels")
    kwargs = (("eps", float(m.eps)),) if m.eps != 1e-6 else ()
    return b.add("ln", [x], (), kwargs, label=path)


def _ln(b: Builder, m: nn.LayerNorm, path: str, x: int) -> int:
    if len(b.ops[x].shape) != 1:
        raise b.fail(
            f"{path} ({_class_name(m)})",
            "a layer norm over the last dimension of a feature map (channels-last layout): "
            "the language's ln normalises channels",
        )
    return _ln2d(b, m, path, x)


def _simple(kind: str) -> Callable[..., int]:
    def convert(b: Builder, m: nn.Module, path: str, x: int) -> int:
        return b.add(kind, [x], label=path)

    return convert


def _leaky(b: Builder, m: nn.LeakyReLU, path: str, x: int) -> int:
    return b.add("leaky_relu", [x], (float(m.negative_slope),), label=path)


def _hardtanh(b: Builder, m: nn.Hardtanh, path: str, x: int) -> int:
    if (m.min_val, m.max_val) == (0.0, 6.0):
        return b.add("relu6", [x], label=path)
    return b.add("hardtanh", [x], (float(m.min_val), float(m.max_val)), label=path)


def _gelu(b: Builder, m: nn.Module, path: str, x: int) -> int:
    if getattr(m, "approximate", "none") != "none":
        raise b.fail(f"{path} ({_class_name(m)})", "GELU's tanh approximation: the language's gelu is exact")
    return b.add("gelu", [x], label=path)


def _passthrough(b: Builder, m: nn.Module, path: str, x: int) -> int:
    return x


def _dropout(b: Builder, m: nn.Dropout, path: str, x: int) -> int:
    if m.p == 0:
        return x
    return b.add("dropout", [x], (float(m.p),), label=path)


def _drop_path(b: Builder, m: nn.Module, path: str, x: int) -> int:
    p = float(getattr(m, "drop_prob", getattr(m, "p", 0.0)))
    if p == 0:
        return x
    if getattr(m, "scale_by_keep", True) is False:
        raise b.fail(f"{path} ({_class_name(m)})", "drop path that does not rescale kept samples")
    return b.add("drop_path", [x], (p,), label=path)


def _maxpool(b: Builder, m: nn.MaxPool2d, path: str, x: int) -> int:
    if _size(m.dilation) != (1, 1) or m.return_indices:
        raise b.fail(f"{path} ({_class_name(m)})", "a dilated max pool, or one that returns indices")
    kernel = _size(m.kernel_size)
    stride = _size(m.stride if m.stride is not None else m.kernel_size)
    padding = _size(m.padding)
    kwargs: list[tuple[str, Any]] = []
    if stride != (1, 1):
        kwargs.append(("stride", stride))
    if padding != Size(k // 2 for k in kernel):
        kwargs.append(("padding", padding))
    if m.ceil_mode:
        kwargs.append(("ceil_mode", True))
    return b.add("maxpool", [x], (kernel,), tuple(kwargs), label=path)


def _avgpool(b: Builder, m: nn.AvgPool2d, path: str, x: int) -> int:
    if m.divisor_override is not None:
        raise b.fail(f"{path} ({_class_name(m)})", "an average pool with divisor_override")
    kernel = _size(m.kernel_size)
    stride = _size(m.stride if m.stride is not None else m.kernel_size)
    padding = _size(m.padding)
    kwargs: list[tuple[str, Any]] = []
    if stride != (1, 1):
        kwargs.append(("stride", stride))
    if padding != (0, 0):
        kwargs.append(("padding", padding))
    if m.ceil_mode:
        kwargs.append(("ceil_mode", True))
    if not m.count_include_pad:
        kwargs.append(("count_include_pad", False))
    return b.add("avgpool", [x], (kernel,), tuple(kwargs), label=path)


def _adaptive_avg(b: Builder, m: nn.AdaptiveAvgPool2d, path: str, x: int) -> int:
    size = m.output_size
    if size not in (1, (1, 1), [1, 1]):
        raise b.fail(
            f"{path} ({_class_name(m)})", f"adaptive average pooling to {size}: the language pools to 1x1 only"
        )
    return b.add("avgpool", [x], label=path, shape=b.shape)


def _flatten(b: Builder, m: nn.Flatten, path: str, x: int) -> int:
    if m.start_dim != 1 or m.end_dim != -1:
        raise b.fail(f"{path} ({_class_name(m)})", "a flatten other than of every dimension after the batch")
    return _flatten_op(b, x, path)


def _flatten_op(b: Builder, x: int, label: str | None = None) -> int:
    if len(b.ops[x].shape) == 1:
        return x  # already flat: the flatten is a no-op
    shape = b.ops[x].shape
    return b.add("flatten", [x], label=label, shape=(math.prod(shape),))


def _linear(b: Builder, m: nn.Linear, path: str, x: int) -> int:
    if len(b.ops[x].shape) != 1:
        x = _flatten_op(b, x)
        if len(b.ops[x].shape) != 1:
            raise b.fail(f"{path} ({_class_name(m)})", "a linear layer over a feature map's last dimension")
    kwargs = () if m.bias is not None else (("bias", False),)
    return b.add("fc", [x], (m.out_features,), kwargs, label=path, shape=(m.out_features,))


def _softmax(b: Builder, m: nn.Softmax, path: str, x: int) -> int:
    if m.dim not in (1, -3 if len(b.ops[x].shape) == 3 else 1):
        raise b.fail(f"{path} ({_class_name(m)})", f"a softmax over dimension {m.dim}: the language's is over channels")
    return b.add("softmax", [x], label=path)


def _channel_conv(b: Builder, m: nn.Conv1d, path: str, x: int) -> int:
    return b.add("channel_conv", [x], (m.kernel_size[0],), label=path)


def _group_softmax(b: Builder, m: nn.Module, path: str, x: int) -> int:
    kwargs: list[tuple[str, Any]] = []
    if m.groups != 1:
        kwargs.append(("groups", m.groups))
    if m.cardinality != 1:
        kwargs.append(("cardinality", m.cardinality))
    return b.add("softmax", [x], (), tuple(kwargs), label=path)


def _scale(b: Builder, m: nn.Module, path: str, x: int) -> int:
    return b.add("scale", [x], (float(m.factor),), label=path)


def _zeropad(b: Builder, m: nn.Module, path: str, x: int) -> int:
    channels = b.ops[x].shape[0] + m.extra_channels
    return b.add("zeropad", [x], (Size(m.stride), m.extra_channels), label=path, shape=(channels, *b.shape[1:]))


def _layer_scale(b: Builder, m: nn.Module, path: str, x: int) -> int:
    # timm's LayerScale / LayerScale2d: x * gamma, one tensor of C values named `gamma`.
    gamma = m.gamma.detach()
    if getattr(m, "inplace", False) is True:
        pass  # in place or not, the product is the same
    return b.add("layerscale", [x], (_init(gamma),), label=f"{path}.gamma")


def _init(tensor: torch.Tensor) -> float:
    # The layer scale's initial value: what the tensor holds if it is constant (a fresh
    # model), else 1 (a trained one: the weights loaded replace it anyway).
    flat = tensor.detach().flatten()
    if flat.numel() and bool((flat == flat[0]).all()) and float(flat[0]) > 0:
        return float(f"{float(flat[0]):.7g}")  # the float32 value as written (1e-6, not 9.99...e-07)
    return 1.0


def _eca(b: Builder, m: nn.Module, path: str, x: int) -> int:
    # timm's EcaModule: sigmoid(conv1d over pooled channels) gates its input.
    conv = m.conv
    if conv.bias is not None or conv.padding[0] != (conv.kernel_size[0] - 1) // 2 or conv.dilation[0] != 1:
        raise b.fail(f"{path} ({_class_name(m)})", "an ECA convolution with a bias, dilation or uneven padding")
    if getattr(m, "use_mlp", False):
        raise b.fail(f"{path} ({_class_name(m)})", "ECA with an MLP")
    scope = (*b.scope, path)
    c = b.ops[x].shape[0]
    pooled = b.add("avgpool", [x], shape=(c, 1, 1), scope=scope)
    weights = b.add("channel_conv", [pooled], (conv.kernel_size[0],), label=f"{path}.conv", scope=scope)
    gate = b.add("sigmoid", [weights], label=f"{path}.gate" if _is_named(m, "gate") else None, scope=scope)
    return b.add("mul", [x, gate], shape=b.ops[x].shape, scope=scope)


def _is_named(m: nn.Module, name: str) -> bool:
    return isinstance(getattr(m, name, None), nn.Module)


def _selective_kernel(b: Builder, m: nn.Module, path: str, x: int) -> int:
    # timm's SelectiveKernel: paths of ConvNormAct (each with its dilation), their sum
    # pooled into attention across the paths (SelectiveKernelAttn), a weighted sum.
    scope = (*b.scope, path)
    n = m.num_paths
    c = b.ops[x].shape[0]
    if m.split_input:
        split = b.add("split", [x], (n,), scope=scope, shape=(c // n, *b.ops[x].shape[1:]))
        sources = [b.add("item", [split], (i,), scope=scope) for i in range(n)]
    else:
        sources = [x] * n
    outs = []
    for i, (source, conv_norm_act) in enumerate(zip(sources, m.paths)):
        outs.append(_conv_norm_act(b, conv_norm_act, f"{path}.paths.{i}", source, scope))
    total = b.add("add", outs, scope=scope)
    attn = m.attn
    pooled = b.add("avgpool", [total], shape=(b.ops[total].shape[0], 1, 1), scope=scope)
    reduced = _leaf_op(b, attn.fc_reduce, f"{path}.attn.fc_reduce", pooled, scope)
    normed = _leaf_op(b, attn.bn, f"{path}.attn.bn", reduced, scope)
    act = _leaf_op(b, attn.act, f"{path}.attn.act", normed, scope)
    select = _leaf_op(b, attn.fc_select, f"{path}.attn.fc_select", act, scope)
    kwargs = (("groups", n),) if n != 1 else ()
    soft = b.add("softmax", [select], (), kwargs, scope=scope)
    parts = b.add("split", [soft], (n,), scope=scope, shape=(b.ops[soft].shape[0] // n, 1, 1))
    weights = [b.add("item", [parts], (i,), scope=scope) for i in range(n)]
    products = [b.add("mul", [o, w], scope=scope) for o, w in zip(outs, weights)]
    return b.add("add", products, scope=scope)


def _conv_norm_act(b: Builder, m: nn.Module, path: str, x: int, scope: tuple[str, ...]) -> int:
    out = x
    for name, child in m.named_children():
        out = _leaf_op(b, child, f"{path}.{name}", out, scope)
    return out


def _leaf_op(b: Builder, m: nn.Module, path: str, x: int, scope: tuple[str, ...] | None = None) -> int:
    """A module met inside a leaf's conversion: converted by its own leaf rule."""
    leaf = leaf_for(m)
    if leaf is None:
        raise b.fail(f"{path} ({_class_name(m)})", "a module the language has no kind for")
    saved = b.scope
    if scope is not None:
        b.scope = scope
    try:
        return leaf.convert(b, m, path, x)
    finally:
        b.scope = saved


def _timm_classes() -> dict[str, Callable[..., int]]:
    table: dict[str, Callable[..., int]] = {
        "timm.layers.norm_act.BatchNormAct2d": _bn_act,
        "timm.layers.norm.LayerNorm2d": _ln2d,
        "timm.layers.linear.Linear": _linear,  # nn.Linear, its forward reworded for TorchScript
        "timm.layers.layers.drop.DropPath": _drop_path,
        "timm.layers.drop.DropPath": _drop_path,
        "timm.layers.eca.EcaModule": _eca,
        "timm.layers.selective_kernel.SelectiveKernel": _selective_kernel,
        "timm.layers.layer_scale.LayerScale": _layer_scale,
        "timm.layers.layer_scale.LayerScale2d": _layer_scale,
        "timm.layers.std_conv.ScaledStdConv2d": _std_conv,
        "timm.layers.activations.GELU": _gelu,
        "timm.layers.activations.Sigmoid": _simple("sigmoid"),
        "timm.layers.activations.Tanh": _simple("tanh"),
        "timm.layers.activations.Swish": _simple("silu"),
        "timm.layers.activations.HardSigmoid": _simple("hardsigmoid"),
        "timm.layers.activations.HardSwish": _simple("hardswish"),
        "resdsl.backends.torch_modules.ChannelConv": _channel_conv,
        "resdsl.backends.torch_modules.DropPath": _drop_path,
        "resdsl.backends.torch_modules.LayerNorm2d": _ln2d,
        "resdsl.backends.torch_modules.GroupSoftmax": _group_softmax,
        "resdsl.backends.torch_modules.ScaledStdConv2d": _std_conv,
        "resdsl.backends.torch_modules.Scale": _scale,
        "resdsl.backends.torch_modules.ZeroPadShortcut": _zeropad,
    }
    return table


#: Leaf module classes by their exact class: a subclass with a forward of its own is
#: not its base (timm's Conv2dSame pads by the input's size, which no conv here does).
LEAVES: dict[type, Callable[..., int]] = {
    nn.Conv2d: _conv,
    nn.BatchNorm2d: _bn,
    nn.BatchNorm1d: _bn,
    nn.GroupNorm: _gn,
    nn.LayerNorm: _ln,
    nn.ReLU: _simple("relu"),
    nn.ReLU6: _simple("relu6"),
    nn.SiLU: _simple("silu"),
    nn.Sigmoid: _simple("sigmoid"),
    nn.Tanh: _simple("tanh"),
    nn.GELU: _gelu,
    nn.Hardsigmoid: _simple("hardsigmoid"),
    nn.Hardswish: _simple("hardswish"),
    nn.LeakyReLU: _leaky,
    nn.Hardtanh: _hardtanh,
    nn.Identity: _passthrough,
    nn.Dropout: _dropout,
    nn.MaxPool2d: _maxpool,
    nn.AvgPool2d: _avgpool,
    nn.AdaptiveAvgPool2d: _adaptive_avg,
    nn.Flatten: _flatten,
    nn.Linear: _linear,
    nn.Softmax: _softmax,
}


def leaf_for(module: nn.Module) -> _Leaf | None:
    cls = type(module)
    if cls in LEAVES:
        return _Leaf(LEAVES[cls])
    name = f"{cls.__module__}.{cls.__qualname__}"
    table = _timm_classes()
    if name in table:
        return _Leaf(table[name])
    return None


def _overrides_leaf(module: nn.Module) -> type | None:
    """The torch.nn leaf class this module subclasses while changing its forward, if any."""
    for base in type(module).__mro__[1:]:
        if base in LEAVES and type(module).forward is not base.forward:
            return base
    return None


class _Tracer(fx.Tracer):
    def __init__(self, leaf_classes: tuple[type, ...], autowrap: tuple[Callable, ...]) -> None:
        super().__init__(autowrap_functions=autowrap)
        self.record_stack_traces = True
        self._leaf_classes = leaf_classes

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if leaf_for(m) is not None or _overrides_leaf(m) is not None:
            return True
        if isinstance(m, self._leaf_classes):
            return True  # registered by timm as not traceable: refused by name below
        return super().is_leaf_module(m, qualname)


def _timm_fx() -> tuple[tuple[type, ...], tuple[Callable, ...]]:
    try:
        from timm.layers import _fx
    except ImportError:
        return (), ()
    return tuple(_fx._leaf_modules), tuple(f for f in _fx._autowrap_functions if callable(f))


def symbolic_trace(model: nn.Module) -> fx.GraphModule:
    leaves, autowrap = _timm_fx()
    tracer = _Tracer(leaves, autowrap)
    try:
        graph = tracer.trace(model)
    except ImportFailure:
        raise
    except Exception as error:  # torch.fx's own: data-dependent control flow and the like
        where = _traceback_where(error)
        raise ImportFailure(
            f"cannot trace {type(model).__name__}: torch.fx could not follow its forward "
            f"({str(error).splitlines()[0]})",
            hint="control flow that depends on tensor values has no meaning in the language",
            file=where,
        ) from None
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


def _traceback_where(error: BaseException) -> str:
    tb = error.__traceback__
    where = "?"
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename
        if not path.startswith(_TORCH_DIR) and "resdsl" not in os.path.basename(os.path.dirname(path)):
            where = f"{path}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


# Functions and methods -------------------------------------------------------------

_ADD = {operator.add, operator.iadd, torch.add, "add", "add_", "__add__"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_", "__mul__"}
_CAT = {torch.cat, getattr(torch, "concat", torch.cat), getattr(torch, "concatenate", torch.cat)}
_ACTIVATIONS: dict[Any, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    "relu": "relu",
    "relu_": "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    "silu": "silu",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    "tanh": "tanh",
    F.hardsigmoid: "hardsigmoid",
    F.hardswish: "hardswish",
}
_PASS = {"contiguous", "clone", operator.pos}


class _Param:
    """A tensor that is a module's own (``get_attr``), perhaps reshaped: a layer scale."""

    def __init__(self, path: str, tensor: torch.Tensor) -> None:
        self.path = path
        self.tensor = tensor


class _Shape:
    """A non-tensor value computed from shapes (``x.shape``, ``x.size(0)``)."""


def _describe(node: fx.Node) -> str:
    target = node.target
    name = getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)
    module = getattr(target, "__module__", None)
    if node.op == "call_method":
        return f"the tensor method .{target}()"
    if module and module not in ("_operator", "builtins"):
        name = f"{module}.{name}"
    return f"the function {name}"


def trace(model: nn.Module, input_shape: tuple[int, ...]) -> Graph:
    """The importer's graph of `model` (traced in eval mode) for one input of `input_shape`."""
    from torch.fx.passes.shape_prop import ShapeProp

    was_training = model.training
    model.eval()
    try:
        gm = symbolic_trace(model)
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(torch.zeros(1, *input_shape))
        except Exception as error:
            raise ImportFailure(
                f"cannot run {type(model).__name__} on an input of {'x'.join(map(str, input_shape))}: "
                f"{str(error).splitlines()[0] if str(error) else type(error).__name__}",
                hint="give the input the model takes with --input CxHxW",
                file=_traceback_where(error),
            ) from None
        return _convert(gm, input_shape)
    finally:
        model.train(was_training)


def _tensor_shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(s) for s in meta.shape)[1:]


def _convert(gm: fx.GraphModule, input_shape: tuple[int, ...]) -> Graph:
    b = Builder()
    env: dict[fx.Node, Any] = {}
    classes: dict[str, str] = {"": _class_name(gm)}
    sequential: set[str] = set()
    output: int | None = None
    modules = dict(gm.named_modules())
    called: set[str] = set()
    for node in gm.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        paths = [path for path, _ in stack.values()]
        for path, cls in stack.values():
            classes[path] = f"{cls.__module__}.{cls.__qualname__}"
            if issubclass(cls, nn.Sequential):
                sequential.add(path)
        if node.op == "call_module":
            paths = paths[:-1] if paths and paths[-1] == node.target else paths
        b.scope = tuple(paths)
        b.where = _where(node)
        b.shape = _tensor_shape(node) or ()
        if node.op == "placeholder":
            if output is not None or any(op.kind == "input" for op in b.ops.values()):
                raise b.fail(f"the input {node.target}", "a network takes one input")
            env[node] = b.add("input", [], shape=tuple(input_shape))
        elif node.op == "output":
            result = node.args[0]
            if not isinstance(result, fx.Node) or not isinstance(env.get(result), int):
                raise b.fail("the network's output", "a network returns one tensor")
            output = env[result]
        elif node.op == "get_attr":
            value = _fetch(gm, str(node.target))
            env[node] = _Param(str(node.target), value) if isinstance(value, torch.Tensor) else value
        elif node.op == "call_module":
            module = modules[str(node.target)]
            made = len(b.ops)
            env[node] = _call_module(b, module, str(node.target), node, env)
            _set_shape(b, env[node], made, node)
            if str(node.target) in called:
                _called_again(b, module, str(node.target), made)
            called.add(str(node.target))
        else:
            made = len(b.ops)
            result = _call_function(b, node, env)
            env[node] = result.id if isinstance(result, _Ref) else result
            _set_shape(b, env[node], made, node)
    if output is None:
        raise ImportFailure("cannot import the network: its forward returns nothing")
    ops, output = _live(b.ops, output)
    return Graph(ops, output, tuple(input_shape), classes, sequential)


def _called_again(b: Builder, module: nn.Module, path: str, made: int) -> None:
    # torchvision's blocks call one ReLU twice: a module without tensors may run in
    # several places, each an unlabelled layer after the first.
    if any(True for _ in module.parameters()) or any(True for _ in module.buffers()):
        raise b.fail(
            f"the module {path} ({_class_name(module)})",
            "it runs twice with the same weights: the language gives each layer its own",
        )
    for index in range(made, len(b.ops)):
        if b.ops[index].label is not None and b.ops[index].label.startswith(path):
            b.ops[index].label = None


def _set_shape(b: Builder, result: Any, made: int, node: fx.Node) -> None:
    # The op that gives a node's value has the shape the trace measured.
    index = result.id if isinstance(result, _Ref) else result
    shape = _tensor_shape(node)
    if isinstance(index, int) and not isinstance(index, bool) and index >= made and shape is not None:
        b.ops[index].shape = shape


def _fetch(gm: fx.GraphModule, target: str) -> Any:
    value: Any = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _call_module(b: Builder, module: nn.Module, path: str, node: fx.Node, env: dict) -> int:
    leaf = leaf_for(module)
    name = f"the module {path} ({_class_name(module)})"
    if leaf is None:
        base = _overrides_leaf(module)
        if base is not None:
            raise b.fail(
                name,
                f"a subclass of {base.__module__}.{base.__name__} with a forward of its own "
                "(such as input-dependent 'same' padding): the language has no kind that computes it",
            )
        raise b.fail(name, "the language has no kind for this module")
    if len(node.args) != 1 or node.kwargs:
        raise b.fail(name, "a layer reads one value")
    x = env.get(node.args[0])
    if not isinstance(x, int):
        raise b.fail(name, "it reads a value that is not a tensor the network computes")
    return leaf.convert(b, module, path, x)


def _tensor(b: Builder, value: Any, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value in b.ops:
        return value
    raise b.fail(what, "one of its operands is not a tensor the network computes")


def _call_function(b: Builder, node: fx.Node, env: dict) -> Any:
    target = node.target
    args = [_value(env, a) for a in node.args]
    kwargs = {k: _value(env, v) for k, v in node.kwargs.items()}
    what = _describe(node)
    out_shape = b.shape
    if node.meta.get("tensor_meta") is None:
        return _Shape()  # x.shape, x.size(0), asserts: shapes are the language's to know
    if args and isinstance(args[0], _Param) and target in ("view", "reshape", "unsqueeze", "to", "type_as", "squeeze"):
        return args[0]  # a module's own tensor laid out for broadcasting: still one factor per channel
    if target in _ADD or target in _MUL:
        left, right = args[0], args[1] if len(args) > 1 else kwargs.get("other")
        if target in _ADD and (kwargs.get("alpha", 1) != 1 or (len(args) > 2 and args[2] != 1)):
            raise b.fail(what, "an add with alpha: the language adds values as they are")
        ref_l, ref_r = isinstance(left, _Ref), isinstance(right, _Ref)
        if ref_l and ref_r:
            a, c = left.id, right.id
            kind = "add" if target in _ADD else "mul"
            return _join(b, kind, [a, c], what)
        if target in _MUL and (ref_l or ref_r):
            x, other = (left, right) if ref_l else (right, left)
            if isinstance(other, _Param):
                return _layer_scale_op(b, x.id, other, what)
            if isinstance(other, (int, float)) and not isinstance(other, bool):
                return b.add("scale", [x.id], (float(other),))
        if target in _ADD and (ref_l or ref_r):
            other = right if ref_l else left
            if isinstance(other, (int, float)) and other == 0:
                return (left if ref_l else right).id
        raise b.fail(what, "an arithmetic operation with a constant or a tensor the language cannot name")
    if target in _CAT:
        values = args[0]
        dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, _Ref) for v in values):
            raise b.fail(what, "a concatenation of values the network does not compute")
        if dim not in (1, -3):
            raise b.fail(what, f"a concatenation along dimension {dim}: the language concatenates channels")
        return _join(b, "cat", [v.id for v in values], what)
    if target in _ACTIVATIONS:
        x = args[0]
        if kwargs.get("inplace") is not None or len(args) > 1:
            pass  # in place or not, the values are the same
        return b.add(_ACTIVATIONS[target], [_tensor(b, _id(x), what)])
    if target in (F.gelu, "gelu"):
        if kwargs.get("approximate", "none") != "none":
            raise b.fail(what, "GELU's tanh approximation: the language's gelu is exact")
        return b.add("gelu", [_tensor(b, _id(args[0]), what)])
    if target in (F.leaky_relu,):
        slope = args[1] if len(args) > 1 else kwargs.get("negative_slope", 0.01)
        return b.add("leaky_relu", [_tensor(b, _id(args[0]), what)], (float(slope),))
    if target in (F.hardtanh,):
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        if (low, high) == (0.0, 6.0):
            return b.add("relu6", [_tensor(b, _id(args[0]), what)])
        return b.add("hardtanh", [_tensor(b, _id(args[0]), what)], (float(low), float(high)))
    if target in _PASS:
        return args[0]
    if target in ("mean", torch.mean):
        x = _tensor(b, _id(args[0]), what)
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        rank = len(b.ops[x].shape)
        if (
            rank == 3
            and dims is not None
            and sorted(d % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])) == [2, 3]
        ):
            pooled = b.add("avgpool", [x], shape=(b.ops[x].shape[0], 1, 1))
            return pooled if keep else _flatten_op(b, pooled)
        raise b.fail(what, "a mean over other dimensions than height and width")
    if target in (F.adaptive_avg_pool2d,):
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        if size not in (1, (1, 1), [1, 1]):
            raise b.fail(what, f"adaptive average pooling to {size}: the language pools to 1x1 only")
        return b.add("avgpool", [_tensor(b, _id(args[0]), what)], shape=out_shape)
    if target in (torch.flatten, "flatten"):
        start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
        end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
        x = _tensor(b, _id(args[0]), what)
        if start != 1 or end != -1:
            raise b.fail(what, "a flatten other than of every dimension after the batch")
        return _flatten_op(b, x)
    if target in ("view", "reshape", torch.reshape):
        x = _tensor(b, _id(args[0]), what)
        if tuple(out_shape) == tuple(b.ops[x].shape):
            return x
        if len(out_shape) == 1 and out_shape[0] == math.prod(b.ops[x].shape):
            return _flatten_op(b, x)
        raise b.fail(what, f"a reshape of {b.ops[x].shape} to {tuple(out_shape)}: the language keeps C x H x W")
    if target in ("softmax", torch.softmax, F.softmax):
        x = _tensor(b, _id(args[0]), what)
        dim = args[1] if len(args) > 1 else kwargs.get("dim")
        if dim not in (1, -3 if len(b.ops[x].shape) == 3 else 1):
            raise b.fail(what, f"a softmax over dimension {dim}: the language's is over channels")
        return b.add("softmax", [x])
    if target in ("chunk", torch.chunk):
        x = _tensor(b, _id(args[0]), what)
        n = args[1] if len(args) > 1 else kwargs.get("chunks")
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        c = b.ops[x].shape[0]
        if dim not in (1, -3) or c % n:
            raise b.fail(what, "a chunk other than into equal groups of channels")
        split = b.add("split", [x], (n,), shape=(c // n, *b.ops[x].shape[1:]))
        return _Split(split, n)
    if target in ("split", torch.split):
        x = _tensor(b, _id(args[0]), what)
        size = args[1] if len(args) > 1 else kwargs.get("split_size_or_sections", kwargs.get("split_size"))
        dim = args[2] if len(args) > 2 else kwargs.get("dim", 0)
        c = b.ops[x].shape[0]
        if dim not in (1, -3):
            raise b.fail(what, "a split other than of channels")
        sizes = [size] * (c // size) + ([c % size] if c % size else []) if isinstance(size, int) else list(size)
        if len(set(sizes)) == 1:
            split = b.add("split", [x], (len(sizes),), shape=(sizes[0], *b.ops[x].shape[1:]))
        else:
            split = b.add("split", [x], (sizes,), shape=b.ops[x].shape)
        return _Split(split, len(sizes))
    if target is operator.getitem:
        container, index = args
        if isinstance(container, _Split) and isinstance(index, int):
            return _Ref(b.add("item", [container.id], (index % container.n,), shape=out_shape))
        if isinstance(container, (tuple, list)):
            return container[index]
        if isinstance(container, _Ref):
            return _Ref(_slice(b, container.id, index, what))
        if isinstance(container, _Shape):
            return _Shape()
        raise b.fail(what, "indexing a value the language cannot name")
    raise b.fail(what, "the language has no kind or join for this operation")


class _Ref:
    """A tensor value: the op that computes it."""

    def __init__(self, id: int) -> None:
        self.id = id


class _Split:
    def __init__(self, id: int, n: int) -> None:
        self.id = id
        self.n = n


def _id(value: Any) -> Any:
    return value.id if isinstance(value, _Ref) else value


def _value(env: dict, value: Any) -> Any:
    if isinstance(value, fx.Node):
        found = env.get(value)
        return _Ref(found) if isinstance(found, int) and not isinstance(found, bool) else found
    if isinstance(value, (list, tuple)):
        return type(value)(_value(env, v) for v in value)
    return value


def _join(b: Builder, kind: str, inputs: list[int], what: str) -> int:
    shapes = [b.ops[i].shape for i in inputs]
    if kind == "mul" and len(inputs) == 2 and shapes[0] != shapes[1] and shapes[0] == tuple(b.shape):
        pass
    elif kind == "mul" and len(inputs) == 2 and shapes[1] == tuple(b.shape) and shapes[0] != shapes[1]:
        inputs = inputs[::-1]  # the language multiplies a full value by per-channel factors
    elif kind != "cat" and len(set(shapes)) != 1:
        raise b.fail(
            what, f"{kind} of values of shapes {' and '.join(map(str, shapes))}: broadcasting other than per channel"
        )
    return b.add(kind, inputs, shape=b.shape)


def _layer_scale_op(b: Builder, x: int, param: _Param, what: str) -> int:
    c = b.ops[x].shape[0]
    if param.tensor.numel() != c or len(b.ops[x].shape) != 3:
        raise b.fail(what, "a product with a tensor that is not one factor per channel")
    return b.add("layerscale", [x], (_init(param.tensor),), label=param.path)


def _slice(b: Builder, x: int, index: Any, what: str) -> int:
    # x[:, a:b]: a channel slice. The split pass below turns slices that tile the channels into a split.
    if (
        isinstance(index, tuple)
        and len(index) == 2
        and index[0] == slice(None)
        and isinstance(index[1], slice)
        and index[1].step in (None, 1)
    ):
        c = b.ops[x].shape[0]
        start, stop, _ = index[1].indices(c)
        return b.add("slice", [x], (start, stop), shape=(stop - start, *b.ops[x].shape[1:]))
    raise b.fail(what, "indexing other than a slice of channels")


def _live(ops: dict[int, Op], output: int) -> tuple[dict[int, Op], int]:
    """The ops the output depends on, renumbered in execution order; channel slices
    that tile their source become a split."""
    order = {i: float(i) for i in ops}
    _slices_to_splits(ops, order)
    keep: set[int] = set()
    stack = [output]
    while stack:
        i = stack.pop()
        if i in keep:
            continue
        keep.add(i)
        stack.extend(ops[i].inputs)
    keep.update(op.id for op in ops.values() if op.kind == "input")
    renumber = {old: new for new, old in enumerate(sorted(keep, key=order.__getitem__))}
    live: dict[int, Op] = {}
    for old, new in sorted(renumber.items(), key=lambda pair: pair[1]):
        op = ops[old]
        op.id = new
        op.inputs = [renumber[i] for i in op.inputs]
        live[new] = op
    return live, renumber[output]


def _slices_to_splits(ops: dict[int, Op], order: dict[int, float]) -> None:
    by_source: dict[int, list[Op]] = {}
    for op in ops.values():
        if op.kind == "slice":
            by_source.setdefault(op.inputs[0], []).append(op)
    for source, slices in by_source.items():
        spans = sorted({(s.args[0], s.args[1]) for s in slices})
        edges = [0]
        for start, stop in spans:
            if start != edges[-1]:
                break
            edges.append(stop)
        if edges[-1] != ops[source].shape[0] or len(edges) != len(spans) + 1:
            raise ImportFailure(
                "cannot import a slice of channels: the language splits channels into groups that cover them all",
                file=slices[0].where,
            )
        sizes = [edges[i + 1] - edges[i] for i in range(len(spans))]
        first = min(slices, key=lambda s: s.id)
        split = max(ops) + 1
        args = (len(sizes),) if len(set(sizes)) == 1 else (sizes,)
        ops[split] = Op(split, "split", args, (), [source], None, first.scope, first.where, first.shape)
        order[split] = first.id - 0.5  # just before the first slice read
        index = {span: i for i, span in enumerate(spans)}
        for s in slices:
            s.kind, s.args, s.inputs = "item", (index[(s.args[0], s.args[1])],), [split]
