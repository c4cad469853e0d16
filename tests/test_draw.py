"""The Graphviz backend: golden DOT, rendered SVG, shortcut styles, CLI behaviour."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import resdsl
from resdsl.backends import draw
from resdsl.cli import main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "draw"
SPECS = Path(__file__).resolve().parent.parent / "specs"
SVG = "{http://www.w3.org/2000/svg}"


def _dot_source(*specs: str, **options) -> str:
    return draw.to_dot([resdsl.compile(spec) for spec in specs], **options).source


def _shortcut_edges(source: str) -> list[str]:
    return [line for line in source.splitlines() if 'class="shortcut' in line]


def _changing_joins(network: resdsl.Network) -> int:
    return sum(1 for block in network.blocks if block.join is not None and block.plan.changes_dimensions)


def _with_shortcut(option: str) -> resdsl.Network:
    spec = SPECS / "resnet18.res"
    return resdsl.compile_text(f'use "{spec}"\nnetwork r18{option} = resnet18 with shortcut {option}', path="x.res")


def _branch_networks() -> list[resdsl.Network]:
    return [resdsl.compile(FIXTURES / "branches.res", network=name) for name in ("se_net", "preact_net")]


GOLDEN = {
    "tiny.dot": lambda: draw.to_dot([resdsl.compile(FIXTURES / "tiny.res")]),
    "fig3.dot": lambda: draw.to_dot([resdsl.compile(name) for name in ("vgg19", "plain34", "resnet34")]),
    "branches.dot": lambda: draw.to_dot(_branch_networks()),
    "cifar_blocks.dot": lambda: draw.to_dot(
        [resdsl.compile("cifar20"), resdsl.compile("cifar_plain20")], detail="block"
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_dot(name: str) -> None:
    # RESDSL_UPDATE_GOLDEN=1 rewrites them; look at the rendered figure before committing one.
    source = GOLDEN[name]().source
    expected = FIXTURES / name
    if os.environ.get("RESDSL_UPDATE_GOLDEN"):
        expected.write_text(source, encoding="utf-8")
    assert source == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize(("spec", "dashed"), [("resnet34", 3), ("plain34", 0), ("resnet50", 4), ("cifar20", 2)])
def test_dashed_exactly_where_dimensions_change(spec: str, dashed: int) -> None:
    network = resdsl.compile(spec)
    edges = _shortcut_edges(_dot_source(spec))
    assert len(edges) == sum(1 for block in network.blocks if block.join is not None)
    assert sum('style="dashed"' in edge for edge in edges) == dashed == _changing_joins(network)
    assert all('style="solid"' in edge for edge in edges if "dashed" not in edge)


def test_options_a_b_and_c_look_different() -> None:
    kinds = {}
    for option in "ABC":
        edges = _shortcut_edges(draw.to_dot([_with_shortcut(option)]).source)
        kinds[option] = [edge.split('class="shortcut ')[1].split('"')[0] for edge in edges]
    # resnet18: 8 blocks, 3 of which change dimensions.
    assert kinds["A"].count("zeropad") == 3 and kinds["A"].count("identity") == 5
    assert kinds["B"].count("projection") == 3 and kinds["B"].count("identity") == 5
    assert kinds["C"] == ["projection"] * 8
    for option in "BC":  # projections are drawn in their own colour, zero-padding in grey
        source = draw.to_dot([_with_shortcut(option)]).source
        projections = [edge for edge in _shortcut_edges(source) if "projection" in edge]
        assert all("#1f5fa8" in edge for edge in projections)


@pytest.mark.parametrize("detail", ["block", "stage"])
def test_residual_and_plain_differ_at_coarser_details(detail: str) -> None:
    residual = _shortcut_edges(_dot_source("cifar20", detail=detail))
    plain = _shortcut_edges(_dot_source("cifar_plain20", detail=detail))
    assert plain == []
    assert len(residual) == (9 if detail == "block" else 3)
    assert sum('style="dashed"' in edge for edge in residual) == 2


def test_layer_detail_draws_the_papers_boxes() -> None:
    source = _dot_source("resnet34")
    # Fig. 3: 33 convolutions + the fc are the 34 weighted layers; one pool, one avg pool.
    assert source.count("conv, ") == 33
    assert source.count('"fc 1000"') == 1
    assert '"3x3 max pool, /2"' in source and '"avg pool"' in source
    assert source.count("3x3 conv, 128, /2") == 1
    for size in (224, 112, 56, 28, 14, 7, 1):
        assert source.count(f'"output size: {size}"') == 1
    assert "labelloc" not in source  # titles are nodes at the top, not cluster captions
    column = draw.figure(resdsl.compile("resnet34"), all_layers=True)
    labels = [box.label for box in column.boxes]
    # Every main-branch conv has its BN; the three projections' are part of their arcs.
    assert labels.count("bn") == 33 and labels.count("relu") == 33 and labels.count("flatten") == 1
    assert labels.count("+") == 16


@pytest.mark.parametrize("detail", ["layer", "block", "stage"])
@pytest.mark.parametrize("spec", ["resnet50", "branches"])
def test_every_detail_keeps_the_figures(detail: str, spec: str) -> None:
    networks = _branch_networks() if spec == "branches" else [resdsl.compile(spec)]
    for network in networks:
        column = draw.figure(network, detail=detail)
        boxes = column.boxes
        params = sum(box.params for box in boxes) + sum(arc.params for arc in column.arcs)
        macs = sum(box.macs for box in boxes) + sum(arc.macs for arc in column.arcs)
        assert (params, macs) == (network.num_params, network.macs)
    if spec == "resnet50":
        labels = [box.label for box in draw.figure(networks[0], detail=detail).boxes]
        if detail == "stage":
            assert "conv3_x: 4 x bottleneck(128), /2" in labels
            assert len([label for label in labels if "bottleneck" in label]) == 4
        elif detail == "block":
            assert len([label for label in labels if "bottleneck" in label]) == 3 + 4 + 6 + 3
            assert "conv4_x.0: bottleneck(256), /2" in labels


def test_side_branches_taps_projections_and_drop_path() -> None:
    se_net, preact_net = _branch_networks()
    column = draw.figure(se_net)
    keys = {box.key: box for box in column.boxes}
    # One squeeze-and-excitation branch per block, beside the column, joined at a "×".
    branch = [box for box in column.boxes if box.branch]
    assert [box.label for box in branch[:3]] == ["avg pool", "1x1 conv, 4", "1x1 conv, 16"]
    assert len(branch) == 4 * 3 and all(box.lane < 0 for box in branch)
    joins = [box for box in column.boxes if box.style == "join"]
    assert len(joins) == 4 and all(box.label == "×" and box.lane == 0 for box in joins)
    for join in joins:  # the value joined onto, then the branch's gate
        assert [keys[edge.source].branch for edge in column.edges if edge.target == join.key] == [False, True]
    # Drop path is marked in every block, with its scheduled rate.
    markers = [box.label for box in column.boxes if box.style == "marker"]
    assert markers == ["drop path 0", "drop path 0.0333", "drop path 0.0667", "drop path 0.1"]
    # The written projection is named on its arc; identities are not.
    assert [(arc.kind, arc.label) for arc in column.arcs] == [
        ("identity", ""),
        ("identity", ""),
        ("projection", "avg_down"),
        ("identity", ""),
    ]
    source = draw.to_dot([se_net]).source
    assert source.count('xlabel="avg_down"') == 1
    assert source.count('class="branch"') == 4 * 3  # the branch's boxes

    column = draw.figure(preact_net)
    by_key = {box.key: box for box in column.boxes}
    preacts = [box for box in column.boxes if box.style == "preact"]
    assert [box.label for box in preacts] == ["bn, relu"] * 4
    # The projection reads the tap (after the pre-activation); identities carry the block's input.
    projection = next(arc for arc in column.arcs if arc.kind == "projection")
    assert by_key[projection.source].style == "preact" and projection.label == "conv_proj"
    identities = [arc for arc in column.arcs if arc.kind == "identity"]
    assert len(identities) == 3 and all(by_key[arc.source].style != "preact" for arc in identities)


def test_side_by_side_columns() -> None:
    source = _dot_source("vgg19", "plain34", "resnet34")
    assert source.count("subgraph cluster_") == 3
    assert len(_shortcut_edges(source)) == 16


def _svg_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Each node's bounding box (left, top, right, bottom) in the rendered SVG."""
    boxes = {}
    for group in ET.parse(path).getroot().iter(f"{SVG}g"):
        if (group.get("class") or "").split()[:1] != ["node"]:
            continue
        key = group.find(f"{SVG}title").text
        xs, ys = [], []
        for shape in group:
            numbers = shape.get("points") or shape.get("d") or ""
            values = [float(v) for v in numbers.replace("M", " ").replace("C", " ").replace(",", " ").split()]
            xs += values[0::2]
            ys += values[1::2]
            if shape.tag == f"{SVG}text":
                xs.append(float(shape.get("x")))
                ys.append(float(shape.get("y")))
        boxes[key] = (min(xs), min(ys), max(xs), max(ys))
    return boxes


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (CI installs it)")
def test_rendered_fig3_reads_like_the_papers(tmp_path: Path) -> None:
    out = tmp_path / "fig3.svg"
    assert main(["draw", "vgg19", "plain34", "resnet34", "-o", str(out)]) == 0
    boxes = _svg_boxes(out)
    columns = [
        draw.figure(resdsl.compile(name), prefix=f"c{number}_")
        for number, name in enumerate(("vgg19", "plain34", "resnet34"))
    ]
    tops = {key: box[1] for key, box in boxes.items()}
    # Titles at the top, in one row.
    assert len({round(tops[f"c{n}_title"]) for n in range(3)}) == 1
    assert all(tops[f"c{n}_title"] < tops[box.key] for n, column in enumerate(columns) for box in column.boxes)
    # Columns aligned by stage: the boxes that reach each output size share a row.
    for size in (224, 112, 56, 28, 14, 7, 1):
        opening = [next(column.boxes[i].key for i, s in column.size_changes() if s == size) for column in columns]
        assert len({round(tops[key]) for key in opening}) == 1, size
    # No blank gaps in ResNet-34 from conv2_x on, where its column is the longest (above,
    # VGG's convolutions at 224 and 112 push its 7x7 conv and pool down, as in the paper).
    steps = {round(tops[b.key] - tops[a.key]) for a, b in itertools.pairwise(columns[2].boxes[2:])}
    assert len(steps) == 1, steps
    # Each "output size" note is left of its own column and right of the column before it.
    for number, column in enumerate(columns):
        for index, _ in column.size_changes():
            note = boxes[f"c{number}_size{index}"]
            box = boxes[column.boxes[index].key]
            assert note[2] <= box[0] and abs(note[3] - (box[1] + box[3]) / 2) < 8  # the text's baseline
            if number:
                assert note[0] > max(boxes[b.key][2] for b in columns[number - 1].boxes)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (CI installs it)")
