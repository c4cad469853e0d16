"""The small gaps of LANGUAGE-4 section 3: BN's eps and momentum, upsampling, `sub`,
labels that start with a number, joins over named values in a network's body,
where a block outside a stage stands, and lines continued inside parentheses.

Each construct is checked against an independent computation (torch's own modules
or formulas written here) and through the reference interpreter."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the gaps are checked against torch")

import torch
from torch import nn

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build
from tests.oracle import compare_with_oracle, randomise, relative_error

# BN's eps and momentum ----------------------------------------------------------------

BN_OPTIONS = """
network probe {
    input 3x6x5
    NORM
    stem {
        conv 3x3, 4
        first: bn eps=1e-3
        relu
        conv 3x3, 4
        second: bn
        relu
        conv 3x3, 4
        third: bn momentum=0.5
    }
}
"""


def _norms(text: str) -> dict[str, nn.Module]:
    model = build(resdsl.compile_text(text, path="probe.res"))
    return {name: model.get_submodule(name) for name in ("first", "second", "third")}


def test_bn_eps_and_momentum_reach_the_module() -> None:
    norms = _norms(BN_OPTIONS.replace("NORM", ""))
    assert [(type(m), m.eps, m.momentum) for m in norms.values()] == [
        (nn.BatchNorm2d, 1e-3, 0.1),
        (nn.BatchNorm2d, 1e-5, 0.1),
        (nn.BatchNorm2d, 1e-5, 0.5),
    ]


def test_the_norm_setting_takes_bn_options_and_a_statement_overrides_them() -> None:
    norms = _norms(BN_OPTIONS.replace("NORM", "norm bn(eps=1e-4, momentum=0.01)"))
    assert [(m.eps, m.momentum) for m in norms.values()] == [(1e-3, 0.01), (1e-4, 0.01), (1e-4, 0.5)]
    # Another norm keeps its own options: the bn statement's eps is not a group norm's.
    norms = _norms(BN_OPTIONS.replace("NORM", "norm gn(2, eps=1e-2)"))
    assert all(isinstance(m, nn.GroupNorm) and m.eps == 1e-2 for m in norms.values())


def test_bn_eps_changes_the_reference_as_it_changes_torch() -> None:
    text = BN_OPTIONS.replace("NORM", "")
    network = resdsl.compile_text(text, path="probe.res")
    model = randomise(build(network)).double().eval()
    with torch.no_grad():
        # Small running variances, so that eps 1e-3 against 1e-5 shows.
        for name in ("first", "second", "third"):
            model.get_submodule(name).running_var.mul_(1e-3)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    state = model.state_dict()
    with torch.no_grad():
        expected = model(x)
        assert relative_error(interpret.run(network, state, x), expected) < 1e-12
        plain = resdsl.compile_text(text.replace("first: bn eps=1e-3", "first: bn"), path="probe.res")
        assert relative_error(interpret.run(plain, state, x), expected) > 1e-4
        # The formula itself, at the first BN: (x - mean) / sqrt(var + eps) * weight + bias.
        first = model.get_submodule("first")
        seen = {}
        first.register_forward_hook(lambda _m, i, o: seen.update(i=i[0], o=o.clone()))  # relu runs in place
        model(x)
        shape = (1, -1, 1, 1)
        by_hand = (seen["i"] - first.running_mean.reshape(shape)) / (
            first.running_var.reshape(shape) + 1e-3
        ).sqrt() * first.weight.reshape(shape) + first.bias.reshape(shape)
        assert relative_error(seen["o"], by_hand) < 1e-12


def test_bn_momentum_moves_the_running_statistics() -> None:
    network = resdsl.compile_text(BN_OPTIONS.replace("NORM", ""), path="probe.res")
    model = randomise(build(network)).double().train()
    third = model.get_submodule("third")
    before = third.running_mean.clone()
    seen = {}
    third.register_forward_hook(lambda _m, i, _o: seen.update(i=i[0]))
    with torch.no_grad():
        model(torch.randn(4, 3, 6, 5, dtype=torch.float64))
    batch_mean = seen["i"].mean((0, 2, 3))
    assert relative_error(third.running_mean, 0.5 * before + 0.5 * batch_mean) < 1e-12


def test_folding_for_inference_uses_each_bns_eps() -> None:
    # RepVGG's parallel paths and a conv-BN pair, under a large eps: the folded model must agree.
    text = """
