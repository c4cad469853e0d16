"""Conformance of every node kind (resdsl/layers.py): each registered kind, through
its own example statement, against what torch builds for it. Kinds that are not
layer statements (the joins, split, weighted) are written after two named values, as
their examples say; zeropad, which only a shortcut makes, has a probe of its own.

For each kind: the IR's shape rule against the built module's real output; the IR's
parameter count against the module's parameters and its MACs against torch's
FlopCounterMode; a label for figures; a positioned diagnostic for a bad argument;
and its functional reference against the module (via the interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

pytest.importorskip("torch", reason="the conformance test builds every kind in torch")

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import resdsl
import resdsl.layers
from resdsl import interpret
from resdsl.backends.torch import build
from resdsl.layers import JOINS, LAYER_KINDS, NODE_KINDS, Layer, layout
from tests.oracle import randomise, relative_error

#: Node kinds that no statement writes alone, each probed by a network of its own below.
CONTEXT_PROBES = {
    # Option A's shortcut where the channels double and the size halves.
    "zeropad": """
block b(w, stride=1) {
    conv 3x3, w, stride=stride
    add shortcut
}
network probe {
    input 4x11x11
    shortcut A
    stem {
        conv 3x3, 4
    }
    stage s: b(8, stride=2)
}
""",
}

#: Node kinds that only a rewrite makes (resdsl.passes.rewrite): a spec, and the rewrite
#: whose result holds the kind.
REWRITE_PROBES = {
    "fused_attention": (
        """
network probe {
    input 4x11x11
    stem {
        conv 3x3, 8
        tokens
        heads 2
        let q
        transpose
        let kt
        matmul q, kt
        scale 0.5
        softmax
        let a
        matmul a, q
        merge heads
    }
}
""",
        "fuse_attention",
    ),
}
CONTEXT_PROBES.update({kind: text for kind, (text, _) in REWRITE_PROBES.items()})

#: (kind, statement): every node kind's example and the variants of its options.
EXAMPLES = [
    pytest.param(kind, example, id=f"{kind}-{index}" if index else kind)
    for kind, cls in sorted(NODE_KINDS.items())
    if not cls.graph_end and kind not in CONTEXT_PROBES
    for index, example in enumerate((cls.example, *cls.variants))
]

#: What a kind that is not a layer statement finds before its example: two named values.
NAMED_VALUES = ("conv 3x3, {c}", "let a", "conv 3x3, {c}", "let b")


def _lines(kind: str, example: str, width: str, indent: str) -> str:
    """The example's lines: a labelled layer, or the named values and the statements."""
    if kind in LAYER_KINDS:
        # The statement is the example's last; those before it make its input (a token sequence).
        *before, statement = example.split("; ")
        return f"\n{indent}".join([*before, f"target: {statement}"])
    return f"\n{indent}".join([*(line.format(c=width) for line in NAMED_VALUES), *example.split("; ")])


def network_for(kind: str, example: str | None = None):
    example = example or NODE_KINDS[kind].example
    if kind in REWRITE_PROBES:
        from resdsl import passes

        text, rewrite = REWRITE_PROBES[kind]
        return passes.apply_rewrite(resdsl.compile_text(text, path=f"{kind}.res"), vars(passes)[rewrite])
    if kind in CONTEXT_PROBES:
        return resdsl.compile_text(CONTEXT_PROBES[kind], path=f"{kind}.res")
    flat = kind == "fc"
    text = f"""
network probe {{
    input 4x11x11
    stem {{
        conv 3x3, 8
        {"flatten" if flat else ""}
        {_lines(kind, example, "8", " " * 8)}
    }}
}}
"""
    return resdsl.compile_text(text, path=f"{kind}.res")


def targets_of(network: resdsl.Network, kind: str) -> list:
    """The nodes the example made: the layer labelled `target`, or every node of the kind."""
    if kind in LAYER_KINDS:
        return [node for node in network.nodes() if node.label == "target"]
    return list(network.nodes(kind))


def test_every_kind_has_an_example_and_usage() -> None:
    for name, kind in LAYER_KINDS.items():
        assert kind.example.split("; ")[-1].split()[0] == name, name
        assert kind.usage, name
    # Every other node kind is probed too: by its example statements, or in context.
    for name, kind in NODE_KINDS.items():
        if not kind.graph_end:
            assert kind.example or name in CONTEXT_PROBES, name
            assert name in kind.example or name in CONTEXT_PROBES, name