def test_rendered_svg_has_the_expected_nodes_and_edges(tmp_path: Path) -> None:
    out = tmp_path / "tiny.svg"
    assert main(["draw", str(FIXTURES / "tiny.res"), "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    groups = [(g.get("class") or "").split()[0] for g in root.iter(f"{SVG}g")]
    network = resdsl.compile(FIXTURES / "tiny.res")
    drawn_layers = sum(
        1 for node in network.nodes() if node.role == "main" and draw.layer_label(node.layer) is not None
    )
    notes = len(draw.figure(network).size_changes())
    # The image box, the title, one "output size" note per size.
    assert groups.count("node") == drawn_layers + 1 + 1 + notes
    # The column's links between consecutive boxes, plus one arc per shortcut (invisible ones are not drawn).
    edges = [(g.get("class") or "") for g in root.iter(f"{SVG}g") if (g.get("class") or "").startswith("edge")]
    assert len([e for e in edges if "shortcut" not in e]) == drawn_layers
    assert sorted(e for e in edges if "shortcut" in e) == ["edge shortcut identity", "edge shortcut projection"]
    dashed = [p for p in root.iter(f"{SVG}path") if p.get("stroke-dasharray")]
    assert len(dashed) == _changing_joins(network) == 1


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (CI installs it)")
@pytest.mark.parametrize("suffix", [".png", ".pdf"])
def test_binary_formats(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"fig{suffix}"
    assert main(["draw", "cifar20", "-o", str(out), "--detail", "stage", "--shapes"]) == 0
    assert out.read_bytes()[:4] in (b"\x89PNG", b"%PDF")


def test_dot_output_needs_no_graphviz_program(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    out = tmp_path / "fig.dot"
    assert main(["draw", "resnet18", "-o", str(out)]) == 0
    assert out.read_text().startswith("digraph")
    assert main(["draw", "resnet18", "-o", str(tmp_path / "fig.svg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install graphviz" in err
    assert not (tmp_path / "fig.svg").exists()


def test_cli_errors(tmp_path: Path, capsys) -> None:
    assert main(["draw", "resnet18", "-o", str(tmp_path / "fig.jpg")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    bad = tmp_path / "bad.res"
    bad.write_text("network bad {\n    input 3x32x32\n    stage s: 2 x basik(16)\n}\n")
    assert main(["draw", str(bad), "-o", str(tmp_path / "fig.dot")]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:18: unknown block 'basik'" in err and "did you mean 'basic'?" in err
    assert not (tmp_path / "fig.dot").exists()


def test_draw_never_imports_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from resdsl.cli import main; "
        f"assert main(['draw', 'resnet152', '-o', {str(tmp_path / 'r.dot')!r}]) == 0; "
        "assert 'torch' not in sys.modules, 'draw imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _bezier_points(d: str) -> list[tuple[float, float]]:
    """Points along an SVG path of Graphviz's form "M x,y C x,y x,y x,y ...", 20 per segment."""
    values = [float(v) for v in d.replace("M", " ").replace("C", " ").replace(",", " ").split()]
    points = list(zip(values[0::2], values[1::2]))
    sampled = []
    for start in range(0, len(points) - 3, 3):
        p0, p1, p2, p3 = points[start : start + 4]
        for step in range(21):
            t = step / 20
            a, b, c, d_ = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            sampled.append(
                (a * p0[0] + b * p1[0] + c * p2[0] + d_ * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d_ * p3[1])
            )
    return sampled


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (CI installs it)")
@pytest.mark.parametrize("direction", ["TB", "LR"])
def test_columns_in_order_and_arcs_clear_of_boxes(tmp_path: Path, direction: str) -> None:
    """LR drew the networks in reverse order, and its arcs crossed the boxes."""
    out = tmp_path / "fig.svg"
    assert main(["draw", "resnet18", "cifar20", "plain34", "-o", str(out), "--direction", direction]) == 0
    boxes = _svg_boxes(out)
    titles = [boxes[f"c{n}_title"] for n in range(3)]
    along = 0 if direction == "TB" else 1  # columns go left to right, or rows top to bottom
    assert titles == sorted(titles, key=lambda box: box[along])
    root = ET.parse(out).getroot()
    crossings = []
    for group in root.iter(f"{SVG}g"):
        if "shortcut" not in (group.get("class") or ""):
            continue
        ends = group.find(f"{SVG}title").text.split("->")
        for point in _bezier_points(group.find(f"{SVG}path").get("d")):
            for key, (left, top, right, bottom) in boxes.items():
                if key in ends or "_title" in key or "_size" in key:
                    continue
                if left + 2 < point[0] < right - 2 and top + 2 < point[1] < bottom - 2:
                    crossings.append((ends, key))
    assert crossings == []


def test_side_branch_spacers_are_no_wider_than_the_line() -> None:
    """The main line runs through a spacer beside each branch box: a dot wider than the
    line left a tick mark there."""
    source = draw.to_dot(_branch_networks()[:1]).source
    spacers = re.findall(r'^\s*"c0_n\d+_s\d+" \[([^]]*)\]', source, re.M)  # the nodes, not their edges
    assert spacers
    for attributes in spacers:
        width = float(re.search(r' width="([\d.]+)"', attributes).group(1))
        assert width * 72 <= 0.8 + 1e-9 and 'penwidth="0"' in attributes  # the edges' 0.8 pt
        assert 'fixedsize="true"' in attributes  # else Graphviz widens a box to its minimum


@pytest.mark.parametrize(("spec", "inner"), [("timm/seresnet50", "se"), ("timm/ecaresnet50d", "eca")])
def test_blocks_used_inside_blocks_show_at_block_and_stage_detail(spec: str, inner: str) -> None:
    network = resdsl.compile(spec)
    for detail in ("block", "stage"):
        labels = [box.label for box in draw.figure(network, detail=detail).boxes if box.style == "group"]
        assert labels and all(f" + {inner}" in label for label in labels), (detail, labels)
    plain = [box.label for box in draw.figure(resdsl.compile("resnet50"), detail="block").boxes]
    assert not any(" + " in label for label in plain)


def test_columns_take_the_titles_given(tmp_path: Path, capsys) -> None:
    source = draw.to_dot(
        [resdsl.compile("plain34"), resdsl.compile("resnet34")], titles=["34-layer plain", "34-layer residual"]
    ).source
    assert '"c1_title" [label="34-layer residual\\n' in source
    out = tmp_path / "fig.dot"
    assert main(["draw", "plain34", "resnet34", "-o", str(out), "--title", "plain", "--title", "residual"]) == 0
    assert '"c0_title" [label="plain\\n' in out.read_text(encoding="utf-8")
    capsys.readouterr()
    assert main(["draw", "plain34", "resnet34", "-o", str(out), "--title", "only one"]) == 2
    assert "1 titles for 2 networks" in capsys.readouterr().err
