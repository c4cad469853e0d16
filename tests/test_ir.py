"""The IR: node kinds, documented keys, shortcut options, stride placement and naming."""

from __future__ import annotations

import copy

import networkx as nx
import pytest

import resdsl
from resdsl.errors import CompilerBug
from resdsl.ir import Graph, IRError
from resdsl.layers import NODE_KINDS, Add, Conv, Input, Output, ReLU, ZeroPad

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


def test_every_node_has_the_documented_fields() -> None:
    network = compile_small("B")
    graph = network.graph
    assert isinstance(graph, nx.DiGraph) and nx.is_directed_acyclic_graph(graph)
    for node_id, data in graph.nodes(data=True):
        # Plain networkx reaches the typed node under one key, and nothing else.
        node = data["node"]
        assert set(data) == {"node"} and node is network.node(node_id) and node.id == node_id
        assert node.kind in NODE_KINDS and isinstance(node.layer, NODE_KINDS[node.kind])
        for field in ("pos", "scope", "written", "role", "shape", "name", "params", "macs"):
            assert getattr(node, field) is not None, field
        # Edges and users are the ordered inputs, seen from either end.
        assert sorted(graph.predecessors(node_id)) == sorted(set(node.inputs))
        assert sorted(graph.successors(node_id)) == sorted(node.users)
    for _, _, data in graph.edges(data=True):
        assert data == {}  # a tensor's shape is its producer's: edges carry nothing of their own
    for node in network.nodes("add"):
        assert len(node.inputs) == 2
        assert network.blocks[node.block].join == node.id and network.blocks[node.block].plan is not None
    joins = {block.join for block in network.blocks}
    assert {node.id for node in network.nodes("add")} == joins
    network.lint(("shape", "name", "params", "macs"))


def test_positions_point_into_the_sources() -> None:
    network = compile_small("B")
    conv = next(node for node in network.nodes("conv") if node.name == "b.0.conv1")
    assert conv.pos.path == "<prelude>"
    assert conv.pos.source.line(conv.pos.line).strip() == "conv 3x3, width, stride=stride"
    assert conv.trace[-1].pos.source.line(conv.trace[-1].pos.line).strip().startswith("stage b:")
    stem = next(node for node in network.nodes("conv") if node.name == "conv1")
    assert (stem.pos.path, stem.pos.line) == ("small.res", 6)


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
    add_nodes = [node.id for node in network.nodes("add")]
    assert len(add_nodes) == adds
    # The second input of a join is the shortcut: the block's own input for an identity.
    entries = {block.join: block.entry for block in network.blocks}
    fed_directly = [n for n in add_nodes if graph.node(n).inputs[1] == entries[n]]
    assert len(fed_directly) == identity
    assert len(list(network.nodes("zeropad"))) == zeropads
    plans = [block.plan.kind for block in network.blocks if block.plan is not None]
    assert plans.count("projection") == projections
    projected = [node for node in network.nodes("conv") if node.role == "shortcut"]
    assert len(projected) == projections
    assert network.output_shape == (10,)


def test_zero_padding_and_projection_shapes() -> None:
    network = compile_small("A")
    (zeropad,) = network.nodes(ZeroPad.kind)
    assert zeropad.layer.stride == (2, 2)
    assert zeropad.shape == (32, 16, 16)
    assert zeropad.name == "b.0.downsample"
    assert zeropad.role == "shortcut"
    (source,) = zeropad.inputs
    assert network.node(source).shape == (16, 32, 32)
    assert zeropad.layer.extra_channels == 16 and zeropad.params == 0
    # Option B: the default projection is the prelude's 1x1 conv with the stride, then BN,
    # at downsample.0 and downsample.1 (torchvision's names).
    network = compile_small("B")
    (block,) = [block for block in network.blocks if block.plan.kind == "projection"]
    conv, bn = (network.node(node) for node in block.shortcut_nodes)
    assert (conv.name, bn.name) == ("b.0.downsample.0", "b.0.downsample.1")
    assert conv.layer.stride == (2, 2) and conv.layer.kernel == (1, 1)
    assert bn.shape == (32, 16, 16)
    assert conv.params + bn.params == 16 * 32 + 2 * 32
    assert block.stride == (2, 2) and block.path == "b.0"


