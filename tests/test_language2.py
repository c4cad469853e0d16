"""Every example of ../shared/design/LANGUAGE-2.md (round 2's constructs) compiles,
and each block it defines builds a network whose outputs equal the reference
interpreter's.

Read from the shared design document when it sits beside the checkout (as in CI),
else from the copy in tests/fixtures, which a test keeps identical to the shared one.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import resdsl

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "design" / "LANGUAGE-2.md"
VENDORED = ROOT / "tests" / "fixtures" / "LANGUAGE-2.md"


def _document() -> str:
    return (SHARED if SHARED.is_file() else VENDORED).read_text(encoding="utf-8")


def _examples() -> str:
    return "\n".join(re.findall(r"```\n(.*?)```", _document(), flags=re.S))


def test_vendored_copy_is_current() -> None:
    if not SHARED.is_file():
        pytest.skip(
            "no original design document beside this checkout to compare with: "
            "tests/fixtures/LANGUAGE-2.md, in this repository, is the design sketch read here"
        )
    assert VENDORED.read_text(encoding="utf-8") == SHARED.read_text(encoding="utf-8")


def test_resnet50d_example_has_timm_layout(tmp_path: Path) -> None:
    path = tmp_path / "round2.res"
    path.write_text(_examples(), encoding="utf-8")
    network = resdsl.compile(path, network="resnet50d")
    names = {node.name for node in network.nodes()}
    # The deep stem's labels are module paths, and avg_down's convolution sits at
    # downsample.1 after the pool at position 0 (timm's resnet50d keys).
    assert {"conv1.0", "conv1.3", "conv1.6", "bn1", "layer2.0.downsample.1", "layer2.0.downsample.2"} <= names
    assert "layer1.0.downsample.1" in names  # layer1's first block: stride 1, identity at position 0
    assert network.num_params == 25_576_264  # timm's resnet50d


# A tiny network for each block of the sketch, so that each is expanded and run.
TINY = {
    "se_bottleneck": "stage s: 2 x se_bottleneck(8, reduction=4)",
    "preact_bottleneck": "stage s: 2 x preact_bottleneck(8, stride=2)",
    "basic_sd": "stage s: 3 x basic_sd(32, stride=2)",
}


@pytest.mark.parametrize("block", sorted(TINY))
def test_each_sketched_block_runs_like_the_interpreter(tmp_path: Path, block: str) -> None:
    pytest.importorskip("torch", reason="runs the built module")
    from tests.oracle import compare_with_oracle

    text = (
        _examples()
        + f"""
network tiny {{
    input 3x16x16
    shortcut B
    projection conv_proj
    stem {{ conv 3x3, 32 }}
    {TINY[block]}
    head {{ avgpool; fc 3 }}
}}
"""
    )
    path = tmp_path / "tiny.res"
    path.write_text(text, encoding="utf-8")
    network = resdsl.compile(path, network="tiny")
    assert any(b.type == block for b in network.blocks)
    errors = compare_with_oracle(network, train=False)
    assert max(errors.values()) < 1e-9, errors
