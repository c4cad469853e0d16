"""Graphviz backend: networks drawn in the style of the paper's Figure 3.

A column of boxes ("3x3 conv, 128, /2"), the shortcuts as arcs beside it: solid
where they are identities, dashed where they change dimensions (projection or
zero-padding). Reads names, shapes and shortcut plans from the IR; never imports
torch and never re-derives a shape.

Detail levels: ``layer`` (one box per conv, pool and fc, as Fig. 3; with
``all_layers`` also BN, ReLU and the rest), ``block`` (one box per block) and
``stage`` (one box per stage).
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import graphviz

from resdsl.ir import Network
from resdsl.layers import AvgPool, Conv, Dropout, Flatten, Linear, MaxPool

DETAILS = ("layer", "block", "stage")
FORMATS = (".svg", ".png", ".pdf", ".dot")
INSTALL_HINT = (
    "Graphviz's 'dot' program is needed to render .svg, .png and .pdf: apt-get install graphviz (or write .dot)"
)

# Fig. 3's palette: convolutions by width, pools and fc set apart.
_FILL = {64: "#f4e8d0", 128: "#e3ecd6", 256: "#dbe6f1", 512: "#eadcec"}
_POOL_FILL = "#f0f0f0"
_FC_FILL = "#fde2c8"


class DrawError(Exception):
    """Rendering failed for a reason outside the spec (no `dot`, a bad extension)."""


@dataclass
class _Box:
    key: str  # the Graphviz node id
    label: str
    fill: str
    shape: tuple[int, ...] | None = None
    params: int = 0


def _size(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def layer_label(layer) -> str | None:
    """The paper's wording for a layer, or None for those Fig. 3 leaves out."""
    match layer:
        case Conv():
            text = f"{layer.kernel[0]}x{layer.kernel[1]} conv, {layer.out_channels}"
            if layer.groups > 1:
                text += f", g{layer.groups}"
            if layer.stride != (1, 1):
                text += f", /{_size(layer.stride)}"
            return text
        case MaxPool():
            return "pool, /" + _size(layer.stride) if layer.stride != (1, 1) else "pool"
        case AvgPool():
            return "avg pool" if layer.is_global else f"{layer.kernel[0]}x{layer.kernel[1]} avg pool"
        case Linear():
            return f"fc {layer.out_features}"
    return None


def _full_label(layer) -> str:
    label = layer_label(layer)
    if label is not None:
        return label
    match layer:
        case Dropout():
            return f"dropout {layer.p:g}"
        case Flatten():
            return "flatten"
    return layer.kind


def _fill(layer) -> str:
    if isinstance(layer, Conv):
        return _FILL.get(layer.out_channels, _FILL.get(min(_FILL, key=lambda w: abs(w - layer.out_channels))))
    if isinstance(layer, Linear):
        return _FC_FILL
    return _POOL_FILL


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _decorate(box: _Box, shapes: bool) -> str:
    if not shapes or box.shape is None:
        return box.label
    extra = _shape_text(box.shape)
    if box.params:
        extra += f", {box.params:,} params"
    return f"{box.label}\\n{extra}"


def _signature(network: Network, scope) -> str:
    args = dict(scope.args)
    shown = [str(v) for k, v in args.items() if k not in ("stride",)][:1]
    return f"{scope.block}({', '.join(shown)})"


