"""The IR: node kinds, documented keys, shortcut options, stride placement and naming."""

from __future__ import annotations

import networkx as nx
import pytest

import resdsl
from resdsl.layers import NODE_KINDS, Conv, ZeroPad

SMALL = """
network small(option_width=16) {{
    input 3x32x32
    shortcut {option}
    stem {{
        conv 3x3, 16
        bn
        relu
    }}
    stage a: 2 x basic(16)
    stage b: 2 x basic(option_width * 2, stride=2)
    head {{
        avgpool
        fc 10
    }}
}}
"""


def compile_small(option: str) -> resdsl.Network:
    return resdsl.compile_text(SMALL.format(option=option), path="small.res")


def test_every_node_has_the_documented_keys() -> None:
    network = compile_small("B")
    graph = network.graph
    assert nx.is_directed_acyclic_graph(graph)
    for _, attrs in graph.nodes(data=True):
        assert attrs["layer"].kind in NODE_KINDS
        for key in ("inputs", "pos", "trace", "scope", "block", "label", "written", "role", "shape", "name", "params", "macs"):
            assert key in attrs, key
        # Edges mirror the ordered inputs exactly.
        assert sorted(graph.predecessors(_)) == sorted(set(attrs["inputs"]))
    for _, _, attrs in graph.edges(data=True):
        assert "shape" in attrs
    for _node, attrs in network.nodes("add"):
        assert len(attrs["inputs"]) == 2
        assert "shortcut" in attrs
    joins = {block.join for block in network.blocks}
    assert {node for node, _ in network.nodes("add")} == joins


def test_positions_point_into_the_sources() -> None:
    network = compile_small("B")
    conv = next(attrs for _, attrs in network.nodes("conv") if attrs["name"] == "b.0.conv1")
    assert conv["pos"].path == "<prelude>"
    assert conv["pos"].source.line(conv["pos"].line).strip() == "conv 3x3, width, stride=stride"
    assert conv["trace"][-1].pos.source.line(conv["trace"][-1].pos.line).strip().startswith("stage b:")
    stem = next(attrs for _, attrs in network.nodes("conv") if attrs["name"] == "conv1")
    assert (stem["pos"].path, stem["pos"].line) == ("small.res", 6)


@pytest.mark.parametrize(
    ("option", "adds", "identity", "zeropads", "projections"),
    [
        ("A", 4, 3, 1, 0),  # b.0 doubles channels and halves the size: zero-padding
        ("B", 4, 3, 0, 1),  # projection only where dimensions change
        ("C", 4, 0, 0, 4),  # projection on every shortcut
        ("none", 0, 0, 0, 0),  # the plain network
    ],
)
def test_shortcut_options(option: str, adds: int, identity: int, zeropads: int, projections: int) -> None:
    network = compile_small(option)
    graph = network.graph
    add_nodes = [node for node, _ in network.nodes("add")]
    assert len(add_nodes) == adds
    # The second input of a join is the shortcut: the block's own input for an identity.
    entries = {block.join: block.entry for block in network.blocks}
    fed_directly = [n for n in add_nodes if graph.nodes[n]["inputs"][1] == entries[n]]
    assert len(fed_directly) == identity
    assert len(list(network.nodes("zeropad"))) == zeropads
    plans = [block.plan.kind for block in network.blocks if block.plan is not None]
    assert plans.count("projection") == projections
    projected = [node for node, attrs in network.nodes() if attrs["role"] == "shortcut" and attrs["layer"].kind == "conv"]
    assert len(projected) == projections
    assert network.output_shape == (10,)