def test_every_join_is_probed() -> None:
    # The joins come from the registry, so a new one is in EXAMPLES without this file changing.
    probed = {param.values[0] for param in EXAMPLES}
    assert set(JOINS) <= probed and {"add", "mul", "cat", "sub"} <= set(JOINS)


@pytest.mark.parametrize(
    ("kind", "example"), [*EXAMPLES, *(pytest.param(kind, "", id=kind) for kind in CONTEXT_PROBES)]
)
def test_kind_conforms(kind: str, example: str) -> None:
    network = network_for(kind, example)
    found = targets_of(network, kind)
    assert found
    for attrs in found:
        _conforms(network, kind, attrs)


def _conforms(network: resdsl.Network, kind: str, attrs) -> None:
    layer = attrs.layer
    assert layer.kind == kind
    assert isinstance(layer.figure_label(), str) and layer.figure_label()
    model = randomise(build(network)).double().eval()
    x = torch.randn(3, *network.input_shape, dtype=torch.float64)
    module = dict(model.named_modules()).get(attrs.name) if layer.builds_module else None
    tensor = dict(model.named_parameters()).get(attrs.name) if layer.builds_module else None
    seen: dict[str, torch.Tensor] = {}
    if layer.holds_tensor:
        # One tensor under the node's name (layer scale, a learned token, a position embedding).
        assert module is None and tensor is not None
        assert attrs.params == tensor.numel() and attrs.macs == 0
    elif module is not None:
        module.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
        assert attrs.params == sum(p.numel() for p in module.parameters())
        source = network.node(attrs.inputs[0]).shape
        # On the meta device, as tests/test_reference_models.py counts: a CPU's fused
        # attention kernel is not among the counter's ops, the math path's matrix products are.
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            copy.deepcopy(module).to("meta")(torch.empty(1, *source, dtype=torch.float64, device="meta"))
        assert attrs.macs == counter.get_total_flops() // 2
    else:
        assert attrs.params == 0
        # A kind computed inline (a join, a split's part, a matrix product): its own code
        # under the counter, on the meta device.
        names = [f"v{index}" for index in range(len(attrs.inputs))]
        values = {
            name: torch.empty(1, *network.node(source).shape, dtype=torch.float64, device="meta")
            for name, source in zip(names, attrs.inputs, strict=True)
        }
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            if layer.is_join or layer.computed_inline:
                eval(layer.forward_expression(names), {"torch": torch}, values)
        assert attrs.macs == counter.get_total_flops() // 2
    # The trait the naming pass reads agrees with what the backend registers under the name
    # (a module, or layer scale's lone tensor).
    assert (module is not None or tensor is not None) == layer.builds_module
    # The node's own output, in the built model and in the interpreter: both against its shape rule.
    outputs = _value_at(network, model, attrs.id, x)
    with torch.no_grad():
        out = model(x)
        expected = interpret.run(network, model.state_dict(), x)
    assert relative_error(out, expected) < 1e-12
    if module is not None:
        assert tuple(seen["out"].shape[1:]) == attrs.shape
    assert tuple(outputs.shape[1:]) == attrs.shape


def _value_at(network: resdsl.Network, model: nn.Module, node_id: int, x: torch.Tensor) -> torch.Tensor:
    """One node's value, computed by the kinds' references (as the interpreter does),
    which its shape rule must describe, whether or not the kind builds a module."""
    values: dict[int, torch.Tensor] = {}
    by_module: dict[str, dict[str, torch.Tensor]] = {}
    state = model.state_dict()
    for key, tensor in state.items():
        parts = key.split(".")
        for cut in range(1, len(parts)):
            by_module.setdefault(".".join(parts[:cut]), {})[".".join(parts[cut:])] = tensor
    with torch.no_grad():
        for current in network.order():
            node = network.node(current)
            if node.kind == "input":
                values[current] = x
                continue
            tensors = {"tensor": state[node.name]} if node.layer.holds_tensor else by_module.get(node.name, {})
            values[current] = node.layer.reference([values[i] for i in node.inputs], tensors, False)
            if current == node_id:
                break
    return values[node_id]


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_kind_reports_a_bad_argument_at_its_line(kind: str) -> None:
    text = (
        f"network probe {{\n    input 4x11x11\n    stem {{\n        conv 3x3, 8\n        {kind} bogus=1\n    }}\n}}\n"
    )
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    error = caught.value
    assert error.line == 5 and error.path == "bad.res"
    assert "bogus" in error.message or "needs" in error.message, error.message


