"""Graphviz backend: networks drawn in the style of the paper's Figure 3.

A column of boxes ("3x3 conv, 128, /2") under the network's title, the shortcuts as
arcs beside it: solid where they are identities, dashed where they change
dimensions, blue where a projection computes them (labelled with the projection
block's name when the spec chose one). Side branches (squeeze-and-excitation's
``mul { ... }``) are drawn as a short column beside the main one, joined at a
circle; a shortcut tapped after a pre-activation starts at its tap; drop path is a
dashed marker. "output size" notes stand left of their own column where the
spatial size changes, and several networks side by side are aligned by them.

The figure is built in two steps: :func:`figure` reads the IR into a
:class:`Column` (boxes, branches, arcs; linear in the network's size), and
:func:`to_dot` lays the columns out with Graphviz. :mod:`resdsl.backends.draw_html`
draws the same columns as an interactive page. Everything is read from the IR's
typed node fields, the kinds' figure traits and :attr:`Network.blocks`; nothing here imports torch or
re-derives a shape, a stride or a block boundary.

Detail levels: ``layer`` (one box per conv, pool and fc, as Fig. 3; with
``all_layers`` also norms, activations and joins), ``block`` (one box per block)
and ``stage`` (one box per stage).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphviz

from resdsl.files import check_target, write_file
from resdsl.ir import BlockInstance, Network, Node
from resdsl.layers import Input, shape_text

DETAILS = ("layer", "block", "stage")
FORMATS = (".svg", ".png", ".pdf", ".dot")
INSTALL_HINT = (
    "Graphviz's 'dot' program is needed to render .svg, .png and .pdf: apt-get install graphviz (or write .dot)"
)

# Fig. 3's palette: convolutions by width, pools and fc set apart.
_FILL = {64: "#f4e8d0", 128: "#e3ecd6", 256: "#dbe6f1", 512: "#eadcec"}
_POOL_FILL = "#f0f0f0"
_FC_FILL = "#fde2c8"
_BRANCH_FILL = "#fbf6d9"
_ARC_GREY = "#555555"
_PROJECTION_BLUE = "#1f5fa8"


class DrawError(Exception):
    """Rendering failed for a reason outside the spec (no `dot`, a bad extension)."""


@dataclass
class Box:
    """One drawn box and the figures of every node folded into it."""

    key: str  # the Graphviz node id, unique in the figure
    label: str
    fill: str
    style: str = "layer"  # "image", "layer", "join", "marker" (drop path), "preact" or "group"
    shape: tuple[int, ...] | None = None
    params: int = 0
    macs: int = 0
    names: list[str] = field(default_factory=list)  # module names, the drawn layer's first
    stage: str | None = None  # the stage it belongs to (the interactive figure collapses by it)
    block: str | None = None  # the stage-level block's module path
    folds: list[str] = field(default_factory=list)  # a group's inner blocks and branches, named in its label
    branch: bool = False  # inside a side branch (``mul { ... }``): kept off the main column
    row: int = 0  # its row, top to bottom: one more than the lowest box it reads
    lane: int = 0  # 0: the main column; -1, -2...: the paths beside it, leftwards

    def add(self, node: Node) -> None:
        self.params += node.params
        self.macs += node.macs
        if not node.layer.graph_end:
            self.names.append(node.name)


@dataclass
class Edge:
    """Values flowing from one box to another: every input of a node drawn in ``target``
    that a node drawn in ``source`` computes."""

    source: str
    target: str
    # "spine": between consecutive boxes of the main column; "skip": from the main column
    # past some of its boxes to a later one; "flow": any other.
    kind: str = "flow"
    lane: int = 0  # the lane it runs down between the rows of its ends


@dataclass
class Arc:
    """A shortcut: from the box whose value it reads to the box of its join."""

    source: str
    target: str
    kind: str  # the ShortcutPlan's kind: identity, zeropad or projection
    changes_dimensions: bool
    label: str = ""  # the projection block's name where the spec chose one
    block: str = ""  # the block's module path
    params: int = 0
    macs: int = 0
    names: list[str] = field(default_factory=list)
    key: str = ""  # where the shortcut's own nodes (a projection's, a zero-pad) are drawn; "" for none


@dataclass
class Column:
    """One network's figure before layout."""

    title: str
    subtitle: str
    boxes: list[Box]  # every box, in the order the network computes them (the main column's top to bottom)
    edges: list[Edge]
    arcs: list[Arc]
    where: dict[int, str] = field(default_factory=dict)  # each IR node's box (or arc) key

    def size_changes(self) -> list[tuple[int, int]]:
        """(box index, size) where the main column's spatial output size changes, the first
        box included: to the size it keeps from there on, not on a way down and back up
        (squeeze-and-excitation's or SK's attention, pooled to 1x1 within a block)."""
        sizes = [
            (index, box.shape[1] if len(box.shape) == 3 else 1)  # a flat output is 1x1
            for index, box in enumerate(self.boxes)
            if box.shape is not None and box.lane == 0
        ]
        changes = []
        previous = None
        largest_after = 0
        for index, size in reversed(sizes):
            if size >= largest_after:
                changes.append((index, size))
            largest_after = max(largest_after, size)
        changes.reverse()
        kept = []
        for index, size in changes:
            if size != previous:
                kept.append((index, size))
            previous = size
        return kept