block rep(width) {
    let x
    conv 3x3, width
    bn eps=0.3
    let dense
    from x
    conv 1x1, width
    bn
    let point
    from x
    bn eps=0.05
    let same
    add dense, point, same
    relu
}
network probe {
    input 4x7x6
    norm bn(eps=0.2)
    stem {
        conv 3x3, 4
        bn
    }
    stage s: 2 x rep(4)
}
"""
    network = resdsl.compile_text(text, path="probe.res")
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


@pytest.mark.parametrize(
    ("arguments", "message"),
    [("momentum=2", "momentum must be a number from 0 to 1"), ("eps=0", "eps must be positive"), ("3", "too many")],
)
def test_bn_options_are_checked_at_their_argument(arguments: str, message: str) -> None:
    text = f"network probe {{\n    input 3x8x8\n    stem {{\n        bn {arguments}\n    }}\n}}\n"
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    error = caught.value
    assert (error.path, error.line) == ("bad.res", 4) and message in error.message, error.message


# Joins over named values in a network's body, and where a block outside a stage stands ------

BODY_VALUES = """
block gate(width) {
    mul {
        avgpool
        conv 1x1, width, bias=true
        sigmoid
    }
}

block where(width, d=block_index / block_count + stage_index / stage_count) {
    if repeat == 0 {
        first: conv 3x3, width
    } else {
        later: conv 1x1, width
    }
    scale d
}

network probe(classes=3) {
    input 3x12x10
    stem {
        conv 3x3, 8
        let a
        conv 3x3, 8
        let b
        cat a, b
        stem_where: where(8)
    }
    let c
    pool: avgpool 3x3, stride=1, padding=1, count_include_pad=false
    let p
    sub p, c
    let d
    g: gate(8)
    let e
    mul d, e
    split [3, 5]
    let parts
    cat parts[1], parts[0]
    let f
    avgpool
    conv 1x1, 16
    softmax groups=2
    split 2
    let w
    weighted w, [f, c]
    head {
        let h
        body_where: where(8)
        let r
        add h, r
        avgpool
        fc classes
    }
}
"""


def test_joins_over_named_values_in_a_network_body_match_the_interpreter() -> None:
    network = resdsl.compile_text(BODY_VALUES, path="probe.res")
    kinds = [node.kind for node in network.nodes()]
    assert {"cat", "sub", "mul", "split", "weighted"} <= set(kinds)
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


def test_the_body_joins_compute_what_they_say() -> None:
    # pool(x) - x, PoolFormer's token mixer, checked by hand on the built module.
    text = """
