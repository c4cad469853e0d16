"""Conformance of every layer kind (resdsl/layers.py): each registered kind, through
its own example statement, against what torch builds for it.

For each kind: the IR's shape rule against the built module's real output; the IR's
parameter count against the module's parameters and its MACs against torch's
FlopCounterMode; a label for figures; a positioned diagnostic for a bad argument;
and its functional reference against the module (via the interpreter).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest

pytest.importorskip("torch", reason="the conformance test builds every kind in torch")

import torch
from torch.utils.flop_counter import FlopCounterMode

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build
from resdsl.layers import JOINS, LAYER_KINDS, NODE_KINDS, Layer
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
    # The trait the naming pass reads agrees with what the backend builds.
    assert (module is not None) == layer.builds_module
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


def test_every_kind_declares_its_traits_consistently() -> None:
    for name, kind in NODE_KINDS.items():
        assert kind.figure in ("box", "marker", "join", "fold"), name
        assert kind.figure_fill in ("width", "fc", "pool"), name
        if kind.is_join:
            assert kind.arity is None and not kind.builds_module and kind.figure == "join", name
            assert kind.forward_expression is not Layer.forward_expression, name
            assert JOINS[name] is kind
        assert (kind.fixed_name is not None) == kind.graph_end, name


@pytest.fixture
def maximum_join():
    """A join defined as one class, the way docs/ir.md says a new join is added; taken
    out of the registries afterwards."""

    @dataclass(frozen=True)
    class Maximum(Layer):
        """The elementwise maximum of values of one shape."""

        kind: ClassVar[str] = "maximum"
        arity: ClassVar[int | None] = None
        is_join: ClassVar[bool] = True
        builds_module: ClassVar[bool] = False
        figure: ClassVar[str] = "join"

        def output_shape(self, inputs):
            assert all(shape == inputs[0] for shape in inputs)
            return inputs[0]

        def reference(self, inputs, tensors, training):
            result = inputs[0]
            for other in inputs[1:]:
                result = torch.where(other > result, other, result)
            return result

        def forward_expression(self, names):
            expression = names[0]
            for name in names[1:]:
                expression = f"torch.maximum({expression}, {name})"
            return expression

        def figure_label(self):
            return "max"

    yield Maximum
    del NODE_KINDS["maximum"], JOINS["maximum"]


def test_a_new_join_is_its_class_alone(maximum_join) -> None:
    # Parsing, expansion, naming, the generated forward, figures and the editors' words
    # all take the join from its class: nothing else was written for it.
    from resdsl import vocabulary
    from resdsl.backends import draw

    text = """
block b(w) {
    conv 3x3, w
    bn
    maximum { conv 1x1, w; bn }
    relu
    add shortcut
}
network t { input 4x8x8; stem { conv 3x3, 8 }; stage s: 2 x b(8) }
"""
    network = resdsl.compile_text(text)
    (first, second) = network.nodes("maximum")
    assert (first.name, second.name) == ("s.0.maximum1", "s.1.maximum1")
    assert len(first.inputs) == 2 and first.params == 0
    model = randomise(build(network)).double()
    assert "torch.maximum(" in type(model.s[0])._resdsl_source
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for training in (False, True):
        model.train(training)
        with torch.no_grad():
            expected = interpret.run(network, model.state_dict(), x, training=training)
            assert relative_error(model(x), expected) < 1e-12
    assert 'label="max"' in draw.to_dot([network]).source
    assert "maximum" in vocabulary.joins()
