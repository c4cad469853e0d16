"""Attention over a feature map (``attention`` on C x H x W) with BoTNet's relative
position logits, against timm's own BottleneckAttn and an independent computation of
the logits; the standalone export of such a module."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the attention module is checked in torch")

import torch
from timm.layers.bottleneck_attn import BottleneckAttn

import resdsl
from resdsl import interpret
from resdsl.backends.torch import build, export_source
from tests.oracle import randomise, relative_error

TOLERANCE = 1e-12


def _network(height: int, width: int, stride: int = 1) -> resdsl.Network:
    pool = "avgpool 2x2, stride=2" if stride == 2 else ""
    return resdsl.compile_text(
        f"""
network probe {{
    input 16x{height}x{width}
    stem {{
        self_attn: attention heads=2, qkv_bias=false, rel_pos=logits, proj=false
        {pool}
    }}
}}
""",
        path="probe.res",
    )


@pytest.mark.parametrize("stride", [1, 2])
def test_bottleneck_attention_equals_timms_on_a_map_that_is_not_square(stride: int) -> None:
    # 4x6: the height and width tables differ in size (7 and 11 rows), so a swap cannot load or agree.
    reference = randomise(BottleneckAttn(16, feat_size=(4, 6), num_heads=2, stride=stride)).double().eval()
    network = _network(4, 6, stride)
    weights = {f"self_attn.{key}": value for key, value in reference.state_dict().items()}
    model = resdsl.load(network, weights=weights).double().eval()
    assert list(model.state_dict()) == list(weights)
    assert network.num_params == sum(p.numel() for p in reference.parameters()) == 16 * 48 + (7 + 11) * 8
    x = torch.randn(3, 16, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        assert relative_error(model(x), expected) < TOLERANCE
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < TOLERANCE
    assert network.output_shape == tuple(expected.shape[1:])


def test_relative_logits_follow_each_offset() -> None:
    # An independent computation, one (query, key) pair at a time: the logit of query
    # (yq, xq) for key (yk, xk) is q . (height_rel[yk - yq + H - 1] + width_rel[xk - xq + W - 1]).
    network = _network(3, 5)
    module = randomise(build(network)).double().self_attn
    height, width, dim = 3, 5, 8
    q = torch.randn(2, 2, height * width, dim, dtype=torch.float64)
    logits = module._relative_logits(q)
    rows_h, rows_w = module.pos_embed["height_rel"], module.pos_embed["width_rel"]
    for i in range(height * width):
        for j in range(height * width):
            (yq, xq), (yk, xk) = divmod(i, width), divmod(j, width)
            expected = q[:, :, i] @ (rows_h[yk - yq + height - 1] + rows_w[xk - xq + width - 1])
            assert torch.allclose(logits[:, :, i, j], expected, rtol=0, atol=1e-12)


def test_the_logits_change_the_output() -> None:
    # Zero tables give plain attention: the logits are not added where they should count.
    network = _network(4, 6)
    model = randomise(build(network)).double().eval()
    x = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        with_tables = model(x)
        for table in model.self_attn.pos_embed.values():
            table.zero_()
        assert relative_error(model(x), with_tables) > 1e-3
        assert relative_error(interpret.run(network, model.state_dict(), x), model(x)) < TOLERANCE


def test_the_export_of_a_map_attention_runs_standalone() -> None:
    network = _network(4, 6, stride=2)
    source = export_source(network)
    namespace: dict = {}
    exec(compile(source, "<export>", "exec"), namespace)  # our own generated text
    exported = namespace["Model"]().double().eval()
    model = randomise(build(network)).double().eval()
    exported.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 16, 4, 6, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(exported(x), model(x)) < TOLERANCE


def test_a_map_attention_reads_as_a_map_in_the_table() -> None:
    network = _network(4, 6)
    (node,) = network.nodes("attention")
    assert node.shape == (16, 4, 6)
    assert node.macs == 24 * 16 * 48 + 2 * 24 * 24 * 16 + 2 * 24 * 8 * (7 + 11)


def test_coatnet_attention_equals_timms_attention2d_with_its_relative_position_bias() -> None:
    from functools import partial

    from timm.layers.pos_embed_rel import RelPosBias
    from timm.models.maxxvit import Attention2d

    # 16 -> 24 channels through proj, heads of 8 grouped first in qkv, a 4x6 map's bias table (7 x 11 rows).
    reference = Attention2d(16, 24, dim_head=8, expand_first=False, rel_pos_cls=partial(RelPosBias, window_size=(4, 6)))
    reference = randomise(reference).double().eval()
    network = resdsl.compile_text(
        "network probe {\n    input 16x4x6\n    stem {\n"
        "        attn: attention heads=2, out=24, head_first=true, rel_pos=bias\n    }\n}\n",
        path="probe.res",
    )
    weights = {f"attn.{key}": value for key, value in reference.state_dict().items()}
    model = resdsl.load(network, weights=weights).double().eval()
    assert list(model.state_dict()) == list(weights)  # the table before proj, as timm registers it
    assert network.num_params == sum(p.numel() for p in reference.parameters())
    x = torch.randn(3, 16, 4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = reference(x)
        assert expected.shape[1:] == network.output_shape == (24, 4, 6)
        assert relative_error(model(x), expected) < TOLERANCE
        assert relative_error(interpret.run(network, model.state_dict(), x), expected) < TOLERANCE


def test_relative_position_bias_reads_the_table_by_offset() -> None:
    # B[h, i, j] = T[(y_i - y_j + H - 1) (2 W - 1) + x_i - x_j + W - 1, h], one pair at a time.
    network = resdsl.compile_text(
        "network probe {\n    input 16x3x5\n    stem {\n        attn: attention heads=2, rel_pos=bias\n    }\n}\n",
        path="probe.res",
    )
    module = randomise(build(network)).double().attn
    table = module.rel_pos["relative_position_bias_table"]
    bias = module._relative_bias()
    height, width = 3, 5
    for i in range(height * width):
        for j in range(height * width):
            (yi, xi), (yj, xj) = divmod(i, width), divmod(j, width)
            row = (yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1
            assert torch.equal(bias[:, i, j], table[row])


def test_head_first_groups_each_heads_q_k_v() -> None:
    # With head_first, qkv's channels are [h0: q k v, h1: q k v]: reordering them to
    # [q: h0 h1, k: h0 h1, v: h0 h1] by hand gives the same output without the option.
    text = "network probe {{\n    input 8x3x4\n    stem {{\n        attention heads=2{}\n    }}\n}}\n"
    grouped = resdsl.compile_text(text.format(", head_first=true"), path="probe.res")
    plain = resdsl.compile_text(text.format(""), path="probe.res")
    model = randomise(build(grouped)).double().eval()
    state = model.state_dict()
    dim = 4
    order = [head * 3 * dim + part * dim + c for part in range(3) for head in range(2) for c in range(dim)]
    moved = {key: value[order] if key.split(".")[-2] == "qkv" else value for key, value in state.items()}
    other = resdsl.load(plain, weights=moved).double().eval()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(model(x), other(x)) < TOLERANCE
        assert relative_error(interpret.run(grouped, state, x), other(x)) < TOLERANCE
        other.load_state_dict(state)
        assert relative_error(model(x), other(x)) > 1e-3  # the order matters