network probe {
    input 2x5x4
    stem {
        conv 3x3, 4
    }
    let x
    pool: avgpool 3x3, stride=1, padding=1, count_include_pad=false
    let p
    sub p, x
    let y
    cat y, x
}
"""
    network = resdsl.compile_text(text, path="probe.res")
    model = randomise(build(network)).double().eval()
    x = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    with torch.no_grad():
        stem = model.conv1(x)
        pooled = nn.functional.avg_pool2d(stem, 3, 1, 1, count_include_pad=False)
        expected = torch.cat((pooled - stem, stem), 1)
        assert relative_error(model(x), expected) < 1e-12
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < 1e-12


def test_a_block_outside_a_stage_stands_as_a_stage_of_one_block() -> None:
    # repeat 0 (its stage's first block), block_index 0 of 1, stage_index 0 of 1.
    network = resdsl.compile_text(BODY_VALUES, path="probe.res")
    convs = {node.name: node for node in network.nodes("conv")}
    assert {"stem_where.first", "body_where.first"} <= set(convs)
    assert not any(name.endswith(".later") for name in convs)
    scales = [node.layer.factor for node in network.nodes("scale")]
    assert scales == [0.0, 0.0]
    # A stage's blocks still read their own position.
    text = BODY_VALUES.replace("        body_where: where(8)\n", "").replace(
        "    head {", "    stage s: 3 x where(8)\n    head {"
    )
    staged = resdsl.compile_text(text, path="probe.res")
    factors = [node.layer.factor for node in staged.nodes("scale")]
    assert factors == [0.0, 0.0, 1 / 3, 2 / 3]  # the stem block, then the stage


# Labels that start with a number --------------------------------------------------------

NUMBERED = """
block fuse_up(out) {
    0: conv 1x1, out
    1: bn
    2: upsample 2
}

block fuse_down(mid, out, steps, last=steps - 1) {
    for k in 0 .. steps - 1 {
        {k}.0: conv 3x3, mid, stride=2
        {k}.1: bn
        relu
    }
    {last}.0: conv 3x3, out, stride=2
    {last}.1: bn
}

network probe {
    input 3x16x12
    stem {
        0: conv 3x3, 4
        1.norm: bn
        relu
    }
    let x
    maxpool 2x2, stride=2, padding=0
    fuse.0: fuse_up(4)
    let up
    from x
    fuse.1: fuse_down(4, 8, 2)
    let down
    from up
    2: conv 3x3, 8, stride=4
    let y
    add y, down
}
"""


def test_a_label_may_start_with_a_number() -> None:
    network = resdsl.compile_text(NUMBERED, path="probe.res")
    model = build(network)
    keys = [key for key in model.state_dict() if key.endswith("weight")]
    assert keys == [
        "0.weight",
        "1.norm.weight",
        "fuse.0.0.weight",
        "fuse.0.1.weight",
        "fuse.1.0.0.weight",
        "fuse.1.0.1.weight",
        "fuse.1.1.0.weight",
        "fuse.1.1.1.weight",
        "2.weight",
    ]
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


def test_numbered_and_interpolated_labels_keep_their_layout_in_fmt() -> None:
    from resdsl.fmt import format_text

    formatted = format_text(NUMBERED, "probe.res")
    assert "    0: conv 1x1, out\n" in formatted
    assert "        {k}.0: conv 3x3, mid, stride=2\n" in formatted
    assert "    {last}.1: bn\n" in formatted
    assert format_text(formatted, "probe.res") == formatted


def test_the_highlighters_colour_a_numbered_label() -> None:
    import re

    from resdsl.highlight import rules

    (label,) = [rule for rule in rules() if rule.name == "label"]
    match = re.match(label.pattern, "    1.norm: bn")
    assert match is not None and match.group(2) == "1.norm"
    assert re.match(label.pattern, "    conv 3x3, 8") is None


# Lines continued inside parentheses --------------------------------------------------

CONTINUED = """
block b(
    width,  # the output channels
    stride=1,
    expand=min(4,
               6)
) {
    conv 3x3, width * expand, stride=stride
    split [width * 2,
           width * 2]
    let s
    cat s[1], s[0]
}

network probe(classes=10) {
    input 3x16x16
    stage s: 2 x b(8,
                   stride=2)
    head {
        avgpool
        fc classes
    }
}

network small = probe(
    classes=5
)
"""

ONE_LINE = """
block b(width, stride=1, expand=min(4, 6)) {
    conv 3x3, width * expand, stride=stride
    split [width * 2, width * 2]
    let s
    cat s[1], s[0]
}

network probe(classes=10) {
    input 3x16x16
    stage s: 2 x b(8, stride=2)
    head {
        avgpool
        fc classes
    }
}

