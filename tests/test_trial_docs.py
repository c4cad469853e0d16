"""Issue 24's docs-only trial: what docs/language.md shows of tokens and attention
works as it says (the trial's specs are checked in tests/test_reference_models.py)."""

from __future__ import annotations

import re
from pathlib import Path

import timm
import torch

import resdsl
from resdsl import interpret
from resdsl.passes import for_inference
from tests.oracle import randomise, relative_error
from tests.test_reference_models import TOLERANCE, reference_macs

LANGUAGE = Path(__file__).resolve().parent.parent / "docs" / "language.md"


def _written_attention_example() -> str:
    text = LANGUAGE.read_text(encoding="utf-8")
    blocks = [body for body in re.findall(r"```\n(.*?)```", text, re.S) if "block written_vit_block" in body]
    assert len(blocks) == 1
    return blocks[0]


def test_the_written_out_attention_of_the_docs_equals_timms_vit_small() -> None:
    example = _written_attention_example()
    network = resdsl.compile_text(
        example + "\nnetwork small = written_vit_small with input 3x64x96\n", path="example.res", network="small"
    )
    reference = randomise(timm.create_model("vit_small_patch16_224", pretrained=False, img_size=(64, 96)))
    model = resdsl.load(network, weights=reference.state_dict())  # strict: names and shapes
    assert list(model.state_dict()) == list(reference.state_dict())
    assert len(list(network.nodes("matmul"))) == 2 * 12
    assert network.num_params == sum(p.numel() for p in reference.parameters())
    reference, model = reference.double().eval(), model.double().eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x)
        assert relative_error(model(x), expected) < TOLERANCE
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < TOLERANCE
    # As the docs say, for_inference fuses every written-out attention, and counts the same.
    fused = for_inference(network)
    assert len(list(fused.nodes("fused_attention"))) == 12
    assert not list(fused.nodes("matmul"))
    assert fused.macs == network.macs == reference_macs(reference, (3, 64, 96))
