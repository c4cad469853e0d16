"""Tokens that remember their grid (`grid` without a size), PVT v2's spatial-reduction
attention (`attention sr_ratio=R`) and MobileViT's patches (`unfold`, `fold`), checked
against timm's own module and code and through the reference interpreter, on grids and
patches that are not square and grids that do not divide by the ratio."""

from __future__ import annotations

import pickle

import pytest

pytest.importorskip("torch", reason="the attention is checked against timm's module")

import torch
from timm.models.pvt_v2 import Attention as TimmAttention

import resdsl
from resdsl import interpret
from resdsl.errors import SpecError
from resdsl.layers import Grid, Tokens
from tests.oracle import randomise, relative_error

KEPT = """
network probe {
    input 3x16x24
    stem {
        conv 4x4, 8, stride=4, padding=0
        made: tokens
        let t
        norm: ln
        wide: fc 12
        act: gelu
        narrow: fc 8
        let y
        add y, t
        swapped: transpose
        back: transpose
        cls_token: token 1
    }
}
"""


def test_tokens_keep_their_grid_until_the_sequence_changes() -> None:
    network = resdsl.compile_text(KEPT, path="kept.res")
    grids = {node.label: node.shape.grid for node in network.nodes() if node.label}
    assert grids["made"] == grids["norm"] == grids["wide"] == grids["act"] == grids["narrow"] == (4, 6)
    assert [node.shape.grid for node in network.nodes("add")] == [(4, 6)]
    # A transpose makes channels of the tokens: what follows no longer lies on the grid.
    assert grids["swapped"] is None and grids["back"] is None and grids["cls_token"] is None


def test_a_grid_takes_no_part_in_equality_and_survives_pickling() -> None:
    shape = Tokens((24, 8), (4, 6))
    assert shape == Tokens((24, 8), (6, 4)) == Tokens((24, 8)) == (24, 8)
    again = pickle.loads(pickle.dumps(shape))
    assert again == shape and again.grid == (4, 6) and isinstance(again, Tokens)


def _grid_spec(grid: str) -> str:
    return f"""
network probe {{
    input 3x20x12
    stem {{
        conv 4x4, 8, stride=4, padding=0
        tokens
        fc 6
        {grid}
        conv 3x3, 6, groups=6
    }}
}}
"""


def test_grid_without_a_size_is_the_grid_the_tokens_came_from() -> None:
    inferred = resdsl.compile_text(_grid_spec("grid"), path="inferred.res")
    written = resdsl.compile_text(_grid_spec("grid 5x3"), path="written.res")
    assert [node.layer for node in inferred.nodes("grid")] == [Grid((5, 3))]
    assert inferred.output_shape == written.output_shape == (6, 5, 3)
    model = randomise(resdsl.load(written)).double().eval()
    same = resdsl.load(inferred, weights=model.state_dict()).double().eval()
    x = torch.randn(2, 3, 20, 12, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(same(x), model(x)) == 0
        assert relative_error(interpret.run(inferred, same.state_dict(), x), model(x)) < 1e-12


def _attention_spec(height: int, width: int, ratio: int, extra: str = "") -> str:
    return f"""
network probe {{
    input 8x{height}x{width}
    stem {{
        tokens
        attn: attention heads=2, sr_ratio={ratio}{extra}
    }}
}}
"""


@pytest.mark.parametrize(("height", "width", "ratio"), [(6, 4, 2), (5, 7, 2), (7, 9, 3), (3, 5, 1)])
def test_spatial_reduction_attention_equals_timms(height: int, width: int, ratio: int) -> None:
    reference = randomise(TimmAttention(8, num_heads=2, sr_ratio=ratio, qkv_bias=True)).double().eval()
    network = resdsl.compile_text(_attention_spec(height, width, ratio), path="sra.res")
    weights = {f"attn.{key}": value for key, value in reference.state_dict().items()}
    model = resdsl.load(network, weights=weights).double().eval()  # strict: timm's keys and shapes
    assert list(model.state_dict()) == list(weights)
    assert network.num_params == sum(p.numel() for p in reference.parameters())
    x = torch.randn(3, 8, height, width, dtype=torch.float64)
    with torch.no_grad():
        expected = reference(x.flatten(2).transpose(1, 2), [height, width])
        assert relative_error(model(x), expected) < 1e-12
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < 1e-12
    # MACs: q, kv on the reduced tokens, the reduction's convolution, Q K^T, A V, proj.
    tokens, keys = height * width, (height // ratio) * (width // ratio)
    reduction = keys * 8 * 8 * ratio * ratio if ratio > 1 else 0
    assert network.macs == tokens * 64 + keys * 128 + reduction + 2 * tokens * keys * 8 + tokens * 64


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_attention_spec(4, 4, 8), "needs a grid of at least 8x8, but the tokens' grid is 4x4"),
        (
            _attention_spec(4, 4, 2).replace("tokens\n", "tokens\n        cls_token: token 1\n"),
            "reduces the tokens' grid, but these 17 x 8 tokens have none",
        ),
        (_grid_spec("transpose\n        transpose\n        grid"), "have no grid"),
    ],
)
def test_a_reduction_or_grid_without_a_grid_is_refused_at_its_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert message in str(caught.value)
    assert caught.value.pos is not None and caught.value.pos.line > 1


