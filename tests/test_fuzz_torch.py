"""Generated valid specs: the IR's figures agree with the built torch module's.

Uses the grammar-aware generator of tests/test_fuzz.py. For every example, the
module's parameter count, its output shape and the multiply-accumulates that
torch's FlopCounterMode measures on a real forward pass (it counts 2 FLOPs per
MAC of convolutions and matrix products) equal what the compiler computed.
"""

from __future__ import annotations

import os

import torch
from hypothesis import given, settings
from test_fuzz import compile_or_spec_error, valid_spec
from torch.utils.flop_counter import FlopCounterMode

from resdsl.backends.torch import build
from resdsl.ir import Network

AGREE = settings(
    max_examples=int(os.environ.get("RESDSL_FUZZ_TORCH_EXAMPLES", "40")),
    deadline=None,
    derandomize=os.environ.get("RESDSL_FUZZ_EXPLORE") != "1",
)


@AGREE
@given(valid_spec())
def test_ir_figures_match_the_built_module(spec) -> None:
    network = compile_or_spec_error(spec.text, network=spec.name)
    assert isinstance(network, Network), f"{network}\n\n{spec.text}"
    model = build(network).eval()
    assert sum(p.numel() for p in model.parameters()) == network.num_params
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        out = model(torch.randn(1, *network.input_shape))
    assert tuple(out.shape[1:]) == network.output_shape
    assert counter.get_total_flops() == 2 * network.macs, spec.text
