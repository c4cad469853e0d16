"""Pass 2: shape inference, with PyTorch's output-size arithmetic.

Writes ``shape`` on every node (its output) and on every edge (the tensor that
flows along it). :func:`output_shape` is the one rule per node kind; the shortcut
pass uses it for the nodes it inserts, so no shape is derived twice.
"""

from __future__ import annotations

from resdsl.errors import ShapeError
from resdsl.ir import Network, node_error
from resdsl.layers import (
    Add,
    AvgPool,
    BatchNorm,
    Conv,
    Dropout,
    Flatten,
    Input,
    Layer,
    Linear,
    MaxPool,
    Output,
    Pair,
    Projection,
    ReLU,
    Shape,
    ZeroPad,
)


class ShapeProblem(Exception):
    """Raised by :func:`output_shape`; the pass turns it into a ShapeError at the node."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def window(size: int, kernel: int, stride: int, padding: int, dilation: int = 1) -> int:
    """torch.nn.Conv2d / MaxPool2d output size (floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _spatial(layer_name: str, shape: Shape) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ShapeProblem(
            f"{layer_name} needs a C x H x W input, but its input is flat ({shape[0]} features)",
            "spatial layers must come before the first fc",
        )
    return shape  # type: ignore[return-value]


def _windowed(
    name: str, shape: Shape, channels: int, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair = (1, 1)
) -> Shape:
    _, height, width = _spatial(name, shape)
    out_h = window(height, kernel[0], stride[0], padding[0], dilation[0])
    out_w = window(width, kernel[1], stride[1], padding[1], dilation[1])
    if out_h < 1 or out_w < 1:
        raise ShapeProblem(
            f"{name} {kernel[0]}x{kernel[1]} (stride {stride[0]}, padding {padding[0]}) on a {height}x{width} input "
            f"gives a {max(0, out_h)}x{max(0, out_w)} output: the spatial size reaches zero",
            "use a larger input, fewer downsampling stages or more padding",
        )
    return (channels, out_h, out_w)


def output_shape(layer: Layer, main: Shape | None, shortcut: Shape | None = None) -> Shape:
    """The output shape of `layer` given its input (and, for add, its shortcut input)."""
    match layer:
        case Input(shape=shape):
            return shape
        case Conv():
            channels = _spatial("conv", main)[0]
            if channels % layer.groups or layer.out_channels % layer.groups:
                raise ShapeProblem(
                    f"a conv with groups={layer.groups} needs input and output channels divisible by {layer.groups}, "
                    f"but they are {channels} and {layer.out_channels}"
                )
            return _windowed(
                "conv", main, layer.out_channels, layer.kernel, layer.stride, layer.padding, layer.dilation
            )
        case MaxPool():
            _check_pool_padding("maxpool", layer.kernel, layer.padding)
            return _windowed("maxpool", main, main[0], layer.kernel, layer.stride, layer.padding)
        case AvgPool():
            channels = _spatial("avgpool", main)[0]
            if layer.is_global:
                return (channels, 1, 1)
            _check_pool_padding("avgpool", layer.kernel, layer.padding)
            return _windowed("avgpool", main, channels, layer.kernel, layer.stride, layer.padding)
        case BatchNorm() | ReLU() | Dropout() | Output():
            return main
        case Flatten():
            size = 1
            for dim in main:
                size *= dim
            return (size,)
        case Linear():
            if len(main) != 1:  # pragma: no cover - expand puts a flatten before the first fc
                raise ShapeProblem("fc needs a flat input")
            return (layer.out_features,)
        case Add():
            return main
        case ZeroPad():
            channels, height, width = main
            return (channels + layer.extra_channels, -(-height // layer.stride[0]), -(-width // layer.stride[1]))
        case Projection():
            _, height, width = main
            return (layer.out_channels, window(height, 1, layer.stride[0], 0), window(width, 1, layer.stride[1], 0))
    raise TypeError(f"no shape rule for {layer!r}")  # pragma: no cover


def _check_pool_padding(name: str, kernel: Pair, padding: Pair) -> None:
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ShapeProblem(
            f"{name} padding {padding[0]} is more than half its {kernel[0]}x{kernel[1]} kernel",
            f"PyTorch allows at most padding={kernel[0] // 2} here",
        )


def infer_shapes(network: Network) -> None:
    graph = network.graph
    for node in network.order():
        attrs = graph.nodes[node]
        inputs = {graph.edges[pred, node]["role"]: graph.nodes[pred]["shape"] for pred in graph.predecessors(node)}
        try:
            shape = output_shape(attrs["layer"], inputs.get("main"), inputs.get("shortcut"))
        except ShapeProblem as problem:
            raise node_error(graph, node, str(problem), problem.hint, ShapeError) from None
        attrs["shape"] = shape
        for succ in graph.successors(node):
            graph.edges[node, succ]["shape"] = shape
    network.input_shape = network.settings.input_shape
    network.output_shape = graph.nodes[network.order()[-1]]["shape"]
