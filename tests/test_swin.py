"""Swin's pieces (window attention, shifted windows, patch merging, the grid of tokens),
each against timm's own modules and against independent computations; the whole
network is in tests/test_reference_models.py."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from timm.models.swin_transformer import PatchMerging, SwinTransformerBlock

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build
from resdsl.layers import Attention, Tokens, shape_text
from tests.oracle import randomise, relative_error

TOLERANCE = 1e-12


def _probe(statements: str, input_shape: str = "8x14x14") -> resdsl.Network:
    body = "\n        ".join(statements.split("; "))
    text = f"network probe {{\n    input {input_shape}\n    stem {{\n        {body}\n    }}\n}}\n"
    return resdsl.compile_text(text, path="probe.res")


def _run(network: resdsl.Network, state: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model = build(network, initialise=False).double().eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        return model(x), interpret.run(network, model.state_dict(), x)


# The grid of tokens -----------------------------------------------------------------------


def test_a_grid_is_a_token_sequence_that_knows_its_height_and_width() -> None:
    grid = Tokens((12, 5), (3, 4))
    assert grid == Tokens((12, 5)) == (12, 5)
    assert grid.grid == (3, 4)
    assert shape_text(grid) == "12 x 5 tokens (3x4)"
    for copied in (pickle.loads(pickle.dumps(grid)), copy.deepcopy(grid)):
        assert type(copied) is Tokens and copied.grid == (3, 4) and copied == grid
    # Rebuilt from its items alone (dataclasses.asdict does this), it is a sequence without a grid.
    assert Tokens(iter((12, 5))).grid is None


def test_per_token_kinds_keep_the_grid_and_token_moving_kinds_end_it() -> None:
    network = _probe("tokens; ln; fc 6; gelu; let x; fc 6; let y; add x, y; take [0, 1]")
    shapes = {node.kind: node.shape for node in network.nodes()}
    for kind in ("tokens", "ln", "gelu", "fc", "add"):
        assert isinstance(shapes[kind], Tokens) and shapes[kind].grid == (14, 14), kind
    assert shapes["take"].grid is None
    for statements in ("tokens; token 1", "tokens; transpose"):
        last = list(_probe(statements).nodes())[-2]
        assert isinstance(last.shape, Tokens) and last.shape.grid is None, statements


# Window attention -------------------------------------------------------------------------


def _timm_block(dim: int, heads: int, grid: tuple[int, int], window: int, shift: int) -> SwinTransformerBlock:
    return SwinTransformerBlock(dim, grid, num_heads=heads, window_size=window, shift_size=shift)


@pytest.mark.parametrize(
    ("grid", "window", "shift"),
    [
        ((14, 14), 7, 3),  # Swin's first stage, four windows
        ((14, 14), 7, 0),
        ((11, 9), 4, 2),  # padded to 12x12 after the shift, as timm pads
        ((5, 13), 7, 3),  # timm's rule: a 5-high window, no shift along the height
        ((7, 7), 7, 3),  # one window: no shift at all
    ],
)
def test_window_attention_equals_timms_block_attention(grid: tuple[int, int], window: int, shift: int) -> None:
    dim, heads = 8, 2
    reference = randomise(_timm_block(dim, heads, grid, window, shift)).double().eval()
    network = _probe(
        f"tokens; attn: attention heads={heads}, window={window}, shift={shift}", f"{dim}x{grid[0]}x{grid[1]}"
    )
    (node,) = network.nodes("attention")
    assert node.params == sum(p.numel() for p in reference.attn.parameters())
    state = {f"attn.{key}": value for key, value in reference.attn.state_dict().items()}
    x = torch.randn(3, dim, *grid, dtype=torch.float64)
    with torch.no_grad():
        expected = reference._attn(x.permute(0, 2, 3, 1)).reshape(3, -1, dim)
    got, interpreted = _run(network, state, x)
    assert relative_error(got, expected) < TOLERANCE
    assert relative_error(interpreted, expected) < TOLERANCE


def test_the_shift_and_its_mask_change_the_output() -> None:
    x = torch.randn(2, 8, 14, 14, dtype=torch.float64)
    plain = _probe("tokens; attn: attention heads=2, window=7")
    shifted = _probe("tokens; attn: attention heads=2, window=7, shift=3")
    state = randomise(build(plain)).double().state_dict()
    assert relative_error(_run(plain, state, x)[0], _run(shifted, state, x)[0]) > 1e-3
    # Without the mask, tokens that the cyclic shift brings together would attend to each other:
    # timm's block with its mask removed differs from the spec's.
    reference = randomise(_timm_block(8, 2, (14, 14), 7, 3)).double().eval()
    state = {f"attn.{key}": value for key, value in reference.attn.state_dict().items()}
    got, _ = _run(shifted, state, x)
    reference.attn_mask = None
    with torch.no_grad():
        unmasked = reference._attn(x.permute(0, 2, 3, 1)).reshape(2, -1, 8)
    assert relative_error(got, unmasked) > 1e-3


def test_window_attention_costs_count_the_padded_windows() -> None:
    # 11x9 tokens padded to 12x12: nine 4x4 windows of 16 tokens; qkv and proj run on all 144.
    network = _probe("tokens; attn: attention heads=2, window=4, shift=2", "8x11x9")
    (node,) = network.nodes("attention")
    windows, area, dim = 9, 16, 8
    linear = windows * area * (dim * 3 * dim + dim * dim)
    products = windows * 2 * area * area * dim
    assert node.macs == linear + products
    assert node.params == dim * 3 * dim + 3 * dim + dim * dim + dim + 7 * 7 * 2
    assert Attention(heads=2, window=(4, 4), shift=(2, 2)).figure_label() == "attention, 2 heads, window 4, shift 2"


def test_a_loaded_model_computes_its_window_constants() -> None:
    # The index and mask are not in any checkpoint: a model built without initialisation and
    # loaded must still have them (buffers allocated on the meta device would be garbage).
    network = _probe("tokens; attn: attention heads=2, window=7, shift=3")
    state = randomise(build(network)).double().state_dict()
    parts = ("qkv.weight", "qkv.bias", "proj.weight", "proj.bias")
    assert set(state) == {"attn.relative_position_bias_table", *(f"attn.{part}" for part in parts)}
    x = torch.randn(2, 8, 14, 14, dtype=torch.float64)
    got, interpreted = _run(network, state, x)
    assert relative_error(got, interpreted) < TOLERANCE


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        ("tokens; token 1; attention heads=2, window=7", "needs a grid of tokens"),
        ("tokens; attention heads=2, shift=3", "shift= needs window="),
        ("tokens; attention heads=2, window=7, shift=7", "must be less than its window"),
        ("tokens; transpose; merge_patches 2x2", "merge_patches needs a grid of tokens"),
        ("merge_patches 2x2", "needs a grid of tokens"),
    ],
)
def test_window_and_merge_mistakes_are_spec_errors(statements: str, message: str) -> None:
    with pytest.raises(resdsl.SpecError, match=message) as caught:
        _probe(statements)
    assert caught.value.line >= 4 and caught.value.hint


# Patch merging ----------------------------------------------------------------------------


@pytest.mark.parametrize("grid", [(14, 14), (7, 5)])  # odd sizes are zero-padded, as timm pads them
def test_patch_merging_equals_timms(grid: tuple[int, int]) -> None:
    dim = 6
    reference = randomise(PatchMerging(dim)).double().eval()
    network = _probe(
        "tokens; merge_patches 2x2; d.norm: ln eps=1e-5; d.reduction: fc 12, bias=false", f"{dim}x{grid[0]}x{grid[1]}"
    )
    merged = next(network.nodes("merge_patches")).shape
    assert merged.grid == (-(-grid[0] // 2), -(-grid[1] // 2)) and merged[-1] == 4 * dim
    state = {f"d.{key}": value for key, value in reference.state_dict().items()}
    x = torch.randn(2, dim, *grid, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x.permute(0, 2, 3, 1)).reshape(2, -1, 2 * dim)
    got, interpreted = _run(network, state, x)
    assert relative_error(got, expected) < TOLERANCE
    assert relative_error(interpreted, expected) < TOLERANCE


def test_merge_patches_concatenates_in_the_papers_order() -> None:
    # The Swin paper's code: x0 = x[0::2, 0::2], x1 = x[1::2, 0::2], x2 = x[0::2, 1::2], x3 = x[1::2, 1::2].
    network = _probe("tokens; merge_patches 2x2", "1x2x2")
    x = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]], dtype=torch.float64)  # rows (10, 20) and (30, 40)
    model = build(network).double()
    expected = torch.tensor([[[10.0, 30.0, 20.0, 40.0]]], dtype=torch.float64)
    assert torch.equal(model(x), expected)
    assert torch.equal(interpret.run(network, model.state_dict(), x), expected)
