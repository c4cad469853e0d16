"""Rules that 13 planted bugs once slipped past (issue 21), each pinned where it lives.

Every test here was seen failing with its bug planted and passing without it; the
bugs themselves are kept as mutants in tests/mutation/mutants.py, so the mutation
run (``python -m tests.mutation.run``) keeps checking that these tests still notice.

The tests go through public behaviour only (``resdsl.compile_text``, ``resdsl.load``,
the reference interpreter, ``Table``, ``fmt.format_text``, the expression
evaluator), so that a redesign of the IR keeps them: shape rules against
``torch.nn.functional``'s real output on the edge cases; dataflow rules (in place,
BN folding, name reuse) on networks whose values have several readers, against the
interpreter in float64; naming by the keys; the evaluator against Python's own
operators.
"""

from __future__ import annotations

import itertools
import operator
import signal
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the shape and dataflow rules are checked against torch")

import torch
import torch.nn.functional as F

import resdsl
from resdsl import fmt, syntax
from resdsl.evaluate import INT_MAX, INT_MIN, evaluate
from resdsl.parser import parse
from tests.oracle import compare_with_oracle, randomise, shape_mismatches

TOLERANCE = 1e-9


def _network(stem: str, size: int = 9, channels: int = 3, head: str = "") -> resdsl.Network:
    text = f"network n {{\n    input {channels}x{size}x{size}\n    stem {{ {stem} }}\n"
    if head:
        text += f"    head {{ {head} }}\n"
    return resdsl.compile_text(text + "}\n", path="n.res")


def _input(network: resdsl.Network, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *network.input_shape, generator=generator, dtype=torch.float64)


def _built(network: resdsl.Network) -> torch.nn.Module:
    return randomise(resdsl.load(network)).double().eval()


# -- layers.py: shape rules against torch.nn.functional ------------------------------


