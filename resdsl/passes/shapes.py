"""Pass 2: shape inference, with PyTorch's output-size arithmetic.

Writes ``shape`` on every node (its output). Each kind's
:meth:`~resdsl.layers.Layer.output_shape` is the one rule for it; the shortcut pass
uses :func:`infer_node` for the nodes it adds, so no shape is derived twice. A
residual join reads its main path alone until its shortcut is decided, so it has
its main input's shape until then.
"""

from __future__ import annotations

from resdsl.errors import ShapeError
from resdsl.ir import Graph, Network, node_error
from resdsl.layers import Shape, ShapeProblem, window

__all__ = ["ShapeProblem", "infer_node", "infer_shapes", "window"]


def infer_node(graph: Graph, node: int) -> Shape:
    typed = graph.node(node)
    inputs = [graph.node(source).shape for source in typed.inputs]
    try:
        shape = typed.layer.output_shape(inputs)
    except ShapeProblem as problem:
        raise node_error(graph, node, str(problem), problem.hint, ShapeError) from None
    typed.shape = shape
    return shape


def infer_shapes(network: Network) -> None:
    graph = network.graph
    for node in network.order():
        infer_node(graph, node)
    network.input_shape = network.settings.input_shape
    network.output_shape = graph.node(network.order()[-1]).shape
