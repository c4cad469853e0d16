"""Behaviours that 17 of 40 unseen planted bugs slipped past (issue 29), each pinned where users meet it.

Every test here was seen failing with its bug planted by hand and passing without it
(the commit that added it says how each was planted). The tests go through public
behaviour: ``resdsl.compile_text``, ``resdsl.load``, the reference interpreter, the
IR's ``Graph`` methods that passes call, the language server's analysis and line map,
and the trainer, so that a redesign of the internals keeps them. Expected values come
from an independent computation (``torch.nn.functional``, Python's own arithmetic, the
layer's documented formula), never from resdsl itself.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the layers are checked against torch")

import torch
import torch.nn.functional as F

import resdsl
from resdsl import cli, interpret
from resdsl.errors import SpecError
from resdsl.ir import Graph
from resdsl.layers import Add, Input, Output, ReLU
from resdsl.lsp import analysis
from resdsl.lsp.positions import LineMap
from tests.oracle import randomise


def _stem(body: str, input: str = "8x8x8") -> str:
    return f"network n {{\n    input {input}\n    stem {{\n        {body}\n    }}\n}}\n"


def _compile_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(text, path="n.res")
    return caught.value


def _double(network: resdsl.Network, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return randomise(resdsl.load(network)).double().eval()


def _input(shape: tuple[int, ...], batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- the IR's graph -------------------------------------------------------------------------


def test_erasing_a_node_that_reads_one_value_twice_leaves_a_graph_that_lints() -> None:
    graph = Graph()
    x = graph.create(Input((3, 4, 4)))
    twice = graph.create(Add(), (x.id, x.id))
    out = graph.create(Output(), (x.id,))
    graph.lint()
    graph.erase(twice.id)
    graph.lint()
    assert graph.users(x.id) == (out.id,)
    assert graph.execution_order() == [x.id, out.id]


def test_the_execution_order_follows_a_change_of_inputs() -> None:
    graph = Graph()
    x = graph.create(Input((3, 4, 4)))
    a = graph.create(ReLU(), (x.id,))
    b = graph.create(ReLU(), (x.id,))
    assert graph.execution_order() == [x.id, a.id, b.id]  # computed, and cached
    graph.set_inputs(a.id, (b.id,))  # a now reads b: b must run first
    assert graph.execution_order() == [x.id, b.id, a.id]
    graph.replace_input(a.id, b.id, x.id)
    graph.set_inputs(b.id, (a.id,))
    assert graph.execution_order() == [x.id, a.id, b.id]
    graph.lint()


# -- limits and structure -----------------------------------------------------------------------


def test_the_kernel_size_limit_is_inclusive(tmp_path: Path, capsys) -> None:
    """docs/language.md ("Limits"): kernel, stride, padding and dilation up to 2^31-1 build."""
    at_limit = tmp_path / "at.res"
    at_limit.write_text(_stem("maxpool 1x1, stride=2147483647", input="2x8x8"))
    past = tmp_path / "past.res"
    past.write_text(_stem("maxpool 1x1, stride=2147483648", input="2x8x8"))
    assert cli.main(["build", str(at_limit), "-o", str(tmp_path / "at.py")]) == 0, capsys.readouterr().err
    assert resdsl.compile(at_limit).output_shape == (2, 1, 1)
    capsys.readouterr()
    assert cli.main(["build", str(past), "-o", str(tmp_path / "past.py")]) == 1
    assert "past what torch's kernels take (2,147,483,647)" in capsys.readouterr().err


def test_stage_block_counts_of_a_net_whose_blocks_hold_blocks() -> None:
    """timm's ecaresnet50d: bottlenecks holding an ECA block, 3, 4, 6 and 3 of them (He et al., Table 1)."""
    network = resdsl.compile("timm/ecaresnet50d")
    expected = [("layer1", 3), ("layer2", 4), ("layer3", 6), ("layer4", 3)]
    assert [(stage.name, stage.blocks) for stage in network.stages if stage.blocks] == expected
    assert any(block.parent is not None for block in network.blocks), "the spec's blocks no longer nest blocks"
    stage_blocks = network.stage_blocks()
    assert [(name, sum(block.stage == name for block in stage_blocks)) for name, _ in expected] == expected
    assert [block.block_index for block in stage_blocks] == list(range(16))


# -- layers: shapes and arguments ---------------------------------------------------------------


def test_conv_groups_that_do_not_divide_the_output_channels_is_a_positioned_error_at_check(
    tmp_path: Path, capsys
) -> None:
    path = tmp_path / "n.res"
    path.write_text(_stem("conv 3x3, 6, groups=4"))  # 8 input channels divide by 4; 6 outputs do not
    assert cli.main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:4:9: "), err
    assert "groups=4" in err and "6" in err
    assert "\n    conv 3x3, 6, groups=4\n    ^~~~" in err  # the source line and a caret under it