def test_stride_reaches_only_the_first_repetition() -> None:
    network = compile_small("B")
    strides = {node.name: node.layer.stride for node in network.nodes("conv")}
    assert strides["b.0.conv1"] == (2, 2)
    assert strides["b.1.conv1"] == (1, 1)
    assert dict(next(node for node in network.nodes("conv") if node.name == "b.1.conv1").scope.args)["stride"] == 1


def test_naming_numbers_kinds_within_scope_and_honours_labels() -> None:
    network = compile_small("B")
    names = [node.name for node in network.nodes()]
    assert names[:5] == ["input", "conv1", "bn1", "relu1", "a.0.conv1"]
    assert "a.0.relu2" in names and "b.1.add1" in names
    assert names[-4:] == ["avgpool1", "flatten1", "fc1", "output"]
    labelled = resdsl.compile_text(
        "network t { input 3x8x8\n stem { conv1: conv 3x3, 4\n conv 3x3, 4 }\n head { avgpool; fc: fc 2 } }"
    )
    assert [node.name for node in labelled.nodes("conv")] == ["conv1", "conv2"]
    assert [node.name for node in labelled.nodes("fc")] == ["fc"]


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
    convs = [node.layer for node in network.nodes("conv")]
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
    shapes = [node.shape for node in network.nodes() if node.kind in ("conv", "maxpool", "avgpool")]
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
    convs = [node.layer for node in network.nodes("conv") if node.role == "main"]
    assert [c.out_channels for c in convs] == [128, 128, 256]
    assert convs[1].groups == 32
    assert isinstance(convs[1], Conv)


def _chain() -> Graph:
    """input -> relu -> relu -> output, built through the Graph API."""
    graph = Graph()
    x = graph.create(Input((3, 4, 4)))
    a = graph.create(ReLU(), (x.id,))
    b = graph.create(ReLU(), (a.id,))
    graph.create(Output(), (b.id,))
    return graph


def test_graph_derives_edges_and_users_from_inputs() -> None:
    graph = _chain()
    graph.lint()
    assert graph.node(1).users == (2,) and set(graph.successors(1)) == {2}
    joined = graph.create(Add(), (1, 2))
    graph.replace_input(3, 2, joined.id)  # the output now reads the join
    graph.lint()
    assert graph.node(2).users == (joined.id,) and graph.node(1).users == (2, joined.id)
    assert graph.execution_order() == [0, 1, 2, joined.id, 3]
    # Every reader of a node moves to its replacement; a node with readers cannot go.
    with pytest.raises(IRError, match="still read it"):
        graph.erase(joined.id)
    assert graph.replace_all_uses_with(joined.id, 2) == [3]
    graph.erase(joined.id)
    graph.lint()
    assert joined.id not in graph and graph.node(1).users == (2,) and graph.node(3).inputs == (2,)
    assert set(graph.edges) == {(0, 1), (1, 2), (2, 3)}
    with pytest.raises(IRError, match="not in the graph"):
        graph.create(ReLU(), (99,))
    # The node data is the one map from ids to nodes: a networkx copy reads the same nodes.
    copy = graph.copy()
    assert isinstance(copy, Graph) and copy.node(1) is graph.node(1)
    assert [node.id for node in copy.walk()] == graph.execution_order()
    copy.lint()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda graph: graph.add_edge(0, 3), "edges and inputs differ"),
        (lambda graph: graph.nodes[1].update(pending_shortcut=True), "not its typed node alone"),
        (lambda graph: graph.graph.update(version=1), "carries attributes"),
        (lambda graph: graph.create(Add(), (1,)), "the kind takes two or more"),
        (lambda graph: setattr(graph.node(2), "_inputs", (0,)), "node 2 is a user of node 1 but does not read it"),
    ],
)
def test_lint_reports_each_broken_invariant(breakage, message: str) -> None:
    graph = _chain()
    breakage(graph)
    with pytest.raises(IRError, match=message):
        graph.lint()


