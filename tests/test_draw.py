"""The Graphviz backend: golden DOT, rendered SVG, shortcut styles, CLI behaviour."""

from __future__ import annotations

import os
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
SVG = "{http://www.w3.org/2000/svg}"


def _dot_source(*specs: str, **options) -> str:
    return draw.to_dot([resdsl.compile(spec) for spec in specs], **options).source


def _shortcut_edges(source: str) -> list[str]:
    return [line for line in source.splitlines() if "class=shortcut" in line]


def _changing_joins(network: resdsl.Network) -> int:
    return sum(1 for _, attrs in network.nodes("add") if attrs["shortcut"].changes_dimensions)


def test_golden_dot() -> None:
    source = _dot_source(str(FIXTURES / "tiny.res"))
    expected = FIXTURES / "tiny.dot"
    if os.environ.get("RESDSL_UPDATE_GOLDEN"):
        expected.write_text(source, encoding="utf-8")
    assert source == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize(("spec", "dashed"), [("resnet34", 3), ("plain34", 0), ("resnet50", 4), ("cifar20", 2)])
def test_dashed_exactly_where_dimensions_change(spec: str, dashed: int) -> None:
    network = resdsl.compile(spec)
    edges = _shortcut_edges(_dot_source(spec))
    assert len(edges) == len(list(network.nodes("add")))
    assert sum("dashed" in edge for edge in edges) == dashed == _changing_joins(network)
    assert all("solid" in edge for edge in edges if "dashed" not in edge)


def test_layer_detail_draws_the_papers_boxes() -> None:
    source = _dot_source("resnet34")
    # Fig. 3: 33 convolutions + the fc are the 34 weighted layers; one pool, one avg pool.
    assert source.count("conv, ") == 33
    assert source.count('"fc 1000"') == 1
    assert '"pool, /2"' in source and '"avg pool"' in source
    assert source.count("3x3 conv, 128, /2") == 1
    assert "output size: 56" in source and "output size: 7" in source
    boxes, _ = draw._column(resdsl.compile("resnet34"), "x", "layer", True)
    labels = [box.label for box in boxes]
    # Every main-branch conv has its BN; the three projections' are part of their arcs.
    assert labels.count("bn") == 33 and labels.count("relu") == 33 and labels.count("flatten") == 1


@pytest.mark.parametrize("detail", ["block", "stage"])
def test_coarser_details_keep_the_figures(detail: str) -> None:
    network = resdsl.compile("resnet50")
    boxes, _ = draw._column(network, "x", detail, False)
    assert sum(box.params for box in boxes) == network.num_params
    labels = [box.label for box in boxes]
    if detail == "stage":
        assert "conv3_x: 4 x bottleneck(128), /2" in labels
        assert len([label for label in labels if "bottleneck" in label]) == 4
    else:
        assert len([label for label in labels if "bottleneck" in label]) == 3 + 4 + 6 + 3


def test_side_by_side_columns() -> None:
    source = _dot_source("vgg19", "plain34", "resnet34")
    assert source.count("subgraph cluster_") == 3
    assert len(_shortcut_edges(source)) == 16


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed (CI installs it)")
def test_rendered_svg_has_the_expected_nodes_and_edges(tmp_path: Path) -> None:
    out = tmp_path / "tiny.svg"
    assert main(["draw", str(FIXTURES / "tiny.res"), "-o", str(out)]) == 0
    root = ET.parse(out).getroot()
    groups = [(g.get("class") or "").split()[0] for g in root.iter(f"{SVG}g")]
    network = resdsl.compile(FIXTURES / "tiny.res")
    drawn_layers = sum(1 for _, a in network.nodes() if a["role"] == "main" and draw.layer_label(a["layer"]) is not None)
    assert groups.count("node") == drawn_layers + 1  # + the "image" box
    # The column's links between consecutive boxes, plus one arc per shortcut.
    assert groups.count("edge") == drawn_layers + len(list(network.nodes("add")))
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
