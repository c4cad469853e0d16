"""Figures draw the dataflow the IR holds: for every shipped spec, at layer detail, the
edges of the figure (Graphviz's and the HTML page's) are exactly the IR's edges, each
node mapped to the box (or shortcut arc) that draws it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import resdsl
from resdsl.backends import draw
from resdsl.backends.draw_html import to_html
from resdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
SHIPPED = sorted(
    str(path.relative_to(SPECS).with_suffix("")) for path in SPECS.rglob("*.res") if "lib" not in path.parts
)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "draw"

_NODE = re.compile(r'^\s*"([^"]+)" \[(.*)\]$')
_EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)"(?: \[(.*)\])?$')


def _mapping_is_the_figures(network: resdsl.Network, column: draw.Column, prefix: str = "c0_") -> None:
    """Each node is drawn in its own box, folded into the box of the value it reads,
    or (a shortcut's layers) in its arc: no other mapping is allowed."""
    where = column.where
    boxes = {box.key for box in column.boxes}
    arcs = {arc.key for arc in column.arcs if arc.key}
    joins = {block.join for block in network.blocks if block.join is not None}
    shortcut = {node for block in network.blocks for node in block.shortcut_nodes}
    assert set(where) == set(network.graph.nodes)
    for node in network.nodes():
        key = where[node.id]
        own = f"{prefix}n{node.id}"
        if node.layer.graph_end:
            assert key in boxes
        elif node.id in shortcut:
            assert key in arcs, node.name
        elif node.layer.figure in ("box", "marker") or (node.layer.figure == "join" and node.id not in joins):
            assert key == own, node.name
        else:  # a fold or a shortcut's join: its own box, or the box of the value it reads
            assert key == own or key == where[node.inputs[0]], node.name
    # No box that draws no node.
    assert boxes == {where[node] for node in where} - arcs


def _ir_edges(network: resdsl.Network, where: dict[int, str]) -> set[tuple[str, str]]:
    return {
        (where[source], where[node.id])
        for node in network.nodes()
        for source in node.inputs
        if where[source] != where[node.id]
    }


def _dot_edges(source: str) -> set[tuple[str, str]]:
    """The edges Graphviz draws, read from the DOT text: chains through the main
    column's spacers joined, invisible (layout) edges left out, and an arc that draws
    a projection (its id, the key its nodes map to) counted as the way through it."""
    spacers = set()
    edges = []
    for line in source.splitlines():
        node = _NODE.match(line)
        if node and " -> " not in line and re.search(r"_s\d+$", node.group(1)):
            spacers.add(node.group(1))
        edge = _EDGE.match(line)
        if edge is None:
            continue
        tail, head, attributes = edge.group(1), edge.group(2), edge.group(3) or ""
        if 'style="invis"' in attributes:
            continue
        arc = re.search(r' id="([^"]+)"', attributes)
        if arc:
            edges += [(tail, arc.group(1)), (arc.group(1), head)]
        else:
            edges.append((tail, head))
    following = {tail: head for tail, head in edges if tail in spacers}
    drawn = set()
    for tail, head in edges:
        if tail in spacers:
            continue
        while head in spacers:
            head = following[head]
        drawn.add((tail, head))
    return drawn


def _html_edges(page: str, number: int = 0) -> set[tuple[str, str]]:
    data = json.loads(re.search(r'id="figure-data">(.*?)</script>', page, re.S).group(1))
    column = data["columns"][number]
    drawn = {(edge["source"], edge["target"]) for edge in column["edges"]}
    for arc in column["arcs"]:
        if arc["key"]:
            drawn |= {(arc["source"], arc["key"]), (arc["key"], arc["target"])}
        else:
            drawn.add((arc["source"], arc["target"]))
    return drawn


@pytest.mark.parametrize("spec", SHIPPED)
def test_every_drawn_edge_is_an_edge_of_the_ir(spec: str) -> None:
    network = resdsl.compile(spec)
    column = draw.figure(network)
    _mapping_is_the_figures(network, column)
    expected = _ir_edges(network, column.where)
    assert _dot_edges(draw.to_dot([network]).source) == expected
    assert _html_edges(to_html([network])) == expected


def test_the_edge_reader_sees_a_missing_or_invented_edge() -> None:
    """The comparison above fails when the figure drops an edge or draws one the IR lacks."""
    network = resdsl.compile("timm/skresnet18")
    column = draw.figure(network)
    expected = _ir_edges(network, column.where)
    source = draw.to_dot([network]).source
    flow = next(line for line in source.splitlines() if 'class="flow"' in line)
    assert _dot_edges(source.replace(flow + "\n", "")) != expected
    tail, head = _EDGE.match(flow).group(1), _EDGE.match(flow).group(2)
    assert _dot_edges(source.replace(flow, flow.replace(f'"{head}"', '"c0_image"'))) != expected
    assert (tail, head) in expected


def _column(spec: str, **options) -> draw.Column:
    return draw.figure(resdsl.compile(spec), **options)


def _by_label(column: draw.Column) -> dict[str, list[draw.Box]]:
    found: dict[str, list[draw.Box]] = {}
    for box in column.boxes:
        found.setdefault(box.label, []).append(box)
    return found


def test_selective_kernel_paths_stand_side_by_side() -> None:
    """skresnet18 drew its two 3x3 paths in series ("3x3 conv, 128, /2 -> 3x3 conv, 128, /2")."""
    column = _column("timm/skresnet18")
    labels = _by_label(column)
    plain, dilated = labels["3x3 conv, 128, /2"], labels["3x3 conv, 128, /2, d2"]
    assert len(plain) == len(dilated) == 1
    assert plain[0].row == dilated[0].row and plain[0].lane != dilated[0].lane
    edges = {(edge.source, edge.target) for edge in column.edges}
    assert (plain[0].key, dilated[0].key) not in edges and (dilated[0].key, plain[0].key) not in edges
    # Both paths reach the sum that fuses them and the weighted sum that selects between them.
    keys = {box.key: box for box in column.boxes}
    for path in (plain[0], dilated[0]):
        readers = {keys[target].label for source, target in edges if source == path.key}
        assert readers == {"+", "weighted sum"}
    weighted = [box for box in column.boxes if box.label == "weighted sum"]
    assert len(weighted) == 8
    # Its inputs: two attention parts and two paths.
    assert len([edge for edge in column.edges if edge.target == weighted[0].key]) == 4


def test_repvgg_draws_three_paths_into_one_sum() -> None:
    """repvgg_a0 drew its 3x3 and 1x1 paths in series and lost the BN identity path."""
    column = _column("timm/repvgg_a0")
    keys = {box.key: box for box in column.boxes}
    sums = [box for box in column.boxes if box.label == "+"]
    # The stem and each stage's first block have two paths; the 2 + 4 + 14 + 1 - 4 others three.
    fan_in = [sorted(keys[edge.source].label for edge in column.edges if edge.target == box.key) for box in sums]
    assert fan_in.count(["1x1 conv, 96", "3x3 conv, 96", "bn"]) == 3
    assert fan_in.count(["1x1 conv, 48, /2", "3x3 conv, 48, /2"]) == 2
    assert sum(len(inputs) == 3 for inputs in fan_in) == 2 + 4 + 14 + 1 - 4
    # The 3x3 path (the most MACs) is the main column; the others stand beside it.
    assert all(box.lane == 0 for box in column.boxes if box.label.startswith("3x3 conv"))
    assert all(box.lane < 0 for box in column.boxes if box.label.startswith("1x1 conv") or box.label == "bn")


def test_dla_aggregates_with_an_edge_from_every_input() -> None:
    """dla34 drew no arcs: its roots concatenate the trees' outputs and the pooled input."""
    network = resdsl.compile("timm/dla34")
    column = draw.figure(network)
    keys = {box.key: box for box in column.boxes}
    roots = [box for box in column.boxes if box.label == "concat"]
    fan_in = [len([edge for edge in column.edges if edge.target == box.key]) for box in roots]
    assert fan_in == [2, 2, 4, 2, 4, 3]
    assert sum(edge.kind == "skip" for edge in column.edges) > 0
    assert any(
        keys[edge.source].label == "2x2 max pool, /2"
        for box in roots
        for edge in column.edges
        if edge.target == box.key
    )


def test_dilation_is_in_the_label() -> None:
    text = (
        "network d {\n    input 3x32x32\n    stem {\n        conv 3x3, 8, dilation=2\n"
        "        conv 3x3, 8, dilation=1x3\n    }\n}\n"
    )
    labels = [box.label for box in draw.figure(resdsl.compile_text(text)).boxes]
    assert labels[1:] == ["3x3 conv, 8, d2", "3x3 conv, 8, d1x3"]


def test_two_networks_of_one_file_from_the_command_line(tmp_path: Path, capsys) -> None:
    """docs/drawing.md's figure of branches.res: --network applied to every spec."""
    out = tmp_path / "branches.dot"
    spec = str(FIXTURES / "branches.res")
    assert main(["draw", spec, spec, "--network", "se_net", "preact_net", "-o", str(out)]) == 0
    networks = [resdsl.compile(FIXTURES / "branches.res", network=name) for name in ("se_net", "preact_net")]
    assert out.read_text(encoding="utf-8") == draw.to_dot(networks).source
    assert main(["draw", spec, spec, "--network", "se_net", "-o", str(out)]) == 0  # one name: for every spec
    assert out.read_text(encoding="utf-8").count('"c1_title" [label="se_net') == 1
    capsys.readouterr()
    assert main(["draw", spec, "--network", "se_net", "preact_net", "-o", str(out)]) == 2
    assert "2 --network names for 1 specs" in capsys.readouterr().err


def test_inception_resnet_towers_stand_side_by_side() -> None:
    """Inception-ResNet-A: three towers from the block's input, side by side, into one concat."""
    network = resdsl.compile(FIXTURES / "inception_resnet.res")
    column = draw.figure(network)
    _mapping_is_the_figures(network, column)
    expected = _ir_edges(network, column.where)
    assert _dot_edges(draw.to_dot([network]).source) == expected
    assert _html_edges(to_html([network])) == expected
    keys = {box.key: box for box in column.boxes}
    concat = next(box for box in column.boxes if box.label == "concat")
    towers = [keys[edge.source] for edge in column.edges if edge.target == concat.key]
    assert [box.label for box in towers] == ["1x1 conv, 32", "3x3 conv, 32", "3x3 conv, 64"]
    assert len({box.lane for box in towers}) == 3
    # Each tower starts in the row below the block's input, in the lane it ends in.
    entry = keys[column.where[network.blocks[0].entry]]
    for tower in towers:
        lane = [box for box in column.boxes if box.lane == tower.lane and entry.row < box.row <= tower.row]
        assert lane[0].row == entry.row + 1 and lane[0].label.startswith("1x1 conv")
    # The linear 1x1 convolution's box holds its scale and the shortcut's sum; the arc ends there.
    linear = keys[column.where[network.blocks[0].join]]
    assert linear.label == "1x1 conv, 64" and column.arcs[0].target == linear.key
