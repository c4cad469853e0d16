"""Generated networks through the built module and the reference interpreter.

Each case is a random spec (seeded, so failures reproduce) drawn from every round-2
construct: side branches joined by mul, add and cat; tap shortcut; if/else; blocks
used inside blocks; written projections; norm and act settings; every shortcut
option; and every layer kind that keeps the shape. Eval and train mode, and
for_inference against eval, all in float64 with randomised weights and BN statistics.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch", reason="compares torch modules with the interpreter")

import resdsl
from tests.oracle import compare_with_oracle

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


def _statements(rng: random.Random, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.35:
            lines.append(rng.choice(["conv 3x3, w", "conv 1x1, w", "conv 3x3, w, groups=2"]))
        elif choice < 0.65:
            lines.append(rng.choice(SHAPE_KEEPING))
        elif choice < 0.72 and depth == 0:
            lines.append(rng.choice(["g: gate(w)", "eca_gate(w)"]))
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
            lines.append("mul {\n    conv 1x1, w\n    sigmoid\n}")
    return lines


def generated_spec(seed: int) -> str:
    rng = random.Random(seed)
    preact = rng.random() < 0.4
    body = []
    if preact:
        body += ["bn", rng.choice(["relu", "silu"]), "tap shortcut"]
    body += ["conv 3x3, w, stride=stride"]
    body += _statements(rng)
    residual = preact or rng.random() < 0.85
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
    size = rng.choice([8, 9, 12])
    stages = [
        f"stage s{i}: {rng.randint(1, 2)} x b({8 * 2**i}{', stride=2' if i else ''})" for i in range(rng.randint(1, 3))
    ]
    network = (
        f"network generated {{\n    input 3x{size}x{size}\n    "
        + "\n    ".join(settings)
        + "\n    stem {\n        conv 3x3, 8\n        bn\n        relu\n    }\n    "
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


def test_the_generator_reaches_every_construct() -> None:
    texts = "\n".join(generated_spec(seed) for seed in range(30))
    for construct in ("mul {", "add {", "cat {", "tap shortcut", "if repeat", "g: gate(w)", "eca_gate(w)",
                      "projection avg_down", "norm gn(2)", "act silu", "shortcut A", "shortcut none"):  # fmt: skip
        assert construct in texts, construct