@pytest.mark.parametrize(("kernel", "dilation"), [(3, 2), (5, 2), (3, 3), (5, 3), (7, 2), (1, 4), (3, 1)])
def test_a_dilated_convs_default_padding_is_dilation_times_half_the_kernel(kernel: int, dilation: int) -> None:
    network = _network(f"c: conv {kernel}x{kernel}, 4, dilation={dilation}", size=11)
    # "same" for odd kernels: the output keeps the input's size.
    assert network.output_shape == (4, 11, 11)
    model = _built(network)
    x = _input(network)
    expected = F.conv2d(x, model.state_dict()["c.weight"], padding=dilation * (kernel // 2), dilation=dilation)
    with torch.no_grad():
        assert torch.equal(model(x), expected)


@pytest.mark.parametrize("kernel", [2, 4, 3, 5])
@pytest.mark.parametrize("size", [7, 8])
def test_a_maxpools_default_padding_is_half_the_kernel_rounded_down(kernel: int, size: int) -> None:
    network = _network(f"maxpool {kernel}x{kernel}, stride=2", size=size)
    expected = F.max_pool2d(_input(network), kernel, stride=2, padding=kernel // 2)
    assert network.output_shape == tuple(expected.shape[1:])
    with torch.no_grad():
        assert torch.equal(_built(network)(_input(network)), expected)


def _torch_pool_shape(pool, size: int, kernel: int, stride: int, padding: int) -> tuple[int, ...] | None:
    try:
        return tuple(pool(torch.zeros(1, 1, size, size), kernel, stride, padding, ceil_mode=True).shape[1:])
    except RuntimeError:  # torch refuses: an output of size zero
        return None


@pytest.mark.parametrize("pool", ["maxpool", "avgpool"])
def test_ceil_mode_output_sizes_are_pytorchs_at_every_edge(pool: str) -> None:
    functional = F.max_pool2d if pool == "maxpool" else F.avg_pool2d
    checked = edge = 0
    for size, kernel, stride in itertools.product(range(1, 12), range(1, 5), range(1, 4)):
        for padding in range(kernel // 2 + 1):
            expected = _torch_pool_shape(functional, size, kernel, stride, padding)
            text = f"{pool} {kernel}x{kernel}, stride={stride}, padding={padding}, ceil_mode=true"
            if expected is None:
                with pytest.raises(resdsl.SpecError):
                    _network(text, size=size, channels=1)
                continue
            assert _network(text, size=size, channels=1).output_shape == expected, (text, size)
            checked += 1
            span = size + 2 * padding - kernel
            # The windows PyTorch drops: the last one would start in the right padding.
            edge += -(-span // stride) * stride >= size + padding
    assert checked > 200 and edge > 10, (checked, edge)


@pytest.mark.parametrize("size", [5, 7, 9, 11, 8])
@pytest.mark.parametrize("option", ["A", "B", "C"])
def test_every_shortcut_option_on_odd_sizes_has_torchs_shapes_and_values(size: int, option: str) -> None:
    text = f"""
network n {{
    input 3x{size}x{size}
    shortcut {option}
    stem {{ conv 3x3, 4; bn; relu }}
    stage s1: 1 x basic(4)
    stage s2: 2 x basic(8, stride=2)
    stage s3: 1 x basic(16, stride=2)
    head {{ flatten; fc 3 }}
}}
"""
    network = resdsl.compile_text(text, path="odd.res")
    half = -(-size // 2)
    assert network.output_shape == (3,)
    rows = {row.module: row.output_shape for row in resdsl.Table.of(network, detail="layer").rows}
    assert rows["s2.0.conv2"] == (8, half, half) and rows["s3.0.conv2"] == (16, -(-half // 2), -(-half // 2))
    assert not shape_mismatches(network)
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-8, errors


# -- backends/torch.py: dataflow rules on values with several readers ----------------------

# The BN's output is read by the branch's ReLU and by the join: the ReLU may not run in place.
RELU_ON_A_SHARED_VALUE = """
block b(w) {
    conv 3x3, w
    bn
    add {
        relu
        conv 1x1, w
    }
    add shortcut
}
network n {
    input 3x8x8
    stem {
        conv 3x3, 4
        bn
        add {
            relu
            conv 1x1, 4
        }
    }
    stage s: 2 x b(4)
    head { avgpool; fc 3 }
}
"""

# The conv's output is read by the branch's BN and by the join: that BN may not fold into it.
# In `c`, the shortcut taps the conv's output, which the main path's BN also reads.
BN_AFTER_A_SHARED_CONV = """
block f(w) {
    conv 3x3, w
    add {
        bn
        relu
    }
    add shortcut
}
block c(w, stride=1) {
    conv 3x3, w, stride=stride
    tap shortcut
    bn
    relu
    conv 3x3, w
    bn
    add shortcut
}
network n {
    input 3x9x9
    shortcut C
    stem {
        conv 3x3, 4
        mul {
            bn
            sigmoid
        }
    }
    stage s: 2 x f(4)
    stage t: 2 x c(8, stride=2)
    head { avgpool; fc 3 }
}
"""

# The branch's identity is the conv's output under a second name; when the branch's
# conv reads it for the last time, the conv's output is still live (the join reads it).
ALIAS_OF_A_LIVE_VALUE = """
block a(w) {
    conv 3x3, w
    mul {
        identity
        conv 1x1, w
        sigmoid
    }
    add shortcut
}
network n {
    input 3x8x8
    stem {
        conv 3x3, 4
        add {
            identity
            conv 1x1, 4
        }
    }
    stage s: 2 x a(4)
    head { avgpool; fc 3 }
}
"""


@pytest.mark.parametrize(
    "text",
    [RELU_ON_A_SHARED_VALUE, BN_AFTER_A_SHARED_CONV, ALIAS_OF_A_LIVE_VALUE],
    ids=["in-place-on-a-shared-value", "bn-after-a-shared-conv", "alias-of-a-live-value"],
)
def test_values_with_several_readers_match_the_interpreter(text: str) -> None:
    network = resdsl.compile_text(text, path="shared.res")
    errors = compare_with_oracle(network)
    assert errors["eval"] < TOLERANCE and errors["train"] < TOLERANCE, errors
    assert errors["for_inference"] < 1e-8, errors


def test_a_value_with_two_readers_survives_training_steps() -> None:
    # In train mode with autograd on, an in-place ReLU on the shared BN output would also break backward.
    network = resdsl.compile_text(RELU_ON_A_SHARED_VALUE)
    model = randomise(resdsl.load(network)).double().train()
    x = _input(network)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    from resdsl import interpret

    got = model(x)
    got.sum().backward()
    expected = interpret.run(network, state, x, training=True)
    assert float((got.detach() - expected).abs().max()) < 1e-9


# -- passes/naming.py ---------------------------------------------------------------------

NAMING = """
block inner(w) {
    relu
}
block b(w) {
    first: conv 3x3, w
    bn
    conv 3x3, w
    extra: bn
    bn
    add shortcut
}
network n {
    input 3x8x8
    stem {
        head_conv: conv 3x3, 4
        bn
        conv 3x3, 4
    }
    stage s: 1 x b(4)
    head { avgpool; out: fc 3; fc 3 }
}
"""


def test_unlabelled_layers_after_labelled_ones_count_them() -> None:
    # LANGUAGE.md, "Naming": labelled layers count toward the numbers of their kind.
    keys = {key.rpartition(".")[0] for key in resdsl.load(resdsl.compile_text(NAMING)).state_dict()}
    assert keys == {"head_conv", "bn1", "conv2", "s.0.first", "s.0.bn1", "s.0.conv2", "s.0.extra", "s.0.bn3",
                    "out", "fc2"}  # fmt: skip


# -- evaluate.py --------------------------------------------------------------------------

HUGE = 2**53 + 1  # past the last integer a float holds exactly

OPERANDS = [0, 1, -1, 7, -7, 2, -2, 3, -3, HUGE, -HUGE, 3 * HUGE, -(3 * HUGE), 2**62, -(2**62), 6.5, -6.5, 0.5]

OPERATORS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "//": operator.floordiv,
    "%": operator.mod,
    "/": operator.truediv,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _expression(text: str) -> syntax.Expr:
    (block,) = parse(f"block probe(v={text}) {{\n    relu\n}}\n").definitions
    (param,) = block.params
    return param.default


@pytest.mark.parametrize("op", list(OPERATORS))
def test_every_operator_agrees_with_python_on_negative_zero_and_huge_operands(op: str) -> None:
    expr = _expression(f"a {op} b")
    checked = 0
    for a, b in itertools.product(OPERANDS, repeat=2):
        try:
            expected = OPERATORS[op](a, b)
        except ZeroDivisionError:
            with pytest.raises(resdsl.SpecError, match="division by zero"):
                evaluate(expr, {"a": a, "b": b})
            continue
        except OverflowError:  # an int too large for a float: out of range for the spec too
            with pytest.raises(resdsl.SpecError):
                evaluate(expr, {"a": a, "b": b})
            continue
        if isinstance(expected, int) and not isinstance(expected, bool) and not INT_MIN <= expected <= INT_MAX:
            with pytest.raises(resdsl.SpecError):
                evaluate(expr, {"a": a, "b": b})
            continue
        got = evaluate(expr, {"a": a, "b": b})
        assert got == expected and type(got) is type(expected), (a, op, b, got, expected)
        checked += 1
    assert checked > 200


def test_floor_division_of_literals_past_two_to_the_53() -> None:
    assert evaluate(_expression(f"{HUGE} // 1"), {}) == HUGE
    assert evaluate(_expression(f"-{HUGE} // 2"), {}) == -HUGE // 2
    assert evaluate(_expression("-7 // 2"), {}) == -4
    assert evaluate(_expression("3 <= 3 and not 3 < 3 and 3 >= 3 and not 3 > 3"), {}) is True


@pytest.mark.parametrize("statement", ["dropout 1", "drop_path 1", "dropout 1.0", "drop_path 2 / 2", "dropout -0.1"])
def test_a_probability_of_one_is_refused(statement: str) -> None:
    with pytest.raises(resdsl.SpecError, match="from 0 up to"):
        _network(f"conv 3x3, 4; {statement}")


def test_a_probability_just_below_one_is_accepted() -> None:
    assert _network("conv 3x3, 4; dropout 0.999; drop_path 0.999").output_shape == (4, 9, 9)


# -- fmt.py -------------------------------------------------------------------------------


def test_fmt_spaces_every_binary_operator() -> None:
    text = (
        "block b(w, s=1) {\n"
        "    conv 3x3, w*2+-1, stride=s\n"
        "    dropout (w//2)%3/7\n"
        "    if w>=2 and s<=1 or w==3 and s!=2 or w<1 or s>4 {\n"
        "        relu\n"
        "    }\n"
        "}\n"
    )
    assert fmt.format_text(text) == (
        "block b(w, s=1) {\n"
        "    conv 3x3, w * 2 + -1, stride=s\n"
        "    dropout (w // 2) % 3 / 7\n"
        "    if w >= 2 and s <= 1 or w == 3 and s != 2 or w < 1 or s > 4 {\n"
        "        relu\n"
        "    }\n"
        "}\n"
    )


# -- train/loop.py ------------------------------------------------------------------------


# ResNet-110's warm-up (the cifar10-paper recipe's comment): lr 0.01 until the training
# error falls below 80%, judged every 50 iterations, at most `warmup` iterations.
WARM_RECIPE = """\
dataset: cifar10
batch_size: 32
pad: 1
eval_batch_size: 64
device: cpu
iterations: 160
milestones: [1000]
eval_every: 40
warmup: 500
warmup_lr: 0.01
warmup_until_error: 80
"""


def test_resume_after_an_error_triggered_warmup_ended_is_bit_identical(train_workspace: Path, monkeypatch) -> None:
    from resdsl.train.loop import Processes, RunOptions, Trainer
    from resdsl.train.recipes import parse_recipe

    def trainer(out: str, resume: bool = False) -> Trainer:
        recipe = parse_recipe(WARM_RECIPE, "r.yaml")
        return Trainer(RunOptions(spec="tiny.res", data="data", recipe=recipe, out=train_workspace / out,
                                  resume=resume), Processes())  # fmt: skip

    whole = trainer("whole")
    assert whole.run() == 0
    ended = [line for line in whole.log_lines if line.startswith("warm-up ends at iteration")]
    assert ended, whole.log_lines
    end = int(ended[0].split()[4].rstrip(":"))
    assert end < 130, "the warm-up must end before the interruption for the resume to cross it"

    stop_at = 130
    original = Trainer._stop_requested

    def stop_once(self: Trainer, done: int) -> bool:
        return done == stop_at or original(self, done)

    monkeypatch.setattr(Trainer, "_stop_requested", stop_once)
    interrupted = trainer("split")
    assert interrupted.run() == 128 + signal.SIGTERM
    interrupted.release_folder()  # as the command line does when a run ends; the resume takes the folder next
    monkeypatch.setattr(Trainer, "_stop_requested", original)
    resumed = trainer("split", resume=True)
    assert resumed.run() == 0
    assert resumed.schedule.at(stop_at) == whole.schedule.at(stop_at) == 0.1

    final = torch.load(train_workspace / "split" / "checkpoint.pt", weights_only=True)
    expected = torch.load(train_workspace / "whole" / "checkpoint.pt", weights_only=True)
    assert final["iteration"] == expected["iteration"] == 160
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), name
    assert final["scheduler"] == expected["scheduler"] == {"warmup_end": end}


# -- Rules that mutants of the curated list (tests/mutation/mutants.py) found untested ----


def test_macs_of_a_non_square_input_count_height_and_width() -> None:
    text = "network n {\n    input 3x9x14\n    stem { c: conv 3x3, 4, stride=2; d: conv 1x1, 6, bias=true }\n}\n"
    network = resdsl.compile_text(text)
    with torch.no_grad():
        model = _built(network)
        middle = model.c(_input(network))
    height, width = middle.shape[2:]
    assert (height, width) == (5, 7)
    assert network.macs == 4 * 3 * 9 * height * width + 6 * 4 * height * width
    assert network.num_params == sum(p.numel() for p in model.parameters()) == 4 * 3 * 9 + 6 * 4 + 6


def test_a_branch_that_is_neither_the_shape_nor_a_gate_is_refused() -> None:
    # mul takes a branch of the same shape or C x 1 x 1; 8 x 4 x 4 against 8 x 8 x 8 broadcasts in neither way.
    with pytest.raises(resdsl.SpecError, match="cannot multiply 8x8x8 by 8x4x4"):
        _network("conv 3x3, 8; mul { avgpool 2x2, stride=2 }", size=8)
    assert _network("conv 3x3, 8; mul { avgpool; sigmoid }", size=8).output_shape == (8, 8, 8)


def test_a_width_that_reaches_zero_is_refused_on_a_non_square_input() -> None:
    text = "network n {\n    input 3x16x2\n    stem { conv 3x3, 4, padding=0 }\n}\n"
    with pytest.raises(resdsl.SpecError, match="reaches zero"):
        resdsl.compile_text(text)


def _state_with_grad(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the state for the interpreter, its parameters (not BN's buffers) requiring grad."""
    parameters = dict(model.named_parameters())
    return {k: v.detach().clone().requires_grad_(k in parameters) for k, v in model.state_dict().items()}


# Outputs that autograd keeps (sigmoid's, ReLU's): an in-place op after them would break backward.
SAVED_OUTPUTS = """
block g(w) {
    conv 3x3, w
    sigmoid
    relu
    conv 3x3, w
    tanh
    add {
        conv 1x1, w
    }
    add shortcut
}
network n {
    input 3x8x8
    stem { conv 3x3, 4; sigmoid; add { conv 1x1, 4 } }
    stage s: 2 x g(4)
    head { avgpool; fc 3 }
}
"""


def test_in_place_ops_after_outputs_autograd_keeps_give_the_interpreters_gradients() -> None:
    from resdsl import interpret

    network = resdsl.compile_text(SAVED_OUTPUTS)
    model = randomise(resdsl.load(network)).double().train()
    x = _input(network)
    state = _state_with_grad(model)
    model(x).square().sum().backward()
    interpret.run(network, state, x, training=True).square().sum().backward()
    for name, parameter in model.named_parameters():
        expected = state[name].grad
        assert expected is not None and parameter.grad is not None, name
        assert float((parameter.grad - expected).abs().max()) <= 1e-9 * float(expected.abs().max()) + 1e-12, name


def test_and_or_short_circuit() -> None:
    # `block_count > 1 and x / (block_count - 1) > 0`: the right side is not evaluated when the left decides.
    assert evaluate(_expression("false and 1 // 0 > 0"), {}) is False
    assert evaluate(_expression("true or 1 // 0 > 0"), {}) is True
    with pytest.raises(resdsl.SpecError, match="division by zero"):
        evaluate(_expression("true and 1 // 0 > 0"), {})


def test_functions_agree_with_python() -> None:
    for value in (-2.5, 2.5, -0.5, 0.5, -7.0, 7, -7, float(HUGE), -1e18):
        assert evaluate(_expression("int(v)"), {"v": value}) == int(value), value
        assert evaluate(_expression("abs(v)"), {"v": value}) == abs(value), value
    assert evaluate(_expression("min(3, -4, 2)"), {}) == -4 and evaluate(_expression("max(3, -4, 2)"), {}) == 3
    assert evaluate(_expression("log2(8)"), {}) == 3.0


def test_the_integer_range_is_64_bits_exactly() -> None:
    assert evaluate(_expression("9223372036854775807"), {}) == INT_MAX == 2**63 - 1
    assert evaluate(_expression("-9223372036854775807 - 1"), {}) == INT_MIN == -(2**63)
    for text in ("9223372036854775807 + 1", "-9223372036854775807 - 2", "4611686018427387904 * 2"):
        with pytest.raises(resdsl.SpecError):
            evaluate(_expression(text), {})


def test_sizes_compare_with_equal_and_not_equal() -> None:
    for a, b in [((3, 3), (3, 3)), ((3, 3), (1, 1)), ((3, 1), (3, 3))]:
        assert evaluate(_expression("a == b"), {"a": a, "b": b}) is (a == b)
        assert evaluate(_expression("a != b"), {"a": a, "b": b}) is (a != b)
    with pytest.raises(resdsl.SpecError, match="only be compared with == and !="):
        evaluate(_expression("a < b"), {"a": (3, 3), "b": (1, 1)})


def _keys(text: str) -> set[str]:
    return {key.rpartition(".")[0] for key in resdsl.load(resdsl.compile_text(text)).state_dict()}


def test_option_c_projects_every_shortcut() -> None:
    # The paper's option C: projections on every shortcut, where shapes match too.
    text = """
network n {{
    input 3x8x8
    shortcut {option}
    stem {{ conv 3x3, 4 }}
    stage s: 2 x basic(4)
    stage t: 1 x basic(8, stride=2)
}}
"""
    c, b = _keys(text.format(option="C")), _keys(text.format(option="B"))
    projections = {"s.0.downsample.0", "s.0.downsample.1", "s.1.downsample.0", "s.1.downsample.1"}
    assert projections <= c and not projections & b
    assert "t.0.downsample.0" in c and "t.0.downsample.0" in b


def test_option_a_downsamples_without_new_channels() -> None:
    # Option A on a block that halves the size and keeps the width: a zero-pad that adds no channels.
    text = """
network n {
    input 3x9x9
    shortcut A
    stem { conv 3x3, 4 }
    stage s: 1 x basic(4, stride=2)
    head { flatten; fc 3 }
}
"""
    network = resdsl.compile_text(text)
    assert not shape_mismatches(network)
    errors = compare_with_oracle(network)
    assert max(errors.values()) < 1e-9, errors


def test_unlabelled_blocks_inside_blocks_are_numbered_from_one() -> None:
    text = """
block inner(w) {
    conv 1x1, w
}
block b(w) {
    inner(w)
    inner(w)
    add shortcut
}
network n {
    input 3x8x8
    stem { conv 3x3, 4 }
    stage s: 1 x b(4)
}
"""
    assert _keys(text) == {"conv1", "s.0.inner1.conv1", "s.0.inner2.conv1"}


def test_the_warmup_is_judged_on_each_window_of_50_iterations_alone() -> None:
    # Each judgement reads the training error of its own window: 100% wrong, then 40% wrong,
    # ends a warm-up whose threshold is 50% at the second window (over both it would be 70%).
    from types import SimpleNamespace

    from resdsl.train.loop import Processes, Schedule, Trainer

    lines: list[str] = []
    trainer = SimpleNamespace(
        window={"warm_wrong": torch.zeros((), dtype=torch.float64), "warm_images": 0},
        processes=Processes(),
        schedule=Schedule(0.1, 1000, "step", [], 0.1, warmup=500, warmup_lr=0.01),
        log=lines.append,
    )
    for done, wrong in ((50, 50), (100, 20)):
        trainer.window["warm_wrong"] += wrong
        trainer.window["warm_images"] += 50
        Trainer._judge_warmup(trainer, done, 50.0)
    assert trainer.schedule.warmup_end == 100, lines
    assert lines == ["warm-up ends at iteration 100: training error 40.0% < 50%"]


# Grouped and biased convs, a BN after the flatten (a BatchNorm1d), a padded average pool
# that leaves the padding out of its divisor: each against torch's own count or function.
COUNTED = """
network n {
    input 3x9x11
    stem {
        conv 3x3, 8, bias=true
        conv 3x3, 8, groups=4
        conv 1x1, 16, groups=2, bias=true
        gn 4
    }
    head {
        flatten
        bn
        fc 5
        fc 4, bias=false
    }
}
"""


def test_params_are_torchs_own_count_for_grouped_and_biased_layers() -> None:
    network = resdsl.compile_text(COUNTED)
    model = resdsl.load(network)
    assert network.num_params == sum(p.numel() for p in model.parameters())
    rows = {row.module: row.params for row in resdsl.Table.of(network, detail="layer").rows}
    for name, module in model.named_modules():
        if name in rows:
            assert rows[name] == sum(p.numel() for p in module.parameters()), name


def test_a_bn_after_the_flatten_matches_the_interpreter() -> None:
    errors = compare_with_oracle(resdsl.compile_text(COUNTED))
    assert errors["eval"] < TOLERANCE and errors["train"] < TOLERANCE, errors


def test_gn_groups_must_divide_the_channels() -> None:
    with pytest.raises(resdsl.SpecError, match="gn 3 needs channels divisible by 3, but there are 8"):
        _network("conv 3x3, 8; gn 3")


@pytest.mark.parametrize("include", [False, True])
def test_a_padded_average_pool_counts_the_padding_as_asked(include: bool) -> None:
    flag = "true" if include else "false"
    network = _network(f"avgpool 3x3, stride=2, padding=1, count_include_pad={flag}", size=9)
    x = _input(network)
    expected = F.avg_pool2d(x, 3, 2, 1, count_include_pad=include)
    with torch.no_grad():
        assert torch.equal(_built(network)(x), expected)


# Each block's first ReLU reads the block's input, which nothing else reads (the projection
# reads the tap). Activation checkpointing runs a block again in backward from its saved
# input, so a forward that overwrote its input would recompute from the wrong values.
RELU_ON_A_FUNCTIONS_INPUT = """
block p(w, stride=1) {
    relu
    tap shortcut
    conv 3x3, w, stride=stride
    bn
    add shortcut
}
network n {
    input 3x8x8
    checkpoint MODE
    stem { relu; conv 3x3, 4; bn }
    stage s: 1 x p(8, stride=2)
    stage t: 1 x p(16, stride=2)
    head { avgpool; fc 3 }
}
"""


@pytest.mark.parametrize("mode", ["none", "block", "stage"])
def test_a_forward_never_overwrites_its_input(mode: str) -> None:
    from resdsl import interpret

    network = resdsl.compile_text(RELU_ON_A_FUNCTIONS_INPUT.replace("MODE", mode))
    model = randomise(resdsl.load(network)).double().train()
    x = _input(network)
    before = x.clone()
    state = _state_with_grad(model)
    got = model(x)
    got.square().sum().backward()
    assert torch.equal(x, before), "the forward wrote into the caller's tensor"
    expected = interpret.run(network, state, x, training=True)
    expected.square().sum().backward()
    assert float((got - expected).detach().abs().max()) < 1e-9
    for name, parameter in model.named_parameters():
        grad = state[name].grad
        assert float((parameter.grad - grad).abs().max()) <= 1e-9 * float(grad.abs().max()) + 1e-12, name