# The round-3 kinds against independent computations -------------------------------------


@pytest.mark.parametrize(("radix", "cardinality"), [(2, 1), (2, 2), (4, 3)])
def test_softmax_equals_timms_radix_softmax(radix: int, cardinality: int) -> None:
    # timm's RadixSoftmax (ResNeSt's split attention) returns N x C; its SplitAttn views it as N x C x 1 x 1.
    from timm.layers.split_attn import RadixSoftmax

    from resdsl.backends.torch_modules import GroupSoftmax
    from resdsl.layers import Softmax

    x = torch.randn(3, radix * cardinality * 5, 1, 1, dtype=torch.float64)
    expected = RadixSoftmax(radix, cardinality)(x).reshape(x.shape)
    layer = Softmax(groups=radix, cardinality=cardinality)
    assert relative_error(layer.reference([x], {}, False), expected) < 1e-12
    assert relative_error(GroupSoftmax(radix, cardinality)(x), expected) < 1e-12


def test_softmax_across_paths_is_sks_and_over_channels_by_default() -> None:
    from resdsl.layers import Softmax

    x = torch.randn(2, 12, 3, 4, dtype=torch.float64)
    # SKNet: the attention's channels are num_paths x C, normalised across the paths.
    across = torch.softmax(x.reshape(2, 2, 6, 3, 4), 1).reshape(x.shape)
    assert relative_error(Softmax(groups=2).reference([x], {}, False), across) < 1e-12
    assert relative_error(Softmax().reference([x], {}, False), torch.softmax(x, 1)) < 1e-12
    per_cardinal = torch.softmax(x.reshape(2, 3, 4, 3, 4), 2).reshape(x.shape)
    assert relative_error(Softmax(cardinality=3).reference([x], {}, False), per_cardinal) < 1e-12


def test_relu6_and_hardtanh_as_the_networks_act() -> None:
    text = """
block unit(width) {
    conv 3x3, width
    bn
    relu
}
network probe {
    input 3x8x8
    act ACT
    stem {
        conv 3x3, 4
        relu
    }
    stage s: 2 x unit(4)
}
"""
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 10
    for act, module_type, low, high in (("relu6", nn.ReLU6, 0, 6), ("hardtanh(-1, 2)", nn.Hardtanh, -1, 2)):
        network = resdsl.compile_text(text.replace("ACT", act), path="probe.res")
        model = randomise(build(network)).double().eval()
        activations = [m for m in model.modules() if isinstance(m, nn.Hardtanh)]
        assert len(activations) == 3 and all(type(m) is module_type for m in activations)
        assert {(m.min_val, m.max_val) for m in activations} == {(low, high)}
        with torch.no_grad():
            assert relative_error(model(x), interpret.run(network, model.state_dict(), x)) < 1e-12
    assert relative_error(resdsl.layers.ReLU6().reference([x], {}, False), torch.nn.functional.relu6(x)) == 0


def test_hardtanh_needs_min_below_max() -> None:
    text = "network probe {\n    input 3x8x8\n    stem {\n        hardtanh 2, 1\n    }\n}\n"
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert caught.value.line == 4 and "MIN < MAX" in caught.value.message


def test_layerscale_tensor_is_named_by_its_label() -> None:
    # ConvNeXt's layout: the block holds `gamma` itself; timm's LayerScale module layout: `ls1.gamma`.
    text = """
block unit(width) {
    conv 3x3, width, bias=true
    gamma: layerscale 0.25
    ls1.gamma: layerscale 2
    add shortcut
}
network probe {
    input 4x6x6
    stage stages.0.blocks: 2 x unit(4)
}
"""
    network = resdsl.compile_text(text, path="probe.res")
    model = build(network)
    state = model.state_dict()
    assert list(state) == [
        f"stages.0.blocks.{i}.{key}" for i in (0, 1) for key in ("gamma", "conv1.weight", "conv1.bias", "ls1.gamma")
    ]
    assert torch.equal(state["stages.0.blocks.1.gamma"], torch.full((4,), 0.25))
    assert torch.equal(state["stages.0.blocks.1.ls1.gamma"], torch.full((4,), 2.0))
    assert network.num_params == 2 * (4 * 4 * 9 + 4 + 4 + 4)
    randomise(model)
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        assert relative_error(model(x), interpret.run(network, model.state_dict(), x)) < 1e-6
        block = model.get_submodule("stages.0.blocks.0")
        gamma, ls = state["stages.0.blocks.0.gamma"], state["stages.0.blocks.0.ls1.gamma"]
        first = block.conv1(x) * (gamma * ls).reshape(-1, 1, 1) + x
        assert relative_error(block(x), first) < 1e-6