def _count(number: int) -> str:
    """143.7M, 3.66G, 24.1K: three significant figures or so, as a person reads them."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if number >= scale:
            return f"{number / scale:.{2 if scale == 1e9 else 1}f}{suffix}"
    return str(number)


def layer_label(layer) -> str | None:
    """The paper's wording for a layer Fig. 3 draws, or None for those it leaves out."""
    return layer.figure_label() if layer.figure == "box" else None


def _fill(layer) -> str:
    if layer.figure_fill == "width":
        width = layer.out_channels
        return _FILL.get(width) or _FILL[min(_FILL, key=lambda w: abs(w - width))]
    if layer.figure_fill == "fc":
        return _FC_FILL
    return _POOL_FILL


def _first_argument(block: BlockInstance) -> str:
    return f"{block.type}({block.args[0][1]})" if block.args else f"{block.type}()"


def _stride_text(stride: tuple[int, int]) -> str:
    if stride == (1, 1):
        return ""
    return f", /{stride[0]}" if stride[0] == stride[1] else f", /{stride[0]}x{stride[1]}"


class _Reader:
    """Reads one network's IR into a Column, in one pass over its nodes."""

    def __init__(self, network: Network, prefix: str, detail: str, all_layers: bool) -> None:
        self.network = network
        self.prefix = prefix
        self.detail = detail
        self.all_layers = all_layers
        self.graph = network.graph
        self.by_id = {block.id: block for block in network.blocks}
        self.outermost: dict[int, BlockInstance] = {}
        for block in network.blocks:
            top = block
            while top.parent is not None:
                top = self.by_id[top.parent]
            self.outermost[block.id] = top
        self.shortcut_joins = {block.join for block in network.blocks if block.join is not None}
        self.shortcut_nodes = {node: block for block in network.blocks for node in block.shortcut_nodes}
        self.before_tap = self._before_taps()
        self.boxes: list[Box] = []
        self.by_key: dict[str, Box] = {}
        self.where: dict[int, str] = {}
        self.groups: dict[Any, Box] = {}

    def _before_taps(self) -> set[int]:
        """The pre-activation layers: from a block's entry (exclusive) to its tap."""
        nodes: set[int] = set()
        for block in self.network.blocks:
            if block.tap is None or block.tap == block.entry:
                continue
            node, steps = block.tap, 0
            while node != block.entry and steps <= len(block.nodes):
                nodes.add(node)
                node = self.graph.node(node).inputs[0]
                steps += 1
        return nodes

    def block_of(self, node: Node) -> BlockInstance | None:
        return self.by_id[node.block] if node.block is not None else None

    def _new_box(self, node: Node, label: str, fill: str, style: str = "layer") -> str:
        block = self.block_of(node)
        top = self.outermost[block.id] if block is not None else None
        box = Box(
            f"{self.prefix}n{node.id}",
            label,
            fill,
            style,
            node.shape,
            stage=top.stage if top is not None else None,
            block=top.path if top is not None else None,
            branch=node.role == "branch",
        )
        box.add(node)
        return self._append(box)

    def _append(self, box: Box) -> str:
        self.boxes.append(box)
        self.by_key[box.key] = box
        return box.key

    def _fold(self, node: Node, key: str) -> str:
        self.by_key[key].add(node)
        return key

    def read(self) -> Column:
        network = self.network
        order = list(network.nodes())
        for node in order:
            self.where[node.id] = self._place(node)
        arcs = self._arcs()
        edges = self._edges(order, arcs)
        end = self.where[order[-1].id] if order else None
        _layout(self.boxes, edges, end)
        title = network.name
        subtitle = f"{_count(network.num_params)} params, {_count(network.macs)} MACs"
        return Column(title, subtitle, self.boxes, edges, arcs, self.where)

    def _shown(self, layer) -> bool:
        return self.all_layers or layer.figure == "box"

    def _place(self, node: Node) -> str:
        """The key of the box (or arc) that draws the node, made if it is the first."""
        layer = node.layer
        if isinstance(layer, Input):
            return self._append(Box(f"{self.prefix}image", "image", "white", "image", self.network.input_shape))
        if self.detail != "layer" and node.block is not None:
            return self._group(node)
        block = self.shortcut_nodes.get(node.id)
        if block is not None and block.join is not None:
            return f"{self.prefix}s{block.id}"  # drawn as its arc
        first = self.where.get(node.inputs[0]) if node.inputs else None
        above = self.by_key.get(first) if first is not None else None
        if layer.graph_end:
            return first if first is not None else ""
        fill = _BRANCH_FILL if node.role == "branch" else None
        if layer.figure == "join":
            # A shortcut's add folds into the box above (Fig. 3), unless that box is another
            # join, which would then read as the shortcut's.
            if node.id in self.shortcut_joins and not self.all_layers and above is not None and above.style != "join":
                return self._fold(node, above.key)
            label = layer.figure_label()
            return self._new_box(node, label, "white", "join" if len(label) == 1 else "layer")
        if layer.figure == "marker":
            return self._new_box(node, layer.figure_label(), "white", "marker")
        if self._shown(layer):
            return self._new_box(node, layer.figure_label(), fill or _fill(layer))
        if node.id in self.before_tap:
            # A pre-activation: it is where a tapped shortcut starts, so it gets a box.
            if above is not None and above.style == "preact":
                above.label += f", {layer.figure_label()}"
                return self._fold(node, above.key)
            return self._new_box(node, layer.figure_label(), _POOL_FILL, "preact")
        if above is not None and above.style != "image" and len(self.graph.node(node.inputs[0]).users) == 1:
            return self._fold(node, above.key)  # folded into the box above, figures included
        # A layer that starts a path of its own (RepVGG's BN beside its convolutions, a
        # split's part): the value it reads goes elsewhere too, so it cannot fold.
        return self._new_box(node, layer.figure_label(), fill or _POOL_FILL)

    def _group(self, node: Node) -> str:
        """Block or stage detail: every node of a block, branches and shortcuts included,
        counts in its block's (or stage's) box."""
        top = self.outermost[self.block_of(node).id]
        key = top.id if self.detail == "block" else top.stage
        box = self.groups.get(key)
        if box is None:
            if self.detail == "block":
                label = f"{top.path}: {_first_argument(top)}{_stride_text(top.stride)}"
            else:
                count = next((s.blocks for s in self.network.stages if s.name == top.stage), 1)
                label = f"{top.stage}: {count} x {_first_argument(top)}{_stride_text(top.stride)}"
            box = Box(f"{self.prefix}g{node.id}", label, "", "group", node.shape, stage=top.stage)
            box.block = top.path if self.detail == "block" else None
            self.groups[key] = box
            self._append(box)
        layer = node.layer
        # What the box folds that no label would show: blocks used inside the block (SE,
        # ECA) and side branches, named once each ("bottleneck(64) + se").
        inner = self.block_of(node)
        extra = inner.type if inner is not None and inner is not top else "branch" if node.role == "branch" else None
        if extra is not None and extra not in box.folds:
            box.folds.append(extra)
            first, *rest = box.label.split("\\n", 1)
            box.label = "\\n".join([f"{first} + {extra}", *rest])
        if not box.fill and layer.figure_fill == "width":
            box.fill = _fill(layer)
        if layer.figure == "marker" and node.role == "main" and self.detail == "block":
            box.label += f"\\n{layer.figure_label()}"
        if node.role == "main":
            box.shape = node.shape
        box.add(node)
        return box.key

    def _arcs(self) -> list[Arc]:
        arcs: list[Arc] = []
        written = self.network.settings.projection is not None
        stage_arcs: dict[str, Arc] = {}
        for block in self.network.blocks:
            if block.join is None or block.plan is None or block.join not in self.where:
                continue
            plan = block.plan
            if self.detail == "layer":
                # An identity carries the block's input; a projection or zero-pad reads the tap.
                source = block.entry if plan.kind == "identity" else block.shortcut_source
            elif block.parent is None:
                source = block.entry  # from the box before the block's (or stage's) own
            else:
                continue  # a block inside a block: inside its box
            start, end = self.where.get(source), self.where[block.join]
            key = f"{self.prefix}s{block.id}" if self.detail == "layer" and block.shortcut_nodes else ""
            if start is None or (start == end and not key):
                continue
            label = plan.projection if written and plan.kind == "projection" and plan.projection else ""
            arc = Arc(start, end, plan.kind, plan.changes_dimensions, label, block.path, key=key)
            for node in block.shortcut_nodes if key else ():  # else in the block's box
                shortcut = self.graph.node(node)
                arc.params += shortcut.params
                arc.macs += shortcut.macs
                arc.names.append(shortcut.name)
            if self.detail == "stage":
                # One arc per stage, into the stage's box: dashed if any of its shortcuts
                # changes dimensions, a projection if any block projects.
                previous = stage_arcs.get(end)
                if previous is None:
                    stage_arcs[end] = arc
                    arcs.append(arc)
                else:
                    previous.changes_dimensions |= arc.changes_dimensions
                    if arc.kind == "projection":
                        previous.kind = "projection"
                        previous.label = previous.label or arc.label
                    previous.params += arc.params
                    previous.macs += arc.macs
                continue
            arcs.append(arc)
        return arcs

    def _edges(self, order: list[Node], arcs: list[Arc]) -> list[Edge]:
        """Every input of every node, between the boxes that draw them, once each; but
        what the shortcut arcs draw: an identity's input to its join, and a projection's
        (or zero-pad's) way from its tap through its nodes to the join."""
        carried = {arc.key for arc in arcs if arc.key}
        identities: set[tuple[int, int]] = set()
        if self.detail == "layer":
            identities = {
                (block.entry, block.join)
                for block in self.network.blocks
                if block.join is not None and block.plan is not None and block.plan.kind == "identity"
            }
        edges: list[Edge] = []
        seen: set[tuple[str, str]] = set()
        for node in order:
            target = self.where[node.id]
            if target in carried:
                continue
            for value in node.inputs:
                source = self.where[value]
                if source == target or source in carried or (value, node.id) in identities:
                    continue
                if (source, target) not in seen:
                    seen.add((source, target))
                    edges.append(Edge(source, target))
        return edges


