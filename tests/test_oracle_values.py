"""Generated multi-path networks through the built module and the reference interpreter.

Each case is a random spec (seeded, so failures reproduce) over the round-3
constructs: several paths from one named value, joined by add, mul, cat or a
softmax-weighted sum; split into equal groups or by sizes; lists built in a loop
(Res2Net's hierarchy) with interpolated labels; `repeat` in conditions. Eval and
train mode, and for_inference against eval, all in float64 with randomised weights
and BN statistics.
"""

from __future__ import annotations

import random

import pytest

pytest.importorskip("torch", reason="compares torch modules with the interpreter")

import resdsl
from tests.oracle import compare_with_oracle

SHAPE_KEEPING = ["bn", "relu", "silu", "sigmoid", "identity", "conv 3x3, w", "conv 1x1, w", "conv 3x3, w, dilation=2"]


def _path(rng: random.Random) -> list[str]:
    return [rng.choice(SHAPE_KEEPING) for _ in range(rng.randint(1, 3))]


def _join(rng: random.Random, names: list[str]) -> tuple[list[str], str]:
    """Statements that join every named path, and the kind of join."""
    kind = rng.choice(["add", "mul", "cat", "weighted"])
    if kind == "cat":
        return [f"cat {', '.join(names)}", "conv 1x1, w"], kind
    if kind == "weighted":
        return [
            f"add {', '.join(names)}",
            "avgpool",
            f"attn: conv 1x1, {len(names)} * w",
            f"softmax groups={len(names)}",
            f"split {len(names)}",
            "let a",
            f"weighted a, [{', '.join(names)}]",
        ], kind
    return [f"{kind} {', '.join(names)}"], kind


def _hierarchy(rng: random.Random) -> list[str]:
    """Res2Net's loop: split in groups, group i fed its split plus group i - 1's output."""
    if rng.random() < 0.3:
        # By sizes: the wide first group goes straight to the cat; the loop runs over the other two.
        return ["split [w // 2, w // 4, w // 4]", "let s", "for i in 1 .. 3 {",
                "    if i == 1 or repeat == 0 {", "        from s[i]", "    } else {", "        add s[i], o[i - 1]",
                "    }", "    convs.{i}: conv 3x3, w // 4", "    relu", "    let o[i]", "}",
                "cat s[0], o[1], o[2]"]  # fmt: skip
    scale = rng.choice([2, 4])
    return [f"split {scale}", "let s", f"for i in 0 .. {scale - 1} {{",
            "    if i == 0 or repeat == 0 {", "        from s[i]", "    } else {", "        add s[i], o[i - 1]",
            "    }",
            f"    convs.{{i}}: conv 3x3, w // {scale}", "    bns.{i}: bn", "    relu", "    let o[i]", "}",
            f"cat o, s[{scale - 1}]"]  # fmt: skip


def generated_spec(seed: int) -> str:
    rng = random.Random(seed)
    body = ["conv 3x3, w, stride=stride", "bn", "relu", "let x"]
    paths = rng.randint(2, 3)
    names = []
    for index in range(paths):
        if index:
            body.append("from x")
        body += _path(rng)
        body.append(f"let p{index}")
        names.append(f"p{index}")
    join, _ = _join(rng, names)
    body += join
    if rng.random() < 0.6:
        body += _hierarchy(rng)
        body.append("conv 1x1, w")
    if rng.random() < 0.8:
        body.append("add shortcut")
    body.append("relu")
    block = "block b(w, stride=1) {\n" + "\n".join("    " + line for line in body) + "\n}\n"
    stages = "\n    ".join(
        f"stage s{i}: {rng.randint(1, 2)} x b({8 * 2**i}{', stride=2' if i else ''})" for i in range(rng.randint(1, 2))
    )
    size = rng.choice([8, 9])
    network = (
        f"network generated {{\n    input 3x{size}x{size}\n    shortcut {rng.choice(['A', 'B', 'C'])}\n"
        f"    stem {{\n        conv 3x3, 8\n    }}\n    {stages}\n"
        "    head {\n        avgpool\n        fc 3\n    }\n}\n"
    )
    return block + network


@pytest.mark.parametrize("seed", range(24))
def test_generated_multi_path_network_matches_the_interpreter(seed: int) -> None:
    text = generated_spec(seed)
    network = resdsl.compile_text(text, path=f"generated{seed}.res")
    errors = compare_with_oracle(network, seed=seed)
    assert max(errors.values()) < 1e-8, (errors, text)


def test_the_generator_reaches_every_construct() -> None:
    texts = "\n".join(generated_spec(seed) for seed in range(24))
    for construct in ("let x", "from x", "add p0, p1", "mul p0", "cat p0", "weighted a, [p0, p1", "split 2",
                      "split 4", "split [w // 2, w // 4, w // 4]", "for i in", "let o[i]", "o[i - 1]", "convs.{i}",
                      "repeat == 0", "p2"):  # fmt: skip
        assert construct in texts, construct