@pytest.mark.parametrize(("groups", "gamma", "eps"), [(1, 1.0, 1e-5), (2, 1.7139588594436646, 1e-4)])
def test_standardized_conv_equals_timms_scaled_std_conv(groups: int, gamma: float, eps: float) -> None:
    # timm's ScaledStdConv2d (NF-ResNet's convolutions), with its parameters loaded by name.
    from timm.layers import ScaledStdConv2d as TimmScaledStdConv2d

    from resdsl.backends.torch_modules import ScaledStdConv2d
    from resdsl.layers import Conv

    expected_module = randomise(TimmScaledStdConv2d(4, 6, 3, stride=2, groups=groups, gamma=gamma, eps=eps)).double()
    module = ScaledStdConv2d(4, 6, 3, stride=2, padding=1, groups=groups, gamma=gamma, eps=eps).double()
    module.load_state_dict(expected_module.state_dict())  # strict: weight, bias, gain
    layer = Conv((3, 3), 6, (2, 2), groups=groups, bias=True, standardize=True, gamma=gamma, eps=eps)
    x = torch.randn(2, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = expected_module(x)
        assert relative_error(module(x), expected) < 1e-12
        assert relative_error(layer.reference([x], dict(module.named_parameters()), False), expected) < 1e-12


def test_standardized_conv_ignores_each_channels_weight_scale_and_shift() -> None:
    # The point of weight standardisation (Qiao et al., 2019): an affine change of one
    # output channel's weights leaves the output alone, as long as eps is negligible.
    from resdsl.layers import Conv

    layer = Conv((3, 3), 5, bias=True, standardize=True, gamma=2.0, eps=1e-12)
    weight = torch.randn(5, 3, 3, 3, dtype=torch.float64)
    tensors = {"weight": weight, "bias": torch.randn(5, dtype=torch.float64), "gain": torch.rand(5, 1, 1, 1) + 0.5}
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    moved = dict(
        tensors, weight=weight * torch.rand(5, 1, 1, 1, dtype=torch.float64).add(0.5) + torch.randn(5, 1, 1, 1)
    )
    expected = layer.reference([x], tensors, False)
    assert relative_error(layer.reference([x], moved, False), expected) < 1e-9
    plain = Conv((3, 3), 5, bias=True).reference([x], tensors, False)
    assert relative_error(plain, expected) > 1e-3


def test_standardized_convs_stay_unfolded_for_inference() -> None:
    # Their stored weights are not the ones they apply: neither BN folding nor the
    # parallel-path fold may take them, and the model for inference must still agree.
    from tests.oracle import compare_with_oracle

    text = """
block unit(width) {
    let x
    conv 3x3, width, standardize=true
    bn
    let dense
    from x
    conv 1x1, width, bias=true, standardize=true, gamma=1.5
    bn
    let pointwise
    add pointwise, dense, x
    relu
}
network probe {
    input 3x8x8
    stem {
        conv 3x3, 4, bias=true, standardize=true
    }
    stage s: 2 x unit(4)
}
"""
    network = resdsl.compile_text(text, path="probe.res")
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("gamma=1.7", "gamma applies only to a weight-standardised convolution"),
        ("standardize=false, eps=1e-4", "eps applies only to a weight-standardised convolution"),
        ("standardize=true, eps=0", "eps must be positive"),
        ("standardize=true, gamma=-1", "gamma must be positive"),
    ],
)
def test_standardize_options_are_checked_at_their_argument(arguments: str, message: str) -> None:
    text = f"network probe {{\n    input 3x8x8\n    stem {{\n        conv 3x3, 4, {arguments}\n    }}\n}}\n"
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    error = caught.value
    assert (error.path, error.line) == ("bad.res", 4) and message in error.message, error.message
    assert error.column > len("        conv 3x3, 4, ")


# Every consumer of a kind ------------------------------------------------------------
#
# A kind reaches a user through more than the torch backend: the table (the `check
# --stages` and `build` output), figures, the language server's hover, `fmt` and `diff`.
# Each kind's example goes through all of them, inside a block of a stage (or the head,
# for a kind whose output or input is flat), so a kind added to LAYER_KINDS is covered
# here without a line of this file changing.


