"""Token sequences and attention: the layout through every consumer, attention written
out against the `attention` kind, and the fusion pass against the unfused graph."""

from __future__ import annotations

import pytest
import torch

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build, export_source
from resdsl.layers import Tokens, layout
from resdsl.passes import apply_rewrite, for_inference
from resdsl.passes.fuse_attention import find_attention, fuse_attention
from tests.oracle import randomise, relative_error

WRITTEN = """
block written_attention(dim, heads) {
    qkv: fc 3 * dim
    split 3
    let p
    from p[0]
    heads heads
    let q
    from p[1]
    heads heads
    transpose
    let kt
    from p[2]
    heads heads
    let v
    matmul q, kt
    scale 1 / sqrt(dim // heads)
    softmax
    let a
    matmul a, v
    merge heads
    proj: fc dim
}

block encoder(dim, heads, written=true) {
    norm1: ln
    if written {
        attn: written_attention(dim, heads)
    } else {
        attn: attention heads=heads
    }
    add shortcut
}

network n(dim=16, written=true) {
    input 3x32x32
    stem {
        patch_embed.proj: conv 8x8, dim, stride=8, padding=0, bias=true
        tokens
        cls_token: token 1
        pos_embed: position
    }
    stage blocks: 2 x encoder(dim, 2, written=written)
    head {
        norm: ln
        take 0
        head: fc 10
    }
}
"""


def _pair(written: bool) -> resdsl.Network:
    return resdsl.compile_text(WRITTEN, path="written.res", written=written)


def test_the_layout_is_known_to_the_ir_the_table_and_the_hover() -> None:
    network = _pair(False)
    attention = next(network.nodes("attention"))
    assert isinstance(attention.shape, Tokens) and attention.shape == (17, 16)
    assert layout(network.node(attention.inputs[0]).shape) == "tokens"
    assert layout(network.output_shape) == "flat"
    table = resdsl.Table.of(network, detail="layer")
    assert "17 x 16 tokens" in str(table)
    assert {row["layout"] for row in table.records()["rows"]} >= {"map", "tokens", "flat"}


def test_written_out_attention_equals_the_attention_kind() -> None:
    written, one_line = _pair(True), _pair(False)
    # The same modules under the same names: one spec's weights are the other's.
    model = randomise(build(one_line)).double().eval()
    state = model.state_dict()
    other = build(written).double().eval()
    other.load_state_dict(state)
    assert written.num_params == one_line.num_params
    assert written.macs == one_line.macs  # QK^T and AV counted alike
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        assert relative_error(other(x), expected) < 1e-12
        assert relative_error(interpret.run(written, state, x), expected) < 1e-12
        assert relative_error(interpret.run(one_line, state, x), expected) < 1e-12


def test_the_fusion_pass_finds_the_pattern_and_equals_the_unfused_graph() -> None:
    network = _pair(True)
    assert len(find_attention(network)) == 2
    fused = apply_rewrite(network, fuse_attention)
    assert not list(fused.nodes("matmul")) and not list(fused.nodes("softmax"))
    assert len(list(fused.nodes("fused_attention"))) == 2
    assert fused.num_params == network.num_params and fused.macs == network.macs
    assert sum(stage.macs for stage in fused.stages) == fused.macs
    assert "scaled_dot_product_attention" in export_source(fused)
    model = randomise(build(network)).double().eval()
    state = model.state_dict()
    fused_model = build(fused).double().eval()
    fused_model.load_state_dict(state)  # the rewrite moves no weight
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x)
        assert relative_error(fused_model(x), expected) < 1e-12
        # The interpreter computes the fused node by the formula, never the fused call.
        assert relative_error(interpret.run(fused, state, x), expected) < 1e-12
        folded = resdsl.load(network, weights=state, for_inference=True, engine="eager").double()
        assert relative_error(folded(x), expected) < 1e-9
    assert list(for_inference(network).nodes("fused_attention"))


def test_scores_read_elsewhere_are_not_fused() -> None:
    # The weights feed a second product: the pattern's inner values are shared, so it stays written.
    text = WRITTEN.replace(
        "    matmul a, v\n    merge heads\n",
        "    matmul a, v\n    let o\n    matmul a, v\n    let o2\n    add o, o2\n    merge heads\n",
    )
    network = resdsl.compile_text(text, path="shared.res", written=True)
    assert find_attention(network) == []
    assert apply_rewrite(network, fuse_attention).graph.number_of_nodes() == network.graph.number_of_nodes()


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("conv 3x3, 8", "needs a C x H x W input, but its input is a token sequence"),
        ("grid 3x3", "grid 3x3 needs 9 tokens"),
        ("take 40", "past the last of 17 tokens"),
        ("bn", "needs a feature map or a vector"),
        ("attention heads=3", "divisible by 3"),
    ],
)
def test_layout_errors_name_the_layout_and_the_way_back(statement: str, message: str) -> None:
    text = f"""
network bad {{
    input 3x32x32
    stem {{
        conv 8x8, 16, stride=8, padding=0
        tokens
        cls_token: token 1
        {statement}
    }}
}}
"""
    with pytest.raises(resdsl.SpecError) as caught:
        resdsl.compile_text(text, path="bad.res")
    assert message in str(caught.value)
    assert caught.value.line == 8


@pytest.mark.parametrize(
    ("name", "size", "kwargs"),
    [
        ("vit_tiny_patch16_224", (64, 64), {"img_size": 64}),
        ("pvt_v2_b0", (64, 96), {}),
        ("mobilevit_xs", (64, 128), {}),
    ],
)
def test_onnx_runtime_engine_takes_any_batch_on_token_networks(name: str, size: tuple, kwargs: dict) -> None:
    # The export is traced at a batch of two: a size read as a Python number in a module's
    # forward became a constant, and ONNX Runtime refused batches of one or three.
    timm = pytest.importorskip("timm")
    reference = timm.create_model(name, pretrained=False, **kwargs).eval()
    model = resdsl.load(
        f"timm/{name}",
        weights=reference.state_dict(),
        input=f"3x{size[0]}x{size[1]}",
        for_inference=True,
        engine="onnxruntime",
    )
    for batch in (1, 3):
        x = torch.randn(batch, 3, *size)
        with torch.no_grad():
            assert relative_error(model(x), reference(x)) < 1e-4
