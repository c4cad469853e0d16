"""Shape inference, with PyTorch's output-size arithmetic.

:func:`infer_node` writes a node's ``shape`` (its output) from its inputs' shapes
with its kind's :meth:`~resdsl.layers.Layer.output_shape`, the one rule for it. The
expander calls it on every node as it makes it, so shapes are known where a
shortcut is decided; :func:`infer_shapes` re-infers a whole graph, for tools that
change a compiled one.
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