def _flat(kind: str) -> bool:
    """Whether the kind's example makes or needs a flat tensor (then it goes in the head)."""
    network = network_for(kind)
    return any(len(node.shape) == 1 for node in targets_of(network, kind))


def _reads_tokens(kind: str, example: str) -> bool:
    """Whether the example's target reads a token sequence and gives no feature map
    (then it is staged among tokens: the stem ends with `tokens`, the head averages them)."""
    if kind not in LAYER_KINDS:  # a join's example starts from named feature maps
        return False
    network = network_for(kind, example)
    return any(
        layout(network.node(node.inputs[0]).shape) == "tokens" and layout(node.shape) != "map"
        for node in targets_of(network, kind)
    )


def staged_spec(kind: str, example: str | None = None) -> str:
    """A spec with the kind's example (labelled `target` where it is a layer): in a stage's block, or in the head."""
    example = example or NODE_KINDS[kind].example
    stem = "conv 3x3, 8"
    if _reads_tokens(kind, example):
        # Among tokens: the example without its own `tokens`, after the stem's.
        statements = example.split("; ")
        example = "; ".join(statements[1:] if statements[0] == "tokens" else statements)
        stem += "\n        tokens"
        if any(len(node.shape) == 1 for node in targets_of(network_for(kind), kind)):
            head = _lines(kind, example, "8", " " * 8)
            block = "fc c"
        else:
            head = "mean tokens\n        fc 3"
            block = f"fc c\n    {_lines(kind, example, 'c', ' ' * 4)}"
    elif _flat(kind):
        head = f"avgpool\n        {'flatten' if kind == 'fc' else ''}\n        target: {example}"
        block = "conv 3x3, c"
    else:
        head = "avgpool\n        fc 3"
        block = f"conv 3x3, c\n    {_lines(kind, example, 'c', ' ' * 4)}"
        made = targets_of(network_for(kind, example), kind)
        if any(layout(node.shape) == "tokens" for node in made):
            # A map again for the next repetition's convolution: unfold's patches fold back.
            patch = "x".join(map(str, made[0].layer.patch)) if kind == "unfold" else ""
            block += f"\n    fold {patch}" if patch else "\n    grid 11x11"
    return f"""# the {kind} kind in every consumer
block probe_block(c) {{
    {block}
}}

network probe {{
    input 4x11x11
    stem {{
        {stem}
    }}
    stage s1: 2 x probe_block(8)
    head {{
        {head}
    }}
}}
"""


def _targets(network: resdsl.Network, kind: str) -> list:
    found = targets_of(network, kind)
    assert found and all(node.kind for node in found)
    return found


@pytest.mark.parametrize(("kind", "example"), EXAMPLES)
def test_every_consumer_takes_the_kind(kind: str, example: str, tmp_path, capsys) -> None:
    from resdsl.backends import draw
    from resdsl.backends.draw_html import to_html
    from resdsl.cli import main
    from resdsl.diff import diff
    from resdsl.fmt import format_text
    from resdsl.lsp.analysis import analyze, hover

    text = staged_spec(kind, example)
    spec = tmp_path / f"{kind}.res"
    spec.write_text(text, encoding="utf-8")
    network = resdsl.compile(spec)
    targets = _targets(network, kind)
    assert {node.kind for node in targets} == {kind}

    # The table, at every detail: the rows hold the target and add up to the network.
    for detail in ("layer", "block", "stage"):
        table = resdsl.Table.of(network, detail=detail)
        assert sum(row.params for row in table.rows) == network.num_params, detail
        assert sum(row.macs for row in table.rows) == network.macs, detail
        assert "probe" in str(table) and table.records()["rows"]
    layer_rows = {row.module: row for row in resdsl.Table.of(network, detail="layer").rows}
    for node in targets:
        row = layer_rows[node.name]
        assert row.kind == kind and row.output_shape == tuple(node.shape)
        assert row.kernel == node.layer.kernel_text()

    # Figures: every detail, both directions, with and without shapes; the interactive page.
    for detail in ("layer", "block", "stage"):
        for direction in ("TB", "LR"):
            source = draw.to_dot([network], detail=detail, direction=direction, shapes=True, all_layers=True).source
            assert "digraph" in source
            if detail == "layer":
                label = targets[0].layer.figure_label()
                assert label.split(",")[0] in source, (label, kind)
    assert kind in to_html([network], detail="layer", all_layers=True) or targets[0].name in to_html([network])

    # The language server's hover on the kind's word, at each of its lines.
    analysis = analyze(text, spec)
    assert not analysis.errors, analysis.errors
    lines = enumerate(text.splitlines(), 1)
    line_number, line = next((i, t) for i, t in lines if "target:" in t or t.strip().startswith(f"{kind} "))
    shown = hover(analysis, line_number, line.index(kind) + 1)
    assert shown is not None and f"**{kind}**" in shown, shown

    # fmt: the canonical layout parses to the same network and is a fixed point.
    formatted = format_text(text, str(spec))
    assert format_text(formatted, str(spec)) == formatted
    again = resdsl.compile_text(formatted, path=str(spec))
    assert (again.num_params, again.macs) == (network.num_params, network.macs)
    assert again.output_shape == network.output_shape

    # diff against itself (no change) and against a shipped network.
    same = diff(network, network)
    assert all(pair.params_change == 0 and pair.macs_change == 0 for pair in same.pairs)
    assert "probe" in str(same)
    other = diff(network, resdsl.compile("resnet18"))
    assert sum(pair.params_change for pair in other.pairs) == other.b.num_params - network.num_params
    assert "s1" in str(other)

    # The command line: check --stages and build's table (block and layer detail).
    capsys.readouterr()
    assert main(["check", str(spec), "--stages"]) == 0
    out = capsys.readouterr().out
    assert "s1" in out and f"{network.num_params:,}" in out
    for detail in ("block", "layer"):
        assert main(["build", str(spec), "--detail", detail]) == 0
        out = capsys.readouterr().out
        assert f"{network.num_params:,}" in out
        if detail == "layer":
            assert all(node.name in out for node in targets)


