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