# MobileViT's patches -------------------------------------------------------------------


def _timm_unfold(x: torch.Tensor, patch_h: int, patch_w: int) -> torch.Tensor:
    """MobileVitBlock.forward's unfolding (timm/models/mobilevit.py), as B x P x N x C."""
    batch, chans, height, width = x.shape
    rows, columns = height // patch_h, width // patch_w
    x = x.reshape(batch * chans * rows, patch_h, columns, patch_w).transpose(1, 2)
    x = x.reshape(batch, chans, rows * columns, patch_h * patch_w).transpose(1, 3)
    return x  # timm then reshapes to (B P) x N x C: the same values


def _timm_fold(x: torch.Tensor, patch_h: int, patch_w: int, rows: int, columns: int) -> torch.Tensor:
    batch, _, _, chans = x.shape
    x = x.transpose(1, 3).reshape(batch * chans * rows, columns, patch_h, patch_w)
    return x.transpose(1, 2).reshape(batch, chans, rows * patch_h, columns * patch_w)


PATCHES = """
network probe {
    input 3xHxW
    stem {
        conv 3x3, 6
        patches: unfold PHxPW
        norm: ln eps=1e-5
        back: fold PHxPW
    }
}
"""


@pytest.mark.parametrize(("height", "width", "patch_h", "patch_w"), [(4, 6, 2, 2), (6, 4, 2, 1), (6, 6, 3, 2)])
def test_unfold_and_fold_are_mobilevits(height: int, width: int, patch_h: int, patch_w: int) -> None:
    text = PATCHES.replace("HxW", f"{height}x{width}").replace("PHxPW", f"{patch_h}x{patch_w}")
    network = resdsl.compile_text(text, path="patches.res")
    rows, columns = height // patch_h, width // patch_w
    nodes = {node.label: node for node in network.nodes() if node.label}
    assert nodes["patches"].shape == (patch_h * patch_w, rows * columns, 6)
    assert nodes["patches"].shape.grid == nodes["norm"].shape.grid == (rows, columns)
    assert network.output_shape == (6, height, width)
    model = randomise(resdsl.load(network)).double().eval()
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    with torch.no_grad():
        mapped = model.conv1(x)
        patches = _timm_unfold(mapped, patch_h, patch_w)
        normed = torch.nn.functional.layer_norm(patches, (6,), model.norm.weight, model.norm.bias, 1e-5)
        expected = _timm_fold(normed, patch_h, patch_w, rows, columns)
        assert relative_error(model(x), expected) < 1e-12
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < 1e-12


def test_layer_norm_of_patches_normalises_each_token_even_where_the_axes_look_like_a_map() -> None:
    # 4 positions x 4 patches x 4 channels: a 4-d tensor that a map's rule would also accept.
    text = PATCHES.replace("HxW", "4x4").replace("PHxPW", "2x2").replace("conv 3x3, 6", "conv 3x3, 4")
    network = resdsl.compile_text(text, path="square.res")
    model = randomise(resdsl.load(network)).double().eval()
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(interpret.run(network, model.state_dict(), x), model(x)) < 1e-12


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (PATCHES.replace("HxW", "5x4").replace("PHxPW", "2x2"), "divide by the patch, but it is 6x5x4"),
        (
            PATCHES.replace("HxW", "4x4").replace("PHxPW", "2x2").replace("back: fold 2x2", "back: fold 2x1"),
            "needs 2 sequences",
        ),
        (
            PATCHES.replace("HxW", "4x4")
            .replace("PHxPW", "2x2")
            .replace("norm: ln eps=1e-5", "transpose\n        transpose"),
            "needs the patches' grid",
        ),
    ],
)
def test_patches_that_do_not_fit_are_refused_at_their_line(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert message in str(caught.value)
    assert caught.value.pos is not None and caught.value.pos.line > 1
