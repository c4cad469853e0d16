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
from tests.oracle import compare_with_oracle, randomise

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


def _real_shapes_match_the_ir(network: resdsl.Network) -> None:
    """Every module's real output shape (forward hooks) is the shape the IR gives its row."""
    model = _built(network)
    rows = {row.module: row.output_shape for row in resdsl.Table.of(network, detail="layer").rows}
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: seen.__setitem__(name, tuple(out.shape[1:])))
        for name, module in model.named_modules()
        if name in rows
    ]
    with torch.no_grad():
        out = model(_input(network))
    for hook in hooks:
        hook.remove()
    assert seen, "no module ran"
    for name, shape in seen.items():
        assert shape == tuple(rows[name]), (name, shape, rows[name])
    assert tuple(out.shape[1:]) == tuple(network.output_shape)


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
    _real_shapes_match_the_ir(network)
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


@pytest.fixture
def train_workspace(tmp_path: Path, monkeypatch):
    from cifar_fixtures import TINY_SPEC, write_learnable

    write_learnable(tmp_path / "data", train=256, test=64)
    (tmp_path / "tiny.res").write_text(TINY_SPEC)
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield tmp_path
    torch.set_num_threads(threads)


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
