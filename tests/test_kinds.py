"""Conformance of every layer kind (resdsl/layers.py): each registered kind, through
its own example statement, against what torch builds for it.

For each kind: the IR's shape rule against the built module's real output; the IR's
parameter count against the module's parameters and its MACs against torch's
FlopCounterMode; a label for figures; a positioned diagnostic for a bad argument;
and its functional reference against the module (via the interpreter).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the conformance test builds every kind in torch")

import torch
from torch.utils.flop_counter import FlopCounterMode

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build
from resdsl.layers import LAYER_KINDS
from tests.oracle import randomise, relative_error


def network_for(kind: str):
    example = LAYER_KINDS[kind].example
    flat = kind == "fc"
    text = f"""
network probe {{
    input 4x11x11
    stem {{
        conv 3x3, 8
        {"flatten" if flat else ""}
        target: {example}
    }}
}}
"""
    return resdsl.compile_text(text, path=f"{kind}.res")


def test_every_kind_has_an_example_and_usage() -> None:
    for name, kind in LAYER_KINDS.items():
        assert kind.example.split()[0] == name, name
        assert kind.usage, name


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_kind_conforms(kind: str) -> None:
    network = network_for(kind)
    (attrs,) = [node for node in network.nodes() if node.label == "target"]
    layer = attrs.layer
    assert layer.kind == kind
    assert isinstance(layer.figure_label(), str) and layer.figure_label()
    model = randomise(build(network)).double().eval()
    x = torch.randn(3, *network.input_shape, dtype=torch.float64)
    module = dict(model.named_modules()).get("target")
    seen: dict[str, torch.Tensor] = {}
    if module is not None:
        module.register_forward_hook(lambda _m, _i, out: seen.__setitem__("out", out))
        assert attrs.params == sum(p.numel() for p in module.parameters())
        source = network.node(attrs.inputs[0]).shape
        with FlopCounterMode(display=False) as counter:
            module(torch.randn(1, *source, dtype=torch.float64))
        assert attrs.macs == counter.get_total_flops() // 2
    else:
        assert attrs.params == attrs.macs == 0
    with torch.no_grad():
        out = model(x)
        expected = interpret.run(network, model.state_dict(), x)
    assert relative_error(out, expected) < 1e-12
    if module is not None:
        assert tuple(seen["out"].shape[1:]) == attrs.shape
    assert tuple(out.shape[1:]) == attrs.shape


@pytest.mark.parametrize("kind", sorted(LAYER_KINDS))
def test_kind_reports_a_bad_argument_at_its_line(kind: str) -> None:
    text = (
        f"network probe {{\n    input 4x11x11\n    stem {{\n        conv 3x3, 8\n        {kind} bogus=1\n    }}\n}}\n"
    )
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    error = caught.value
    assert error.line == 5 and error.path == "bad.res"
    assert "bogus" in error.message or "needs" in error.message, error.message