def test_every_kind_declares_its_traits_consistently() -> None:
    for name, kind in NODE_KINDS.items():
        assert kind.figure in ("box", "marker", "join", "fold"), name
        assert kind.figure_fill in ("width", "fc", "pool"), name
        if kind.is_join:
            # Two or more values (None), or a fixed number of them (matmul's two).
            assert (kind.arity is None or kind.arity >= 2) and not kind.builds_module and kind.figure == "join", name
            assert kind.forward_expression is not Layer.forward_expression, name
            assert JOINS[name] is kind
        assert (kind.fixed_name is not None) == kind.graph_end, name


@pytest.fixture
def maximum_join():
    """A join defined as one class, the way docs/ir.md says a new join is added; taken
    out of the registries afterwards."""

    @dataclass(frozen=True)
    class Maximum(Layer):
        """The elementwise maximum of values of one shape."""

        kind: ClassVar[str] = "maximum"
        arity: ClassVar[int | None] = None
        is_join: ClassVar[bool] = True
        builds_module: ClassVar[bool] = False
        figure: ClassVar[str] = "join"

        def output_shape(self, inputs):
            assert all(shape == inputs[0] for shape in inputs)
            return inputs[0]

        def reference(self, inputs, tensors, training):
            result = inputs[0]
            for other in inputs[1:]:
                result = torch.where(other > result, other, result)
            return result

        def forward_expression(self, names):
            expression = names[0]
            for name in names[1:]:
                expression = f"torch.maximum({expression}, {name})"
            return expression

        def figure_label(self):
            return "max"

    yield Maximum
    del NODE_KINDS["maximum"], JOINS["maximum"]


def test_a_new_join_is_its_class_alone(maximum_join) -> None:
    # Parsing, expansion, naming, the generated forward, figures and the editors' words
    # all take the join from its class: nothing else was written for it.
    from resdsl import vocabulary
    from resdsl.backends import draw

    text = """
block b(w) {
    conv 3x3, w
    bn
    maximum { conv 1x1, w; bn }
    relu
    add shortcut
}
network t { input 4x8x8; stem { conv 3x3, 8 }; stage s: 2 x b(8) }
"""
    network = resdsl.compile_text(text)
    (first, second) = network.nodes("maximum")
    assert (first.name, second.name) == ("s.0.maximum1", "s.1.maximum1")
    assert len(first.inputs) == 2 and first.params == 0
    model = randomise(build(network)).double()
    assert "torch.maximum(" in type(model.s[0])._resdsl_source
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            expected = interpret.run(network, model.state_dict(), x, training=training)
            assert relative_error(model(x), expected) < 1e-12
    assert 'label="max"' in draw.to_dot([network]).source
    assert "maximum" in vocabulary.joins()