def _layout(boxes: list[Box], edges: list[Edge], end: str | None) -> None:
    """Rows, lanes and each edge's kind and lane.

    The main column (lane 0) is the path from the image to the last box through the
    most boxes outside side branches, then through the fewest inside them (an SE
    branch stands beside it), then the most boxes, then the most MACs (RepVGG's 3x3
    path before its 1x1); ties go to the first input, the value joined onto. Every
    box sits one row below the lowest box it reads. Each box off the main column
    takes the nearest lane to its left that is free from the row below what it reads
    down to the row above its last reader, so that its edges run down its lane with
    no box on their way. An edge from the main column past some of its boxes
    (``skip``) curves right of it, as the shortcuts do (lane 1)."""
    index = {box.key: number for number, box in enumerate(boxes)}
    inputs: list[list[int]] = [[] for _ in boxes]
    readers: list[list[int]] = [[] for _ in boxes]
    for edge in edges:
        source, target = index[edge.source], index[edge.target]
        if source < target:  # boxes come in the order the network computes them
            inputs[target].append(source)
            readers[source].append(target)
    score: list[tuple[int, int, int, int]] = []
    best: list[int | None] = []
    for number, box in enumerate(boxes):
        chosen = None
        for source in inputs[number]:
            if chosen is None or score[source] > score[chosen]:
                chosen = source
        main, side, count, macs = score[chosen] if chosen is not None else (0, 0, 0, 0)
        score.append((main + (not box.branch), side - box.branch, count + 1, macs + box.macs))
        best.append(chosen)
        box.row = max((boxes[source].row + 1 for source in inputs[number]), default=0)
    spine: dict[int, int | None] = {}  # box number on the main column: the one above it there
    at: int | None = index.get(end) if end is not None else None
    while at is not None:
        spine[at] = best[at]
        at = best[at]
    taken: dict[int, set[int]] = {}

    def free_lane(span: range, wanted: list[int]) -> int:
        for lane in itertools.chain(wanted, itertools.count(-1, -1)):
            rows = taken.setdefault(lane, set())
            if not any(row in rows for row in span):
                rows.update(span)
                return lane
        raise AssertionError("unreachable: a new lane is always free")  # pragma: no cover

    for edge in edges:
        source, target = index[edge.source], index[edge.target]
        if source in spine and target in spine:
            edge.kind = "spine" if spine[target] == source else "skip"
            edge.lane = 0 if edge.kind == "spine" else 1
    for number, box in enumerate(boxes):
        if number in spine:
            box.lane = 0
            continue
        above = [boxes[source] for source in inputs[number]]
        # From the highest box of the main column it reads (its edge comes down this
        # lane), else from the box it reads last.
        start = min(
            [source.row + 1 for source in above if source.lane == 0]
            + [max((source.row + 1 for source in above), default=box.row)]
        )
        stop = max((boxes[reader].row for reader in readers[number]), default=box.row + 1)
        # Down the lane of a box it reads beside the main column, if that way is free.
        wanted = [source.lane for source in above if source.lane != 0][:1]
        box.lane = free_lane(range(start, max(stop, box.row + 1)), wanted)
    for edge in edges:
        if edge.kind == "flow":
            source = boxes[index[edge.source]]
            edge.lane = source.lane if source.lane else boxes[index[edge.target]].lane