def test_a_pools_padding_is_checked_against_each_axis_own_kernel() -> None:
    network = resdsl.compile_text(_stem("maxpool 1x3, stride=1, padding=0x1", input="2x5x7"))
    x = _input((2, 5, 7))
    expected = F.max_pool2d(x, (1, 3), stride=1, padding=(0, 1))
    assert network.output_shape == tuple(expected.shape[1:])
    torch.testing.assert_close(_double(network)(x), expected, rtol=0, atol=0)
    # Past half the kernel on the axis that is past it: the error names the padding.
    error = _compile_error(_stem("maxpool 3x1, stride=1, padding=0x1", input="2x5x7"))
    assert "padding" in error.message


@pytest.mark.parametrize(
    ("groups", "cardinality", "channels", "ok"), [(2, 3, 8, False), (2, 3, 12, True), (4, 2, 12, False)]
)
def test_a_group_softmax_needs_channels_divisible_by_groups_times_cardinality(
    groups: int, cardinality: int, channels: int, ok: bool
) -> None:
    text = _stem(f"softmax groups={groups}, cardinality={cardinality}", input=f"{channels}x2x2")
    if ok:
        assert resdsl.compile_text(text).output_shape == (channels, 2, 2)
    else:
        error = _compile_error(text)
        assert f"divisible by {groups * cardinality}" in error.message
        assert (error.line, error.column) == (4, 9)