def test_zero_padding_and_projection_shapes() -> None:
    network = compile_small("A")
    ((_node, attrs),) = network.nodes(ZeroPad.kind)
    assert attrs["layer"].stride == (2, 2)
    assert attrs["shape"] == (32, 16, 16)
    assert attrs["name"] == "b.0.downsample"
    assert attrs["role"] == "shortcut"
    (source,) = attrs["inputs"]
    assert network.graph.nodes[source]["shape"] == (16, 32, 32)
    assert attrs["layer"].extra_channels == 16 and attrs["params"] == 0
    # Option B: the default projection is the prelude's 1x1 conv with the stride, then BN,
    # at downsample.0 and downsample.1 (torchvision's names).
    network = compile_small("B")
    (block,) = [block for block in network.blocks if block.plan.kind == "projection"]
    conv, bn = (network.graph.nodes[node] for node in block.shortcut_nodes)
    assert (conv["name"], bn["name"]) == ("b.0.downsample.0", "b.0.downsample.1")
    assert conv["layer"].stride == (2, 2) and conv["layer"].kernel == (1, 1)
    assert bn["shape"] == (32, 16, 16)
    assert conv["params"] + bn["params"] == 16 * 32 + 2 * 32
    assert block.stride == (2, 2) and block.path == "b.0"


def test_stride_reaches_only_the_first_repetition() -> None:
    network = compile_small("B")
    strides = {attrs["name"]: attrs["layer"].stride for _, attrs in network.nodes("conv")}
    assert strides["b.0.conv1"] == (2, 2)
    assert strides["b.1.conv1"] == (1, 1)
    assert (
        dict(next(attrs for _, attrs in network.nodes("conv") if attrs["name"] == "b.1.conv1")["scope"].args)["stride"]
        == 1
    )


def test_naming_numbers_kinds_within_scope_and_honours_labels() -> None:
    network = compile_small("B")
    names = [attrs["name"] for _, attrs in network.nodes()]
    assert names[:5] == ["input", "conv1", "bn1", "relu1", "a.0.conv1"]
    assert "a.0.relu2" in names and "b.1.add1" in names
    assert names[-4:] == ["avgpool1", "flatten1", "fc1", "output"]
    labelled = resdsl.compile_text(
        "network t { input 3x8x8\n stem { conv1: conv 3x3, 4\n conv 3x3, 4 }\n head { avgpool; fc: fc 2 } }"
    )
    assert [attrs["name"] for _, attrs in labelled.nodes("conv")] == ["conv1", "conv2"]
    assert [attrs["name"] for _, attrs in labelled.nodes("fc")] == ["fc"]


def test_expressions_in_repeats_and_arguments() -> None:
    text = """
    network t(n=1, w=8) {
        input 3x16x16
        stage s: (n + 1) x basic(w * 2 - 8 // 4 * 2 + (3 - 3))
        head { avgpool; fc 10 // 3 }
    }
    """
    network = resdsl.compile_text(text)
    assert network.stages[0].blocks == 2
    convs = [attrs["layer"] for _, attrs in network.nodes("conv")]
    assert {c.out_channels for c in convs} == {12}
    assert network.output_shape == (3,)
    assert resdsl.compile_text(text, n=3, w=10).stages[0].blocks == 4


def test_pytorch_output_size_arithmetic() -> None:
    text = """
    network t {
        input 3x31x29
        stem {
            conv 7x7, 8, stride=2
            maxpool 3x3, stride=2
            conv 3x3, 8, stride=2, padding=0, dilation=2
            avgpool 2x2, stride=1
        }
    }
    """
    network = resdsl.compile_text(text)
    shapes = [attrs["shape"] for _, attrs in network.nodes() if attrs["layer"].kind in ("conv", "maxpool", "avgpool")]
    # (31+6-7)//2+1 = 16, (29+6-7)//2+1 = 15; then (16+2-3)//2+1 = 8, (15+2-3)//2+1 = 8;
    # dilated 3x3 spans 5: (8-5)//2+1 = 2; avgpool 2x2 stride 1: 1.
    assert shapes == [(8, 16, 15), (8, 8, 8), (8, 2, 2), (8, 1, 1)]


def test_grouped_bottleneck_and_widths() -> None:
    text = """
    network t {
        input 3x32x32
        stage s: 1 x bottleneck_v1_5(64, groups=32, base_width=4)
    }
    """
    network = resdsl.compile_text(text)
    convs = [attrs["layer"] for _, attrs in network.nodes("conv") if attrs["role"] == "main"]
    assert [c.out_channels for c in convs] == [128, 128, 256]
    assert convs[1].groups == 32
    assert isinstance(convs[1], Conv)