def figure(network: Network, prefix: str = "c0_", detail: str = "layer", all_layers: bool = False) -> Column:
    """One network's boxes, side branches and shortcut arcs, read from its IR."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}")
    return _Reader(network, prefix, detail, all_layers).read()


def _shape_text(shape: tuple[int, ...]) -> str:
    # A token sequence says so: "197 x 192 tokens" (resdsl.layers.shape_text).
    return shape_text(shape)


def _decorate(box: Box, shapes: bool) -> str:
    if not shapes or box.shape is None or box.style == "join":
        return box.label
    extra = _shape_text(box.shape)
    if box.params:
        extra += f", {box.params:,} params"
    return f"{box.label}\\n{extra}"


def _aligned_sizes(columns: list[Column]) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """For each output size shared by several columns with the same input size,
    (column, box index) of the box where each of them reaches it, keyed by (input size,
    size). Only columns whose sizes only ever shrink take part: their shared sizes come
    in the same order, so the alignment is consistent."""
    by_size: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for number, column in enumerate(columns):
        changes = column.size_changes()
        sizes = [size for _, size in changes]
        if not sizes or any(later >= earlier for earlier, later in itertools.pairwise(sizes)):
            continue
        for index, size in changes:
            by_size.setdefault((sizes[0], size), []).append((number, index))
    return {key: places for key, places in by_size.items() if len(places) > 1}


_NODE_STYLE = {
    "image": {"style": "rounded", "color": "#888888"},
    "join": {"shape": "circle", "width": "0.28", "height": "0.28", "fixedsize": "true", "fontsize": "12"},
    "marker": {"style": "rounded,dashed", "color": "#b03030", "fontcolor": "#b03030", "height": "0.22"},
    "preact": {"style": "rounded,filled", "color": "#888888"},
}


def to_dot(
    networks: Sequence[Network],
    *,
    detail: str = "layer",
    direction: str = "TB",
    shapes: bool = False,
    all_layers: bool = False,
    titles: Sequence[str] | None = None,
) -> graphviz.Digraph:
    """One figure with each network as a column, side by side, like Fig. 3. ``titles``
    replace the columns' titles (the networks' names), one per network."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}")
    columns = [figure(network, f"c{index}_", detail, all_layers) for index, network in enumerate(networks)]
    retitle(columns, titles)
    return columns_to_dot(columns, direction=direction, shapes=shapes)


