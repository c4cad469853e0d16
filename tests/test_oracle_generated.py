"""Generated networks through the built module and the reference interpreter.

Each case is a random spec (seeded, so failures reproduce) drawn from every round-2
construct: side branches joined by mul, add and cat; tap shortcut; if/else; blocks
used inside blocks; written projections; norm and act settings; every shortcut
option; and every layer kind that keeps the shape. Eval and train mode, and
for_inference against eval, all in float64 with randomised weights and BN statistics.

The generator also reaches, on its own, the shapes where code generation and folding
make their dataflow decisions (issue 21): values with several readers (a branch and
the main path reading one conv's output; a BN after a conv that a side branch or the
shortcut also reads; a branch's identity aliasing a value the join still reads), odd
spatial sizes under every shortcut option, dilated convolutions, even kernels (a
2x2 conv that grows the size and a 2x2 pool without padding that shrinks it back)
and ceil-mode pools, in blocks and in the stem.
"""

from __future__ import annotations

import itertools
import random

import pytest

pytest.importorskip("torch", reason="compares torch modules with the interpreter")

import resdsl
from tests.oracle import compare_with_oracle, shape_mismatches

SHAPE_KEEPING = ["bn", "gn 2", "ln", "relu", "sigmoid", "tanh", "silu", "gelu", "hardsigmoid", "hardswish",
                 "leaky_relu 0.2", "identity", "drop_path 0.0", "dropout 0.0"]  # fmt: skip

PRELUDE = """
block gate(channels) {
    mul {
        avgpool
        fc1: conv 1x1, max(channels // 4, 2), bias=true
        relu
        fc2: conv 1x1, channels, bias=true
        sigmoid
    }
}

block eca_gate(channels) {
    mul {
        avgpool
        conv: channel_conv 3
        sigmoid
    }
}

block avg_down(out, stride) {
    if stride > 1 {
        avgpool 2x2, stride=stride, ceil_mode=true, count_include_pad=false
    } else {
        identity
    }
    conv 1x1, out
    bn
}
"""


CONVS = ["conv 3x3, w", "conv 1x1, w", "conv 3x3, w, groups=2", "conv 3x3, w, dilation=2", "conv 5x5, w, dilation=2"]

# Statements that keep the shape while taking the code paths of issue 21: a pair of
# even kernels (2x2 "same" padding grows H by one; a 2x2 pool with no padding shrinks
# it back), ceil-mode pools, and values with several readers right after a conv.
SHAPE_RULES = [
    "conv 2x2, w\nmaxpool 2x2, padding=0",
    "conv 4x4, w\navgpool 2x2, ceil_mode=true",
    "maxpool 3x3, ceil_mode=true",
    "maxpool 2x2\navgpool 2x2, padding=0, count_include_pad=false",
]
SHARED_READERS = [
    # The branch's BN reads the conv's output, which the join reads too: no folding.
    "conv 3x3, w\nadd {\n    bn\n    relu\n}",
    # The branch's ReLU reads the BN's output, which the join reads too: not in place.
    "conv 1x1, w\nbn\nadd {\n    relu\n    conv 1x1, w\n}",
    # The branch's identity aliases the conv's output, which the join still reads.
    "conv 3x3, w\nmul {\n    identity\n    conv 1x1, w\n    sigmoid\n}",
    # A ReLU after a join whose first operand the branch also read.
    "bn\nadd {\n    conv 1x1, w\n}\nrelu",
]