def _column(
    network: Network, prefix: str, detail: str, all_layers: bool
) -> tuple[list[_Box], list[tuple[str, str, bool]]]:
    """The boxes of one network top to bottom, and its shortcut arcs (from, to, changes dimensions)."""
    graph = network.graph
    boxes: list[_Box] = [_Box(f"{prefix}image", "image", "white", network.input_shape)]
    arcs: list[tuple[str, str, bool]] = []
    # The box each main-branch node is drawn in: shortcut arcs run between boxes.
    drawn_in: dict[int, str] = {}
    current_group = None
    # Looked up once, not per block: searching the whole network for each block's
    # first conv made block detail quadratic (3,000 blocks took 40 s).
    first_conv: dict[int, Conv] = {}
    for node in network.order():
        attrs = graph.nodes[node]
        if isinstance(attrs["layer"], Conv):
            first_conv.setdefault(id(attrs["scope"]), attrs["layer"])
    stages = {stage.name: stage for stage in network.stages}
    for node in network.order():
        attrs = graph.nodes[node]
        layer, scope = attrs["layer"], attrs["scope"]
        if layer.kind == "input":
            drawn_in[node] = boxes[0].key
            continue
        if layer.kind == "output":
            continue
        if attrs["branch"] == "shortcut":
            if detail != "layer":  # a block's or stage's figures include its shortcut's
                boxes[-1].params += attrs["params"]
            continue
        if detail == "layer" or scope.block is None:
            label = _full_label(layer) if all_layers else layer_label(layer)
            if label is None:  # folded into the box above, figures included
                boxes[-1].params += attrs["params"]
                drawn_in[node] = boxes[-1].key
            else:
                boxes.append(_Box(f"{prefix}n{node}", label, _fill(layer), attrs["shape"], attrs["params"]))
                drawn_in[node] = boxes[-1].key
        else:
            group = (scope.stage, scope.index) if detail == "block" else scope.stage
            if group != current_group:
                current_group = group
                if detail == "block":
                    label = f"{scope.stage}.{scope.index}: {_signature(network, scope)}"
                else:
                    stage = stages[scope.stage]
                    label = f"{scope.stage}: {stage.blocks} x {_signature(network, scope)}"
                    stride = dict(scope.args).get("stride")
                    if isinstance(stride, int) and stride > 1:
                        label += f", /{stride}"
                conv = first_conv.get(id(scope))
                boxes.append(_Box(f"{prefix}n{node}", label, _fill(conv) if conv else _POOL_FILL))
            boxes[-1].shape = attrs["shape"]
            boxes[-1].params += attrs["params"]
            drawn_in[node] = boxes[-1].key
        if layer.kind == "add" and detail == "layer":
            plan = attrs["shortcut"]
            source = _shortcut_source(network, node)
            arcs.append((drawn_in[source], drawn_in[node], plan.changes_dimensions))
    return boxes, arcs


def _shortcut_source(network: Network, add: int) -> int:
    """The main-branch node whose output the shortcut of `add` carries."""
    graph = network.graph
    (node,) = [p for p in graph.predecessors(add) if graph.edges[p, add]["role"] == "shortcut"]
    while graph.nodes[node]["branch"] == "shortcut":
        (node,) = graph.predecessors(node)
    return node


def to_dot(
    networks: Sequence[Network],
    *,
    detail: str = "layer",
    direction: str = "TB",
    shapes: bool = False,
    all_layers: bool = False,
) -> graphviz.Digraph:
    """One figure with each network as a column, side by side, like Fig. 3."""
    if detail not in DETAILS:
        raise ValueError(f"detail must be one of {', '.join(DETAILS)}")
    dot = graphviz.Digraph(
        "resdsl", graph_attr={"rankdir": direction, "nodesep": "0.5", "ranksep": "0.18", "forcelabels": "true"}
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
    columns = []
    for index, network in enumerate(networks):
        prefix = f"c{index}_"
        boxes, arcs = _column(network, prefix, detail, all_layers)
        columns.append(boxes)
        with dot.subgraph(name=f"cluster_{index}") as column:
            column.attr(
                label=f"{network.name}\\n{network.num_params / 1e6:.1f}M params, {network.macs / 1e9:.2f} GMACs",
                labelloc="b",
                color="white",
                fontname="Helvetica",
                fontsize="12",
            )
            for box in boxes:
                column.node(box.key, _decorate(box, shapes), fillcolor=box.fill)
            for upper, lower in itertools.pairwise(boxes):
                column.edge(upper.key, lower.key, weight="100")
            _stage_sizes(column, network, boxes, prefix, detail)
        for source, target, changes in arcs:
            # Shortcuts curve beside the column without pulling boxes out of line.
            dot.edge(
                source,
                target,
                style="dashed" if changes else "solid",
                constraint="false",
                tailport="e",
                headport="e",
                color="#555555",
                **{"class": "shortcut"},
            )
    return dot


def _stage_sizes(column, network: Network, boxes: list[_Box], prefix: str, detail: str) -> None:
    """'output size: 56' beside the box where the spatial size changes (Fig. 3's annotations)."""
    previous = None
    for box in boxes:
        if box.shape is None or len(box.shape) != 3:
            continue
        size = box.shape[1]
        if previous is not None and size != previous:
            # An external label: it does not take a rank of its own, so columns stay aligned.
            column.node(box.key, xlabel=f"output size: {size}")
        previous = size


def render(dot: graphviz.Digraph, path: str | Path) -> Path:
    """Write the figure; the extension picks the format."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DrawError(f"cannot draw to '{path.name}': the extension must be one of {', '.join(FORMATS)}")
    if suffix == ".dot":
        path.write_text(dot.source, encoding="utf-8")
        return path
    if shutil.which("dot") is None:
        raise DrawError(INSTALL_HINT)
    try:
        data = dot.pipe(format=suffix[1:])
    except graphviz.ExecutableNotFound:
        raise DrawError(INSTALL_HINT) from None
    except graphviz.CalledProcessError as error:
        raise DrawError(
            f"dot failed: {error.stderr.decode(errors='replace').strip() if error.stderr else error}"
        ) from None
    path.write_bytes(data)
    return path
