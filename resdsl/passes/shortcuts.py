"""Passes 3 and 4: decide each block's shortcut, then build it.

:func:`plan_shortcut` is the one function that decides what feeds an ``add
shortcut`` (the paper's section 3.3 and Table 3):

- ``A``: identity; where dimensions increase, subsample by the stride and pad the
  new channels with zeros (parameter-free);
- ``B``: identity; a projection where shapes differ;
- ``C``: a projection on every shortcut;
- ``none``: no shortcut; the add disappears (the plain network).

An identity carries the block's input; a projection or a zero-pad reads the value
at ``tap shortcut`` when the block taps one (pre-activation blocks), else the
block's input. The projection is the block type the ``projection`` setting names,
by default the prelude's ``conv_bn_projection`` (1x1 convolution with the stride,
then BN).

``validate`` plans every join and stores the plan on its block, reporting the joins
no option can make; ``insert_shortcuts`` then materialises the plans, giving each
join its second input.
"""

from __future__ import annotations

from dataclasses import dataclass

from resdsl.errors import ShapeError, SpecError
from resdsl.ir import BlockInstance, Network, node_error
from resdsl.layers import Pair, Shape, ShapeProblem, ZeroPad
from resdsl.passes.expand import DEFAULT_PROJECTION, Expander
from resdsl.passes.shapes import infer_node


@dataclass(frozen=True)
class ShortcutPlan:
    """What feeds one add: ``identity``, ``zeropad``, ``projection`` or ``none``."""

    kind: str
    stride: Pair = (1, 1)
    in_shape: Shape = ()
    out_shape: Shape = ()
    projection: str | None = None  # the projection block's type, for ``projection``

    @property
    def changes_dimensions(self) -> bool:
        return self.in_shape != self.out_shape


def stride_between(shortcut: Shape, main: Shape) -> Pair:
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


def plan_shortcut(option: str, block_input: Shape, main: Shape, tapped: Shape | None = None) -> ShortcutPlan:
    """Decide what carries a block's input to its join with `main`. `tapped` is the
    shape at ``tap shortcut`` (what a projection or zero-pad reads), if tapped."""
    source = tapped if tapped is not None else block_input
    if option == "none":
        return ShortcutPlan("none", in_shape=source, out_shape=main)
    if len(source) != 3 or len(main) != 3 or len(block_input) != 3:
        raise ShapeProblem("'add shortcut' joins C x H x W tensors, but one side is flat")
    same = block_input == main
    if same and option != "C":
        return ShortcutPlan("identity", (1, 1), block_input, main)
    stride = stride_between(source, main)
    if option in ("B", "C"):
        return ShortcutPlan("projection", stride, source, main)
    if main[0] < source[0]:
        raise ShapeProblem(
            f"option A cannot shrink channels: the shortcut carries {source[0]} but the block outputs {main[0]}",
            "use shortcut B or C, whose 1x1 projection can reduce channels",
        )
    return ShortcutPlan("zeropad", stride, source, main)


def validate(network: Network) -> None:
    graph = network.graph
    option = network.settings.shortcut
    projection = network.settings.projection or DEFAULT_PROJECTION
    for block in network.blocks:
        if block.join is None:
            continue
        (main,) = graph.node(block.join).inputs
        tapped = graph.node(block.tap).shape if block.tap is not None else None
        try:
            plan = plan_shortcut(option, graph.node(block.entry).shape, graph.node(main).shape, tapped)
        except ShapeProblem as problem:
            raise node_error(graph, block.join, str(problem), problem.hint, ShapeError) from None
        if plan.kind == "projection":
            plan = ShortcutPlan(plan.kind, plan.stride, plan.in_shape, plan.out_shape, projection)
        block.plan = plan


def insert_shortcuts(network: Network) -> None:
    graph = network.graph
    expander: Expander = network.instance
    replaced: dict[int, int] = {}  # removed joins -> the value that takes their place
    for block in list(network.blocks):
        if block.join is None:
            continue
        plan: ShortcutPlan = block.plan
        join = block.join
        (main,) = graph.node(join).inputs
        if plan.kind == "none":
            graph.replace_all_uses_with(join, main)
            graph.erase(join)
            replaced[join] = main
            block.join = None
            continue
        if plan.kind == "identity":
            graph.set_inputs(join, (main, block.entry))
            continue
        source = block.shortcut_source
        if plan.kind == "zeropad":
            typed = graph.node(join)
            node = graph.create(
                ZeroPad(plan.stride, plan.out_shape[0] - plan.in_shape[0]),
                (source,),
                pos=typed.pos,
                trace=typed.trace,
                scope=typed.scope,
                block=block.id,
                names=block.names,
                label="downsample",
                written="zeropad",
                role="shortcut",
            ).id
            _add_to_blocks(network, block, node)
            infer_node(graph, node)
            made = [node]
        else:
            node, made = _project(network, expander, block, plan, source)
        graph.set_inputs(join, (main, node))
        block.shortcut_nodes = tuple(made)
    if replaced:
        for block in network.blocks:
            block.entry = _follow(replaced, block.entry)
            block.exit = _follow(replaced, block.exit)
            if block.tap is not None:
                block.tap = _follow(replaced, block.tap)
            block.nodes = [node for node in block.nodes if node not in replaced]


def _follow(replaced: dict[int, int], node: int) -> int:
    while node in replaced:
        node = replaced[node]
    return node


def _add_to_blocks(network: Network, block: BlockInstance, node: int) -> None:
    current: BlockInstance | None = block
    while current is not None:
        current.nodes.append(node)
        current = network.blocks[current.parent] if current.parent is not None else None


def _project(network: Network, expander: Expander, block: BlockInstance, plan: ShortcutPlan, source: int):
    graph = network.graph
    assert plan.projection is not None
    try:
        node, made = expander.projection(plan.projection, plan.out_shape[0], plan.stride, source, block)
    except SpecError as error:
        raise error.with_note(f"in the projection of block '{block.type}'", block.pos) from None
    for new in made:
        infer_node(graph, new)
    shape = graph.node(node).shape if node != source else plan.in_shape
    if node == source or shape != plan.out_shape:
        got = "nothing" if node == source else "x".join(map(str, shape))
        raise node_error(
            graph,
            block.join,
            f"projection '{plan.projection}' gives {got} for this shortcut, but the block outputs "
            f"{'x'.join(map(str, plan.out_shape))}",
            "a projection block must map its input to (out, H / stride, W / stride)",
            ShapeError,
        ).with_note(
            f"projection '{plan.projection}' is defined here", expander.namespace.blocks[plan.projection][0].pos
        )
    return node, made