def _statements(rng: random.Random, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.28:
            lines.append(rng.choice(CONVS))
        elif choice < 0.36:
            lines += rng.choice(SHAPE_RULES).splitlines()
        elif choice < 0.48 and depth == 0:
            lines += rng.choice(SHARED_READERS).splitlines()
        elif choice < 0.60:
            lines.append(rng.choice(SHAPE_KEEPING))
        elif choice < 0.70 and depth == 0:
            label = "g" if "g: gate(w)" not in lines else f"g{len(lines)}"  # a label names one scope
            lines.append(rng.choice([f"{label}: gate(w)", "eca_gate(w)"]))
        elif choice < 0.80 and depth == 0:
            lines += ["add {", *("    " + s for s in _statements(rng, depth + 1)), "}"]
        elif choice < 0.87 and depth == 0:
            lines += ["cat {", "    conv 1x1, 4", "}", "conv 1x1, w"]
        elif choice < 0.94 and depth == 0:
            inner = _statements(rng, depth + 1)
            other = _statements(rng, depth + 1)
            lines += [f"if repeat % 2 == {rng.randint(0, 1)} {{", *("    " + s for s in inner), "} else {",
                      *("    " + s for s in other), "}"]  # fmt: skip
        else:
            lines += ["mul {", "    conv 1x1, w", "    sigmoid", "}"]
    return lines


STEMS = [
    "conv 3x3, 8\nbn\nrelu",
    "conv 3x3, 8\nbn\nrelu",
    "conv 3x3, 8, dilation=2\nbn\nrelu\nmaxpool 3x3, stride=2, ceil_mode=true",
    # On an odd size, ceil mode's last window would start in the padding: PyTorch drops it.
    "conv 3x3, 8, dilation=2\nbn\nrelu\nmaxpool 2x2, stride=2, padding=1, ceil_mode=true",
    "conv 2x2, 8\nbn\nrelu\nmaxpool 2x2",
    "conv 4x4, 8, padding=1\nbn\nrelu\navgpool 3x3, stride=2, padding=1, ceil_mode=true",
    "conv 3x3, 8\nadd {\n    bn\n    relu\n}\nrelu",
]


def generated_spec(seed: int) -> str:
    rng = random.Random(seed)
    preact = rng.random() < 0.4
    # The shortcut taps the first conv's output, which the BN after it reads too.
    tapped_conv = not preact and rng.random() < 0.25
    body = []
    if preact:
        body += ["bn", rng.choice(["relu", "silu"]), "tap shortcut"]
    body += ["conv 3x3, w, stride=stride"]
    if tapped_conv:
        body += ["tap shortcut", "bn", "relu"]
    body += _statements(rng)
    residual = preact or tapped_conv or rng.random() < 0.85
    if residual:
        body.append("add shortcut")
    if not preact and rng.random() < 0.5:
        body.append("relu")
    block = "block b(w, stride=1) {\n" + "\n".join("    " + line for line in "\n".join(body).splitlines()) + "\n}\n"
    settings = [f"shortcut {rng.choice(['A', 'B', 'C', 'none'])}"]
    if rng.random() < 0.4:
        settings.append("projection avg_down")
    if rng.random() < 0.3:
        settings.append("norm gn(2)")
    if rng.random() < 0.3:
        settings.append("act silu")
    size = rng.choice([8, 9, 12, 7, 11, 13])
    stem = rng.choice(STEMS)
    stages = [
        f"stage s{i}: {rng.randint(1, 2)} x b({8 * 2**i}{', stride=2' if i else ''})" for i in range(rng.randint(1, 3))
    ]
    network = (
        f"network generated {{\n    input 3x{size}x{size}\n    "
        + "\n    ".join(settings)
        + "\n    stem {\n        "
        + "\n        ".join(stem.splitlines())
        + "\n    }\n    "
        + "\n    ".join(stages)
        + "\n    head {\n        avgpool\n        fc 3\n    }\n}\n"
    )
    return PRELUDE + block + network


@pytest.mark.parametrize("seed", range(30))
def test_generated_network_matches_the_interpreter(seed: int) -> None:
    text = generated_spec(seed)
    network = resdsl.compile_text(text, path=f"generated{seed}.res")
    errors = compare_with_oracle(network, seed=seed)
    assert max(errors.values()) < 1e-8, (errors, text)
    # The interpreter and the module both run real tensors; the IR's shapes must be theirs.
    assert not shape_mismatches(network), (shape_mismatches(network), text)


def test_the_generator_reaches_every_construct() -> None:
    texts = "\n".join(generated_spec(seed) for seed in range(30))
    for construct in ("mul {", "add {", "cat {", "tap shortcut", "if repeat", "g: gate(w)", "eca_gate(w)",
                      "projection avg_down", "norm gn(2)", "act silu", "shortcut A", "shortcut none",
                      "dilation=2", "conv 2x2", "conv 4x4", "maxpool 2x2", "ceil_mode=true",
                      *("\n    ".join(text.splitlines()) for text in SHARED_READERS),
                      "stride=stride\n    tap shortcut\n    bn"):  # fmt: skip
        assert construct in texts, construct


def test_the_generator_downsamples_odd_sizes_under_every_shortcut_option() -> None:
    # Option A's zero-pad and B's and C's projections on an odd input size (ceil(H / 2)).
    reached = set()
    for seed in range(30):
        text = generated_spec(seed)
        option = text.split("    shortcut ", 1)[1].split()[0]
        rows = resdsl.Table.of(resdsl.compile_text(text), detail="block").rows
        for before, row in itertools.pairwise(rows):
            odd = row.level == "block" and len(before.output_shape) == 3 and before.output_shape[1] % 2
            if odd and row.output_shape[1] == (before.output_shape[1] + 1) // 2:
                reached.add(option)
    assert reached >= {"A", "B", "C"}, reached
