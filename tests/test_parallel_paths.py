"""Folding parallel linear paths for inference (resdsl/passes/parallel_paths.py): RepVGG's,
ACNet's and DBB's summed paths become one convolution from the IR alone, and the
folded model computes what the eval model computes (float64, randomised weights and
BN statistics)."""

from __future__ import annotations

import copy

import pytest

pytest.importorskip("torch", reason="the folded weights are computed and checked in torch")

import timm
import torch
from torch import nn

import resdsl
from resdsl.backends.torch import build, fold_for_inference
from resdsl.passes import apply_rewrite
from resdsl.passes.parallel_paths import ParallelPathFold, find_parallel_folds, fold_parallel_paths
from tests.oracle import randomise, relative_error
from tests.test_reference_models import IMAGENET_INPUT, compile_at

# Every path kind the pass folds, in one block: square, asymmetric and grouped kernels,
# a bias, a BN alone, the identity and a pool; and a block whose paths must not fold.
PATHS = """
block many(width, stride=1) {
    let x
    dense: conv 3x3, width, stride=stride
    dense_bn: bn
    let a
    from x
    point: conv 1x1, width, stride=stride, bias=true
    let b
    from x
    grouped: conv 3x3, width, stride=stride, groups=2
    grouped_bn: bn
    let c
    from x
    wide: conv 1x3, width, stride=stride
    wide_bn: bn
    let e
    from x
    tall: conv 5x1, width, stride=stride
    let f
    if stride == 1 {
        from x
        pool: avgpool 3x3, padding=1
        pool_bn: bn
        let d
        from x
        same: bn
        let g
        add a, b, c, d, e, f, g, x
    } else {
        add a, b, c, e, f
    }
    relu
}

block kept(width) {
    let x
    conv 3x3, width
    relu
    let a
    from x
    conv 1x1, width
    let b
    add a, b
}

network paths(classes=5) {
    input 3x12x10
    stem {
        conv 3x3, 8
    }
    stage s1: 2 x many(8)
    stage s2: 2 x many(16, stride=2)
    stage s3: 1 x kept(16)
    head {
        avgpool
        fc classes
    }
}
"""


def _pair(network: resdsl.Network) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = randomise(build(network)).double().eval()
    x = torch.randn(3, *network.input_shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        return model, x, model(x)


def test_every_path_kind_folds_into_one_convolution() -> None:
    network = resdsl.compile_text(PATHS, path="paths.res")
    folds = find_parallel_folds(network)
    # Each of the four `many` blocks folds; `kept` has a ReLU on one path and does not.
    assert len(folds) == 4
    assert [len(fold.terms) for fold in folds] == [8, 8, 5, 8]
    assert {fold.conv.kernel for fold in folds} == {(5, 3)}
    assert {fold.conv.groups for fold in folds} == {1}
    model, x, expected = _pair(network)
    with torch.no_grad():
        folded = fold_for_inference(model, network)
        got = folded(x)
    assert relative_error(got, expected) < 1e-12
    convs = [name for name, module in folded.named_modules() if isinstance(module, nn.Conv2d)]
    # The stem, one per `many` block (named as its largest convolution), and `kept`'s two.
    assert convs == ["conv1", "s1.0.dense", "s1.1.dense", "s2.0.dense", "s2.1.dense", "s3.0.conv1", "s3.0.conv2"]
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]


LINTED = ("shape", "name", "params", "macs")


def test_the_rewritten_ir_passes_lint_and_counts_the_folded_convolutions() -> None:
    network = resdsl.compile_text(PATHS, path="paths.res")
    folded = apply_rewrite(network, fold_parallel_paths)
    folded.lint(LINTED)
    network.lint(LINTED)  # the original is left as it was
    records = [record for record in folded.rewrites if isinstance(record, ParallelPathFold)]
    assert len(records) == 4
    assert all(
        folded.graph.node(node).kind == "conv"
        for node in folded.graph
        if folded.graph.node(node).name in {r.conv for r in records}
    )
    assert folded.num_params == sum(node.params for node in folded.graph.walk())
    assert folded.num_params != network.num_params
    # The stages are recomputed, not patched: they sum to the folded totals.
    assert sum(stage.params for stage in folded.stages) == folded.num_params
    assert sum(stage.macs for stage in folded.stages) == folded.macs