def test_lint_asks_for_the_fields_the_passes_wrote() -> None:
    graph = _chain()
    with pytest.raises(IRError, match="has no shape"):
        graph.lint(("shape",))
    network = compile_small("B")
    network.lint(("shape", "name", "params", "macs"))
    network.blocks[1].nodes.append(10_000)
    with pytest.raises(IRError, match="not in the graph"):
        network.lint()


def test_the_suite_lints_after_every_pass_and_a_bad_pass_is_a_compiler_bug() -> None:
    from resdsl import passes

    assert passes.LINT  # tests/conftest.py
    network = compile_small("B")

    def stray_edge(network: resdsl.Network) -> None:
        network.graph.add_edge(0, network.order()[-1])

    network.instance = None
    with pytest.raises(CompilerBug, match=r"stray_edge.*edges and inputs differ"):
        passes.run_passes(network, (stray_edge,))


def test_shortcuts_are_decided_where_add_shortcut_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    # Elaboration alone makes the whole graph, shapes and shortcuts included: each add has
    # its two inputs and each block its plan, and nothing of the front end stays behind.
    # Every pass after it is IR -> IR.
    from resdsl import compiler, passes

    assert [compiler_pass.__name__ for compiler_pass in passes.PASSES] == [
        "block_structure",
        "assign_names",
        "count_cost",
    ]
    monkeypatch.setattr(compiler, "run_passes", lambda network: network)
    for option, kinds in (("A", {"zeropad"}), ("B", {"conv", "bn"}), ("C", {"conv", "bn"}), ("none", set())):
        network = compile_small(option)
        assert all(node.shape is not None and node.name is None for node in network.nodes())
        assert all(len(node.inputs) == 2 for node in network.nodes("add"))
        assert all(block.plan is not None for block in network.blocks)
        shortcut_nodes = [network.node(n) for block in network.blocks for n in block.shortcut_nodes]
        assert {node.kind for node in shortcut_nodes} == kinds
        assert all(node.role == "shortcut" for node in shortcut_nodes)
        assert all(set(data) == {"node"} for _, data in network.graph.nodes(data=True))
        assert not network.graph.graph and not hasattr(network, "instance")


def test_lint_checks_totals_and_stages_against_the_nodes() -> None:
    import dataclasses

    network = resdsl.compile("cifar20")
    network.lint(("shape", "name", "params", "macs"))
    stale = copy.deepcopy(network)
    stale.num_params += 1  # a total patched by hand
    with pytest.raises(IRError, match="params total"):
        stale.lint(("shape", "name", "params", "macs"))
    stale = copy.deepcopy(network)
    first = stale.stages[0]
    stale.stages = (dataclasses.replace(first, macs=first.macs + 1), *stale.stages[1:])
    with pytest.raises(IRError, match="stages sum"):
        stale.lint(("shape", "name", "params", "macs"))
    stale = copy.deepcopy(network)
    index = next(i for i, stage in enumerate(stale.stages) if stage.section == "stage")
    stale.stages = tuple(
        dataclasses.replace(stage, blocks=stage.blocks + 1) if i == index else stage
        for i, stage in enumerate(stale.stages)
    )
    with pytest.raises(IRError, match="counts"):
        stale.lint(("shape", "name", "params", "macs"))


def test_every_rewrite_leaves_its_argument_alone_and_relints() -> None:
    from resdsl.passes import INFERENCE_REWRITES, apply_rewrite

    network = resdsl.compile("timm/repvgg_a0", input="3x32x32")
    before = (network.num_params, len(network.graph), [stage.params for stage in network.stages])
    for rewrite in INFERENCE_REWRITES:
        result = apply_rewrite(network, rewrite)
        assert result is not network and len(result.graph) <= len(network.graph)
        assert (network.num_params, len(network.graph), [stage.params for stage in network.stages]) == before
        assert sum(stage.params for stage in result.stages) == result.num_params