def retitle(columns: list[Column], titles: Sequence[str] | None) -> None:
    """Give the columns these titles ("34-layer residual", as the paper's are), in order."""
    if titles is None:
        return
    if len(titles) != len(columns):
        raise DrawError(f"{len(titles)} titles for {len(columns)} networks: give one --title per network")
    for column, title in zip(columns, titles):
        column.title = title


def _quote(text: str) -> str:
    # Labels carry Graphviz's own "\\n" line breaks on purpose; only quotes need escaping.
    return '"' + text.replace('"', '\\"') + '"'


@functools.lru_cache(maxsize=512)
def _attribute_text(items: tuple[tuple[str, str], ...]) -> str:
    return " [" + " ".join(f"{key}={_quote(value)}" for key, value in items) + "]" if items else ""


class _Writer:
    """DOT statements as lines. The graphviz package quotes every attribute afresh,
    which dominated drawing a deep network; figures repeat a few attribute sets."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.indent = "\t"

    def node(self, name: str, label: str | None = None, **attrs: str) -> None:
        items = (("label", label),) if label is not None else ()
        self.lines.append(f"{self.indent}{_quote(name)}{_attribute_text(items + tuple(attrs.items()))}\n")

    def edge(self, tail: str, head: str, **attrs: str) -> None:
        self.lines.append(f"{self.indent}{_quote(tail)} -> {_quote(head)}{_attribute_text(tuple(attrs.items()))}\n")

    @contextlib.contextmanager
    def subgraph(self, name: str = "", **attrs: str) -> Iterator[_Writer]:
        self.lines.append(f"{self.indent}subgraph {name + ' ' if name else ''}{{\n")
        outer = self.indent
        self.indent += "\t"
        for key, value in attrs.items():
            self.lines.append(f"{self.indent}{key}={_quote(value)}\n")
        try:
            yield self
        finally:
            self.indent = outer
            self.lines.append(f"{self.indent}}}\n")


def columns_to_dot(columns: list[Column], *, direction: str = "TB", shapes: bool = False) -> graphviz.Digraph:
    """Lay the columns out side by side: titles in one row, aligned output sizes in one row each."""
    dot = graphviz.Digraph(
        "resdsl",
        graph_attr={"rankdir": direction, "newrank": "true", "nodesep": "0.25", "ranksep": "0.18", "pad": "0.3"},
    )
    dot.attr(
        "node",
        shape="box",
        fontcolor="black",
        style="rounded,filled",
        fontname="Helvetica",
        fontsize="11",
        width="1.9",
        height="0.28",
        margin="0.06,0.02",
    )
    dot.attr("edge", arrowsize="0.5", penwidth="0.8")
    out = _Writer()
    side = "e" if direction == "TB" else "n"
    aligned = _aligned_sizes(columns)
    # The box that opens each aligned size: the column's blank space goes just above it.
    opens = {(number, index) for places in aligned.values() for number, index in places}
    size_label: dict[tuple[int, int], str] = {}
    numbered = list(enumerate(columns))
    # In LR, Graphviz stacks the clusters from the bottom up: written last to first, the
    # first network is on top, as it is leftmost in TB.
    for number, column in reversed(numbered) if direction == "LR" else numbered:
        prefix = f"c{number}_"
        with out.subgraph(f"cluster_{number}", peripheries="0", label="") as sub:
            sub.node(
                f"{prefix}title",
                f"{column.title}\\n{column.subtitle}",
                shape="plaintext",
                style="",
                fontsize="12",
                **{"class": "title"},
            )
            _column_body(sub, column, prefix, {index for n, index in opens if n == number}, shapes, direction)
            for index, size in column.size_changes():
                label = f"{prefix}size{index}"
                size_label[(number, index)] = label
                sub.node(label, f"output size: {size}", shape="plaintext", style="", fontsize="10", width="0")
        for arc in column.arcs:
            _arc(out, arc, side)
    # Every "output size" note stands left of its box; boxes reaching a shared size share a rank.
    rows: list[list[tuple[int, int]]] = [places for _, places in sorted(aligned.items())]
    in_rows = {place for places in rows for place in places}
    rows += [[place] for place in size_label if place not in in_rows]
    for places in rows:
        chain = []
        for number, index in sorted(places):
            chain += [size_label[(number, index)], columns[number].boxes[index].key]
        _same_rank(out, chain)
    _same_rank(out, [f"c{number}_title" for number in range(len(columns))])
    dot.body.extend(out.lines)
    return dot


def _same_rank(out: _Writer, names: list[str]) -> None:
    """One rank, in this order from left to right."""
    with out.subgraph(rank="same") as row:
        if len(names) == 1:
            row.node(names[0])
        for left, right in itertools.pairwise(names):
            row.edge(left, right, style="invis")


def _group(prefix: str, lane: int) -> str:
    # One group per lane: Graphviz keeps a group's edges straight.
    return f"{prefix}L{-lane}" if lane else prefix


def _column_body(sub: _Writer, column: Column, prefix: str, opens: set[int], shapes: bool, direction: str) -> None:
    """The boxes and edges of one column: the main column straight down (one group, so
    Graphviz keeps it straight), each box beside it in the row and lane the layout
    gave it, and the main column running past them through spacers."""
    for box in column.boxes:
        attrs = dict(_NODE_STYLE.get(box.style, {}))
        if box.branch:
            attrs["class"] = "branch"
        sub.node(box.key, _decorate(box, shapes), fillcolor=box.fill, group=_group(prefix, box.lane), **attrs)
    sub.edge(f"{prefix}title", column.boxes[0].key, style="invis", weight="100")
    at_row: dict[int, str] = {}  # what the main column has in each row: a box or a spacer
    beside: dict[int, list[tuple[int, str]]] = {}
    main: list[tuple[int, Box]] = []
    for index, box in enumerate(column.boxes):
        if box.lane:
            beside.setdefault(box.row, []).append((box.lane, box.key))
        else:
            main.append((index, box))
            at_row[box.row] = box.key
    for (_, upper), (index, lower) in itertools.pairwise(main):
        # The blank space that aligns an output size goes just above the box that opens it.
        weight = "1" if index in opens else "100"
        spacers = [f"{lower.key}_s{step}" for step in range(lower.row - upper.row - 1)]
        for step, spacer in enumerate(spacers):
            at_row[upper.row + 1 + step] = spacer
            # Graphviz ends the segments through a spacer 1 pt short of its centre even
            # unclipped: a filled bar as wide as the line (0.8 pt) and 3 pt tall bridges the
            # gap, and no wider than the line it leaves no tick (a dot did, a point a gap).
            sub.node(
                spacer,
                "",
                shape="box",
                style="filled",
                color="black",
                penwidth="0",
                width="0.0111",
                height="0.042",
                fixedsize="true",
                group=prefix,
            )
        path = [upper.key, *spacers, lower.key]
        for top, bottom in itertools.pairwise(path):
            ends = {} if bottom == lower.key else {"arrowhead": "none", "headclip": "false"}
            if top != upper.key:
                ends["tailclip"] = "false"
            sub.edge(top, bottom, weight=weight, **ends)
    for edge in column.edges:
        if edge.kind != "spine":
            sub.edge(
                edge.source,
                edge.target,
                weight="1",
                **{"class": "flow" if edge.kind == "flow" else f"flow {edge.kind}"},
            )
    for row, cells in sorted(beside.items()):
        # Left of the main column in TB; below it in LR, where the arcs are above.
        keys = [key for _, key in sorted(cells)]
        main = [at_row[row]] if row in at_row else []  # none below the main column's last box
        _same_rank(sub, [*keys, *main] if direction == "TB" else [*main, *reversed(keys)])


def _arc(out: _Writer, arc: Arc, side: str) -> None:
    attrs = {
        "style": "dashed" if arc.changes_dimensions else "solid",
        "constraint": "false",
        "tailport": side,
        "headport": side,
        "color": _PROJECTION_BLUE if arc.kind == "projection" else _ARC_GREY,
        "class": f"shortcut {arc.kind}",
    }
    if arc.key:
        attrs["id"] = arc.key  # the arc draws these nodes of the IR (Column.where)
    if arc.kind == "projection":
        attrs["penwidth"] = "1.3"
    if arc.label:
        attrs.update(xlabel=arc.label, fontname="Helvetica", fontsize="9", fontcolor=_PROJECTION_BLUE)
    # Shortcuts curve beside the column without pulling boxes out of line.
    out.edge(arc.source, arc.target, **attrs)


def render(dot: graphviz.Digraph, path: str | Path) -> Path:
    """Write the figure; the extension picks the format."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DrawError(f"cannot draw to '{path.name}': the extension must be one of {', '.join(FORMATS)}")
    check_target(path)
    write_file(path, dot.source if suffix == ".dot" else pipe(dot, suffix[1:]))
    return path


def pipe(dot: graphviz.Digraph, format: str) -> bytes:
    """Run Graphviz's dot on the figure."""
    if shutil.which("dot") is None:
        raise DrawError(INSTALL_HINT)
    try:
        return dot.pipe(format=format)
    except graphviz.ExecutableNotFound:
        raise DrawError(INSTALL_HINT) from None
    except graphviz.CalledProcessError as error:
        raise DrawError(
            f"dot failed: {error.stderr.decode(errors='replace').strip() if error.stderr else error}"
        ) from None