@pytest.mark.parametrize("cardinality", [1, 3])
def test_a_group_softmax_of_one_group_is_a_softmax_over_each_cardinal_groups_channels(cardinality: int) -> None:
    body = "softmax" if cardinality == 1 else f"softmax cardinality={cardinality}"
    network = resdsl.compile_text(_stem(body, input="12x3x2"))
    x = _input((12, 3, 2))
    # The documented formula: K cardinal groups of C / K channels, a softmax over each's channels.
    expected = torch.softmax(x.view(2, cardinality, 12 // cardinality, 3, 2), dim=2).view(2, 12, 3, 2)
    model = _double(network)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(interpret.run(network, model.state_dict(), x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("low", "high"), [(1, 1), (2, 1), (0, -0.5)])
def test_hardtanh_needs_min_below_max(low: float, high: float) -> None:
    error = _compile_error(_stem(f"hardtanh {low}, {high}"))
    assert "MIN < MAX" in error.message and error.line == 4
    assert resdsl.compile_text(_stem("hardtanh -1, 1")).output_shape == (8, 8, 8)


def test_group_norms_eps_reaches_the_module() -> None:
    network = resdsl.compile_text(_stem("gn 4, eps=0.125"))
    (norm,) = [module for module in resdsl.load(network).modules() if isinstance(module, torch.nn.GroupNorm)]
    assert (norm.num_groups, norm.eps) == (4, 0.125)
    model = _double(network)
    x = _input((8, 8, 8))
    expected = F.group_norm(x, 4, model.state_dict()[f"{_only_key(model, 'weight')}"],
                            model.state_dict()[_only_key(model, "bias")], eps=0.125)  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def _only_key(model: torch.nn.Module, suffix: str) -> str:
    (key,) = [key for key in model.state_dict() if key.endswith(f".{suffix}")]
    return key


# -- the language's arithmetic ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "words", "at", "fine", "value"),
    [
        ("[4, 5, 6][3]", "index 3 is out of range", "3]", "[4, 5, 6][2]", [4, 5, 6][2]),
        ("[4, 5, 6][-4]", "index -4 is out of range", "-4]", "[4, 5, 6][0]", [4, 5, 6][0]),  # no negative indexes
        ("log2(0)", "log2 needs a positive number", "0)", "int(log2(8))", int(math.log2(8))),
        ("log2(-8)", "log2 needs a positive number", "-8)", "int(log2(1)) + 1", int(math.log2(1)) + 1),
    ],
)
def test_an_index_past_a_list_and_log2_of_zero_are_spec_errors(
    expression: str, words: str, at: str, fine: str, value: int
) -> None:
    network = "network n(c={}) {{\n    input 3x8x8\n    stem {{ conv 3x3, 4 }}\n    head {{ fc c }}\n}}\n"
    text = network.format(expression)
    error = _compile_error(text)
    assert words in error.message
    assert (error.line, error.column) == (1, text.rindex(at) + 1)  # at the index or the argument
    assert str(error).startswith("n.res:1:")
    # Within range the same forms give what Python's own arithmetic gives.
    assert resdsl.compile_text(network.format(fine)).output_shape == (value,)


# -- the language server -------------------------------------------------------------------------


def test_lsp_positions_clamp_at_crlf_line_ends() -> None:
    text = "ab\r\ncd\r\n"
    lines = LineMap(text)
    assert lines.offset_at(0, 2) == 2  # the end of "ab": before the CR
    assert lines.offset_at(0, 3) == 2 and lines.offset_at(0, 99) == 2  # past it: still before the CR
    assert lines.offset_at(1, 0) == 4 and lines.offset_at(1, 99) == 6
    assert lines.client_position(3) == (0, 2)  # between CR and LF: the line's end
    assert lines.client_position(4) == (1, 0)
    assert lines.end() == (2, 0)
    # Non-ASCII text takes the other path through the same rule.
    wide = LineMap("é\r\nx")
    assert wide.offset_at(0, 5) == 1 and wide.client_position(2) == (0, 1)


SPEC = """block b(width) {
    conv 3x3, width
    relu
}

network n {
    input 3x8x8
    stage s: 1 x b(4)
}
"""


def test_hover_and_definition_with_the_cursor_just_after_a_word(tmp_path: Path) -> None:
    path = tmp_path / "n.res"
    path.write_text(SPEC)
    result = analysis.analyze(SPEC, path)
    line = SPEC.splitlines().index("    stage s: 1 x b(4)") + 1
    start = SPEC.splitlines()[line - 1].index(" b(") + 2  # 1-based column of 'b'
    for column in (start, start + 1):  # on the word, and just after it (before the '(')
        site = analysis.definition(result, line, column)
        assert site is not None and (site.line, site.column) == (1, 7), column
        shown = analysis.hover(result, line, column)
        assert shown is not None and "b" in shown, column
    assert analysis.definition(result, line, start - 2) is None  # on the x of "1 x": not a definition


# -- inference and training -----------------------------------------------------------------------


def test_the_onnxruntime_engine_on_a_non_square_input() -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    torch.manual_seed(0)
    reference = randomise(resdsl.load("cifar20", input="3x16x24")).eval()
    model = resdsl.load("cifar20", input="3x16x24", weights=reference.state_dict(), for_inference=True,
                        engine="onnxruntime")  # fmt: skip
    for shape in ((16, 24), (24, 16)):  # the spec's size, then the other way round (another session)
        x = torch.randn(2, 3, *shape)
        with torch.no_grad():
            want = reference(x)
            torch.testing.assert_close(model(x), want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


RECIPE = """\
dataset: cifar10
batch_size: 32
pad: 1
iterations: 12
milestones: [6]
lr: 0.1
weight_decay: 0.0005
eval_every: 6
checkpoint_every: 0
log_every_seconds: 0
eval_batch_size: 64
device: cpu
"""

#: tiny.res (tests/cifar_fixtures.py) with dropout and a drop path: both draw from torch's global generator.
DROPPING = """
block dropping_block(width) {
    conv 3x3, width
    bn
    relu
    conv 3x3, width
    bn
    drop_path 0.5
    add shortcut
    relu
}

network dropping(classes=4) {
    input 3x8x8
    stem {
        conv 3x3, 8
        bn
        relu
    }
    stage s: 2 x dropping_block(8)
    head {
        avgpool
        dropout 0.5
        fc classes
    }
}
"""


def _train(workspace: Path, out: str, recipe_text: str, spec: str = "tiny.res", resume: bool = False) -> Path:
    from resdsl.train.loop import Processes, RunOptions, Trainer
    from resdsl.train.recipes import parse_recipe

    options = RunOptions(spec=spec, data="data", recipe=parse_recipe(recipe_text, "r.yaml"), out=workspace / out,
                         resume=resume)  # fmt: skip
    assert Trainer(options, Processes()).run() == 0
    return workspace / out


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_an_evaluation_on_a_milestone_records_the_lr_of_the_last_step_taken(train_workspace: Path) -> None:
    rows = _metrics(_train(train_workspace, "run", RECIPE))
    # Steps 0-5 ran at 0.1; the milestone at 6 lowers the lr for steps 6-11 (docs/training.md).
    assert [(int(row["iteration"]), float(row["lr"])) for row in rows] == [(6, 0.1), (12, pytest.approx(0.01))]


def test_a_resume_restores_torchs_global_generator(train_workspace: Path) -> None:
    (train_workspace / "dropping.res").write_text(DROPPING)
    recipe = RECIPE.replace("milestones: [6]", "milestones: [9]").replace("eval_every: 6", "eval_every: 0")
    straight = _train(train_workspace, "straight", recipe, "dropping.res")
    _train(train_workspace, "first", recipe.replace("iterations: 12", "iterations: 6"), "dropping.res")
    shutil.copytree(train_workspace / "first", train_workspace / "resumed")  # the first run may hold its lock
    torch.rand(1000)  # whatever ran between the runs, as another process would start elsewhere
    resumed = _train(train_workspace, "resumed", recipe, "dropping.res", resume=True)
    want = torch.load(straight / "checkpoint.pt", weights_only=True)["model"]
    got = torch.load(resumed / "checkpoint.pt", weights_only=True)["model"]
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key  # bit-identical