def test_a_residual_join_of_linear_paths_folds_too() -> None:
    # conv-BN plus the identity shortcut, and conv-BN plus a projection (option B's
    # 1x1 conv and BN at stride 2): each `add shortcut` is a sum of paths from the block input.
    text = """
block linear(width, stride=1) {
    conv 3x3, width, stride=stride
    bn
    add shortcut
    relu
}
network n {
    input 4x8x8
    shortcut B
    stage s1: 2 x linear(4)
    stage s2: 2 x linear(8, stride=2)
}
"""
    network = resdsl.compile_text(text, path="n.res")
    folds = find_parallel_folds(network)
    assert [len(fold.terms) for fold in folds] == [2, 2, 2, 2]
    folded = apply_rewrite(network, fold_parallel_paths)
    folded.lint(LINTED)
    assert all(block.join is None for block in folded.blocks)
    model, x, expected = _pair(network)
    with torch.no_grad():
        result = fold_for_inference(model, network)
        assert relative_error(result(x), expected) < 1e-12
    assert [type(m).__name__ for m in result.modules() if isinstance(m, nn.Conv2d | nn.BatchNorm2d)] == ["Conv2d"] * 4


def test_grouped_paths_keep_their_groups() -> None:
    text = """
block grouped(width) {
    let x
    conv 3x3, width, groups=4
    bn
    let a
    from x
    conv 1x1, width, groups=2
    bn
    let b
    add a, b
}
network g {
    input 8x6x6
    stage s: 2 x grouped(8)
}
"""
    network = resdsl.compile_text(text, path="g.res")
    assert [fold.conv.groups for fold in find_parallel_folds(network)] == [2, 2]
    model, x, expected = _pair(network)
    with torch.no_grad():
        assert relative_error(fold_for_inference(model, network)(x), expected) < 1e-12


@pytest.mark.parametrize(
    ("second", "why"),
    [
        ("conv 1x1, width\n    relu", "a ReLU on a path"),
        ("conv 3x3, width, dilation=2", "a dilated convolution"),
        ("conv 1x1, width\n    gn 2", "a norm other than BN"),
        ("conv 1x1, width\n    bn\n    bn", "two BNs in a row"),
    ],
)
def test_paths_that_are_not_one_convolution_stay(second: str, why: str) -> None:
    text = f"""
block two(width) {{
    let x
    conv 3x3, width
    bn
    let a
    from x
    {second}
    let b
    add a, b
}}
network n {{
    input 4x6x6
    stage s: 2 x two(4)
}}
"""
    network = resdsl.compile_text(text, path="n.res")
    assert find_parallel_folds(network) == [], why
    model, x, expected = _pair(network)
    with torch.no_grad():
        assert relative_error(fold_for_inference(model, network)(x), expected) < 1e-12


def test_a_value_read_outside_the_sum_is_not_folded_away() -> None:
    text = """
block shared(width) {
    let x
    conv 3x3, width
    bn
    let a
    from x
    conv 1x1, width
    bn
    let b
    add a, b
    let total
    add total, a
}
network n {
    input 4x6x6
    stage s: 1 x shared(4)
}
"""
    network = resdsl.compile_text(text, path="n.res")
    assert find_parallel_folds(network) == []  # `a` is read twice: its BN must stay
    model, x, expected = _pair(network)
    with torch.no_grad():
        assert relative_error(fold_for_inference(model, network)(x), expected) < 1e-12


def test_repvgg_a0_folded_equals_its_eval_model() -> None:
    from timm.utils.model import reparameterize_model

    reference = randomise(timm.create_model("repvgg_a0", pretrained=False))
    network = compile_at("timm/repvgg_a0", IMAGENET_INPUT)
    model = resdsl.load(network, weights=reference.state_dict()).double().eval()
    x = torch.randn(2, *IMAGENET_INPUT, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        assert relative_error(expected, reference.double().eval()(x)) < 1e-9
        folded = fold_for_inference(copy.deepcopy(model), network)  # folded in float64
        assert relative_error(folded(x), expected) < 1e-9
    # One 3x3 convolution per block (the stem and 21 blocks) and no BN, as timm's
    # reparameterisation leaves it, with as many parameters.
    convs = [module for module in folded.modules() if isinstance(module, nn.Conv2d)]
    assert len(convs) == 22 and all(conv.kernel_size == (3, 3) and conv.bias is not None for conv in convs)
    assert not [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    timm_folded = reparameterize_model(timm.create_model("repvgg_a0", pretrained=False).eval())
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in timm_folded.parameters())
    # What load(for_inference=True) gives, in float32, on every engine's common start.
    eager = resdsl.load(network, weights=reference.float().state_dict(), for_inference=True, engine="eager")
    with torch.no_grad():
        assert relative_error(eager(x.float()).double(), expected) < 1e-4