network small = probe(classes=5)
"""


def test_a_line_continues_inside_parentheses_and_brackets() -> None:
    from resdsl.fmt import _shape
    from resdsl.parser import parse

    assert _shape(parse(CONTINUED)) == _shape(parse(ONE_LINE))
    network = resdsl.compile_text(CONTINUED, path="probe.res", network="small")
    assert network.output_shape == (5,)


def test_the_shipped_parse_tables_read_continued_lines() -> None:
    # The post-lexer is given again when the tables are loaded, not built into them.
    from resdsl import parser

    loaded = parser._load_tables(parser.grammar_path().read_text(encoding="utf-8"))
    assert loaded is not None
    loaded.parse(CONTINUED + "\n")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("block b(w,; s) {\n    conv 3x3, w\n}\n", 1),  # a ';' still ends the statement
        ("block b(w {\n    conv 3x3, w\n}\n", 1),
        ("block b(w) {\n    conv 3x3,\n        w\n}\n", 2),  # outside parentheses a line end ends it
    ],
)
def test_a_line_end_outside_parentheses_still_ends_a_statement(text: str, line: int) -> None:
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert caught.value.line == line, str(caught.value)


def test_fmt_joins_continued_lines_and_keeps_their_comments() -> None:
    from resdsl.fmt import format_text

    formatted = format_text(CONTINUED, "probe.res")
    assert "block b(width, stride=1, expand=min(4, 6)) {  # the output channels\n" in formatted
    assert "    split [width * 2, width * 2]\n" in formatted
    assert "network small = probe(classes=5)\n" in formatted
    assert format_text(formatted, "probe.res") == formatted
    with_comment_line = CONTINUED.replace("    stride=1,\n", "    # a comment on its own line\n    stride=1,\n")
    again = format_text(with_comment_line, "probe.res")
    # Inside parentheses a comment cannot stand on a line of its own: it follows the joined line.
    assert "expand=min(4, 6)) {  # the output channels # a comment on its own line\n" in again
    assert format_text(again, "probe.res") == again


# The documentation of the kinds -----------------------------------------------------------


def test_the_docs_name_every_kind() -> None:
    # docs/ir.md's list of node kinds, and docs/language.md's table of what specs write.
    from pathlib import Path

    from resdsl.layers import JOINS, LAYER_KINDS, NODE_KINDS

    root = Path(__file__).resolve().parent.parent
    ir = (root / "docs" / "ir.md").read_text(encoding="utf-8")
    kinds = ir.split("### Node kinds", 1)[1].split("###", 1)[0]
    assert [kind for kind in NODE_KINDS if f"`{kind}`" not in kinds] == []
    language = (root / "docs" / "language.md").read_text(encoding="utf-8")
    rows = [line for line in language.splitlines() if line.startswith("| `")]
    for kind in [*LAYER_KINDS, *JOINS]:
        assert any(f"`{kind}`" in row.split("|")[1] for row in rows), kind


def test_hover_on_a_layer_with_a_numbered_or_interpolated_label() -> None:
    from pathlib import Path

    from resdsl.lsp.analysis import analyze, hover

    analysis = analyze(NUMBERED, Path("probe.res").resolve())
    assert not analysis.errors, analysis.errors
    lines = NUMBERED.splitlines()
    for start in ("    0: conv 1x1", "        {k}.0: conv", "        0: conv 3x3"):
        number = next(i for i, line in enumerate(lines, 1) if line.startswith(start))
        shown = hover(analysis, number, lines[number - 1].index("conv") + 1)
        assert shown is not None and "**conv**" in shown, (start, shown)
    # The first fc brings a flatten on its line: the hover shows the statement's own layer.
    text = "network probe {\n    input 3x8x8\n    head {\n        avgpool\n        0: fc 3\n    }\n}\n"
    analysis = analyze(text, Path("probe.res").resolve())
    shown = hover(analysis, 5, text.splitlines()[4].index("fc") + 1)
    assert shown is not None and shown.startswith("**fc**") and "flatten" not in shown, shown
