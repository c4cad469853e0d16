"""Pass 2: shape inference, with PyTorch's output-size arithmetic.

Writes ``shape`` on every node (its output) and on every edge (the tensor that
flows along it). Each kind's :meth:`~resdsl.layers.Layer.output_shape` is the one
rule for it; the shortcut pass uses :func:`infer_node` for the nodes it adds, so
no shape is derived twice.
"""

from __future__ import annotations

import networkx as nx

from resdsl.errors import ShapeError
from resdsl.ir import Network, node_error
from resdsl.layers import ShapeProblem, window

__all__ = ["ShapeProblem", "infer_node", "infer_shapes", "window"]


def infer_node(graph: nx.DiGraph, node: int) -> tuple[int, ...]:
    attrs = graph.nodes[node]
    inputs = [graph.nodes[source]["shape"] for source in attrs["inputs"]]
    if attrs.get("pending_shortcut"):
        # What feeds the residual join is decided from these shapes (validate): until
        # then the join has its main input's shape.
        inputs = inputs[:1]
    try:
        shape = attrs["layer"].output_shape(inputs)
    except ShapeProblem as problem:
        raise node_error(graph, node, str(problem), problem.hint, ShapeError) from None
    attrs["shape"] = shape
    for source in attrs["inputs"]:
        graph.edges[source, node]["shape"] = graph.nodes[source]["shape"]
    return shape


def infer_shapes(network: Network) -> None:
    graph = network.graph
    for node in network.order():
        infer_node(graph, node)
    network.input_shape = network.settings.input_shape
    network.output_shape = graph.nodes[network.order()[-1]]["shape"]
