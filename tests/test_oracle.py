"""The built module against the reference interpreter (resdsl.interpret): every layer
kind and construct, in eval and train mode, and for_inference against eval, with
randomised weights and BN statistics in float64."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the oracle compares torch modules")

import torch

import resdsl
from resdsl.layers import JOINS, LAYER_KINDS
from tests.oracle import compare_with_oracle

TOLERANCE = 1e-9

# A network that uses every layer kind and construct of the language.
EVERYTHING = """
block se(channels, reduction=4) {
    mul {
        avgpool
        fc1: conv 1x1, max(channels // reduction, 4), bias=true
        relu
        fc2: conv 1x1, channels, bias=true
        sigmoid
    }
}

block eca(channels) {
    mul {
        avgpool
        conv: channel_conv max(int(abs(log2(channels) + 1) / 2) // 2 * 2 + 1, 3)
        hardsigmoid
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

block preact(width, stride=1, drop=0.0) {
    norm1: bn
    relu
    tap shortcut
    conv1: conv 3x3, width, stride=stride
    norm2: gn 2
    leaky_relu 0.1
    conv2: conv 3x3, width
    se: se(width)
    attn: eca(width)
    drop_path drop * block_index / max(block_count - 1, 1)
    add shortcut
}

block post(width, stride=1) {
    conv 3x3, width, stride=stride
    bn
    add {
        conv 1x1, width
        ln
        gelu
    }
    silu
    identity
    add shortcut
    bn
    hardswish
    cat {
        conv 1x1, 4
        tanh
    }
    conv 1x1, width
    bn
    relu
}

block modern(width) {
    conv 3x3, width, bias=true
    bn eps=1e-3, momentum=0.01
    let x
    pool: avgpool 3x3, stride=1, padding=1, count_include_pad=false
    let p
    sub p, x
    maxpool 2x2, stride=2, padding=0
    upsample 2
    maxpool 2x2, stride=2, padding=0
    upsample 2, mode=bilinear
    relu6
    conv 3x3, width, bias=true, standardize=true, gamma=1.7
    gamma: layerscale 0.5
    mul {
        avgpool
        conv 1x1, width, bias=true
        softmax groups=2, cardinality=2
        scale 2
    }
    hardtanh -1, 2
    add shortcut
}

block tokenized(width) {
    tokens
    norm: ln
    attn: attention heads=2
    win: attention heads=2, window=2, shift=1
    sr: attention heads=2, sr_ratio=1
    patches: merge_patches 1x1
    fc width
    grid
    unfold 1x1
    fold 1x1
    bot: attention heads=2, rel_pos=logits
    add shortcut
}

network everything(classes=5) {
    input 3x20x20
    shortcut B
    projection avg_down
    stem {
        conv1.0: conv 3x3, 8, stride=2
        conv1.1: bn
        relu
        maxpool 3x3, stride=2, padding=1, ceil_mode=true
    }
    stage stages.0: 2 x preact(8)
    stage stages.1: 2 x post(16, stride=2)
    stage stages.2: 2 x modern(16)
    let y
    0.scale: scale 0.5
    let half
    sub y, half
    split [6, 10]
    let parts
    cat parts[1], parts[0]
    stage stages.3: 1 x tokenized(16)
    head {
        norm: bn
        relu
        let f
        avgpool
        flatten
        let pooled
        from f
        tokens
        cls: token 1
        pos: position
        let t
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
        transpose
        transpose
        let o
        take [0, 1]
        mean tokens
        let m
        from o
        take 0
        let c
        add c, m, pooled
        dropout 0.0
        head.fc: fc classes
    }
}
"""


def test_every_kind_and_construct_matches_the_reference_interpreter() -> None:
    network = resdsl.compile_text(EVERYTHING, path="everything.res")
    used = {node.kind for node in network.nodes()}
    # The fixture must keep up with the language: every spelled kind and every join appears.
    missing = (set(LAYER_KINDS) | set(JOINS)) - used
    assert not missing, missing
    assert any(node.kind == "conv" and node.layer.standardize for node in network.nodes())
    errors = compare_with_oracle(network)
    assert errors["eval"] < TOLERANCE, errors
    assert errors["train"] < TOLERANCE, errors
    assert errors["for_inference"] < 1e-7, errors
    assert errors["for_inference_ir"] < 1e-7, errors


@pytest.mark.parametrize("spec", ["cifar20", "cifar_plain20", "resnet18", "torchvision/resnet50"])
def test_shipped_specs_match_the_reference_interpreter(spec: str) -> None:
    network = resdsl.compile(spec)
    errors = compare_with_oracle(network, batch=2)
    assert max(errors.values()) < 1e-7, errors


# The two silently wrong results of round 1, each a minimal spec.

BLOCK_STARTING_WITH_RELU = """
block pre(w) {
    relu
    conv 3x3, w
    bn
    add shortcut
}
network n {
    input 3x8x8
    stem { conv 3x3, 4; bn }
    stage s: 2 x pre(4)
    head { avgpool; fc 3 }
}
"""

BN_AFTER_ADD = """
block post(w) {
    conv 3x3, w
    add shortcut
    bn
}
network n {
    input 3x8x8
    stem { conv 3x3, 4 }
    stage s: 2 x post(4)
    head { avgpool; fc 3 }
}
"""


def test_a_relu_that_starts_a_block_leaves_its_shortcut_intact() -> None:
    # Before: the in-place ReLU overwrote the block's input, which the shortcut adds later.
    network = resdsl.compile_text(BLOCK_STARTING_WITH_RELU)
    errors = compare_with_oracle(network)
    assert errors["eval"] < TOLERANCE and errors["train"] < TOLERANCE, errors


def test_for_inference_never_folds_a_bn_across_an_add() -> None:
    # Before: the BN after `add shortcut` was folded into the conv before the add.
    network = resdsl.compile_text(BN_AFTER_ADD)
    errors = compare_with_oracle(network)
    assert errors["for_inference"] < 1e-9, errors
    assert errors["for_inference_ir"] < 1e-9, errors


def test_the_oracle_notices_a_wrong_module() -> None:
    # The comparison must be able to fail: perturb one weight of the built module.
    from resdsl import interpret
    from resdsl.backends.torch import build
    from tests.oracle import randomise, relative_error

    network = resdsl.compile_text(BN_AFTER_ADD)
    model = randomise(build(network)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.s[0].conv1.weight[0, 0, 0, 0] += 0.5
        assert relative_error(model(x), interpret.run(network, state, x)) > 1e-3
