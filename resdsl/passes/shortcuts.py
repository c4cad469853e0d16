"""Passes 3 and 4: decide each block's shortcut, then build it.

:func:`plan_shortcut` is the one function that decides what feeds an ``add
shortcut`` (the paper's section 3.3 and Table 3):

- ``A``: identity; where dimensions increase, subsample by the stride and pad the
  new channels with zeros (parameter-free);
- ``B``: identity; a 1x1 projection (conv with the stride, then BN) where shapes differ;
- ``C``: a projection on every shortcut;
- ``none``: no shortcut; the add disappears (the plain network).

``validate`` plans every join and stores the plan under the add node's
``shortcut`` key, reporting the joins no option can make; ``insert_shortcuts``
then materialises the plans.
"""

from __future__ import annotations

from dataclasses import dataclass

from resdsl.errors import ShapeError
from resdsl.ir import Network, new_node, node_error
from resdsl.layers import Pair, Projection, Shape, ZeroPad
from resdsl.passes.shapes import ShapeProblem, output_shape


@dataclass(frozen=True)
class ShortcutPlan:
    """What feeds one add: ``identity``, ``zeropad``, ``projection`` or ``none``."""

    kind: str
    stride: Pair = (1, 1)
    in_shape: Shape = ()
    out_shape: Shape = ()

    @property
    def changes_dimensions(self) -> bool:
        return self.in_shape != self.out_shape


def _stride_between(shortcut: Shape, main: Shape) -> Pair:
    """The stride s with ceil(H / s) == H' (and likewise W), as a strided 1x1 conv gives."""
    strides = []
    for size, target in zip(shortcut[1:], main[1:], strict=True):
        stride = -(-size // target) if target else 0
        if target < 1 or -(-size // stride) != target:
            raise ShapeProblem(
                f"the shortcut carries {shortcut[1]}x{shortcut[2]} but the block outputs {main[1]}x{main[2]}: "
                "no stride of the shortcut maps one onto the other",
                "a block may only shrink its input by a whole stride (pad its convolutions to keep sizes)",
            )
        strides.append(stride)
    return (strides[0], strides[1])


def plan_shortcut(option: str, shortcut: Shape, main: Shape) -> ShortcutPlan:
    """Decide what carries a block's input (`shortcut`) to its join with `main`."""
    if option == "none":
        return ShortcutPlan("none", in_shape=shortcut, out_shape=main)
    if len(shortcut) != 3 or len(main) != 3:
        raise ShapeProblem("'add shortcut' joins C x H x W tensors, but one side is flat")
    stride = _stride_between(shortcut, main)
    same = shortcut == main
    if option == "C" or (option == "B" and not same):
        return ShortcutPlan("projection", stride, shortcut, main)
    if same:
        return ShortcutPlan("identity", stride, shortcut, main)
    if option == "A":
        if main[0] < shortcut[0]:
            raise ShapeProblem(
                f"option A cannot shrink channels: the shortcut carries {shortcut[0]} but the block outputs {main[0]}",
                "use shortcut B or C, whose 1x1 projection can reduce channels",
            )
        return ShortcutPlan("zeropad", stride, shortcut, main)
    raise ValueError(f"unknown shortcut option {option!r}")  # pragma: no cover - expand checks the option


def validate(network: Network) -> None:
    graph = network.graph
    option = network.settings.shortcut
    for node, attrs in network.nodes("add"):
        inputs = {graph.edges[pred, node]["role"]: graph.nodes[pred]["shape"] for pred in graph.predecessors(node)}
        try:
            attrs["shortcut"] = plan_shortcut(option, inputs["shortcut"], inputs["main"])
        except ShapeProblem as problem:
            raise node_error(graph, node, str(problem), problem.hint, ShapeError) from None


def insert_shortcuts(network: Network) -> None:
    graph = network.graph
    for add, attrs in list(network.nodes("add")):
        plan: ShortcutPlan = attrs["shortcut"]
        preds = {graph.edges[pred, add]["role"]: pred for pred in graph.predecessors(add)}
        source, main = preds["shortcut"], preds["main"]
        if plan.kind == "none":
            for succ in list(graph.successors(add)):
                graph.add_edge(main, succ, **graph.edges[add, succ])
            graph.remove_node(add)
            continue
        if plan.kind == "identity":
            continue
        if plan.kind == "zeropad":
            layer = ZeroPad(plan.stride, plan.out_shape[0] - plan.in_shape[0])
        else:
            layer = Projection(plan.out_shape[0], plan.stride)
        shape = output_shape(layer, plan.in_shape)
        node = new_node(
            graph,
            layer,
            pos=attrs["pos"],
            trace=attrs["trace"],
            scope=attrs["scope"],
            label=None,
            branch="shortcut",
            shape=shape,
        )
        graph.remove_edge(source, add)
        graph.add_edge(source, node, role="main", shape=plan.in_shape)
        graph.add_edge(node, add, role="shortcut", shape=shape)
