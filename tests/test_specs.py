"""The shipped specs reproduce the paper's and torchvision's figures, from the IR alone.

Ground truth: the parameter counts the paper reports (Table 1 and section 4.2),
and torchvision's own metadata (`num_params`, `_ops` in GMACs) for its layouts.
"""

from __future__ import annotations

import pytest

import resdsl
from resdsl.layers import Attention, ChannelConv, Conv, Linear

# Table 1 of the paper; equal to torchvision's counts, which share the layout's widths.
IMAGENET_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}

# The paper's layout (stride on the first 1x1 of a bottleneck) in GMACs at 224x224;
# the paper prints 1.8 / 3.6 / 3.8 / 7.6 / 11.3 x 10^9.
PAPER_GMACS = {"resnet18": 1.814, "resnet34": 3.664, "resnet50": 3.858, "resnet101": 7.570, "resnet152": 11.282}
PAPER_PRINTED_GMACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}

# Section 4.2: 6n+2 layers, option A, so plain twins have the same counts.
CIFAR_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}


@pytest.mark.parametrize("name", sorted(IMAGENET_PARAMS))
def test_paper_layout_params_and_macs(name: str) -> None:
    network = resdsl.compile(name)
    assert network.num_params == IMAGENET_PARAMS[name]
    assert round(network.macs / 1e9, 3) == PAPER_GMACS[name]
    # The paper rounds to one decimal (and truncates 3.86 to 3.8, 3.66 to 3.6).
    assert abs(network.macs / 1e9 - PAPER_PRINTED_GMACS[name]) < 0.1
    assert network.input_shape == (3, 224, 224)
    assert network.output_shape == (1000,)
    assert network.layer_count() == int(name.removeprefix("resnet"))


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_torchvision_layout_matches_torchvision_metadata(depth: int) -> None:
    models = pytest.importorskip("torchvision.models", reason="torchvision is in the [test] extra")
    meta = getattr(models, f"ResNet{depth}_Weights").IMAGENET1K_V1.meta
    network = resdsl.compile(f"torchvision/resnet{depth}")
    assert network.num_params == meta["num_params"]
    assert round(network.macs / 1e9, 3) == meta["_ops"]


def test_vgg19_matches_torchvision_metadata() -> None:
    models = pytest.importorskip("torchvision.models", reason="torchvision is in the [test] extra")
    meta = models.VGG19_Weights.IMAGENET1K_V1.meta
    network = resdsl.compile("vgg19")
    assert network.num_params == meta["num_params"] == 143_667_240
    assert round(network.macs / 1e9, 3) == meta["_ops"]
    assert round(network.macs / 1e9, 1) == 19.6  # Fig. 3's "19.6 billion FLOPs"
    assert network.layer_count() == 19


@pytest.mark.parametrize("depth", sorted(CIFAR_PARAMS))
def test_cifar_params(depth: int) -> None:
    network = resdsl.compile(f"cifar{depth}")
    assert network.num_params == CIFAR_PARAMS[depth]
    assert network.settings.shortcut == "A"
    assert network.input_shape == (3, 32, 32)
    assert network.output_shape == (10,)
    assert network.layer_count() == depth
    # Option A shortcuts are parameter-free: no projection anywhere.
    assert not list(network.nodes("projection"))
    assert len(list(network.nodes("zeropad"))) == 2


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_cifar_plain_twins(depth: int) -> None:
    plain = resdsl.compile(f"cifar_plain{depth}")
    residual = resdsl.compile(f"cifar{depth}")
    assert plain.num_params == residual.num_params == CIFAR_PARAMS[depth]
    assert plain.macs == residual.macs
    assert plain.layer_count() == depth
    assert not list(plain.nodes("add"))
    assert len(list(residual.nodes("add"))) == 3 * (depth - 2) // 6


@pytest.mark.parametrize("depth", [18, 34])
def test_plain_imagenet_is_resnet_less_its_projections(depth: int) -> None:
    plain = resdsl.compile(f"plain{depth}")
    residual = resdsl.compile(f"resnet{depth}")
    projected = [block for block in residual.blocks if block.shortcut_nodes]
    assert [block.path for block in projected] == ["conv3_x.0", "conv4_x.0", "conv5_x.0"]
    projection_params = sum(residual.node(n).params for b in projected for n in b.shortcut_nodes)
    assert plain.num_params == residual.num_params - projection_params
    assert not list(plain.nodes("add"))
    assert not [node for node in plain.nodes() if node.role == "shortcut"]
    assert plain.output_shape == residual.output_shape


def test_every_shipped_spec_compiles_and_figures_add_up() -> None:
    names = resdsl.shipped_specs()
    required = set(IMAGENET_PARAMS) | {f"torchvision/resnet{d}" for d in (18, 34, 50, 101, 152)}
    required |= {f"cifar{d}" for d in CIFAR_PARAMS} | {f"cifar_plain{d}" for d in (20, 32, 44, 56)}
    required |= {"plain18", "plain34", "vgg19"}
    assert required <= set(names)
    for name in names:
        network = resdsl.compile(name)
        assert network.num_params == sum(node.params for node in network.nodes())
        assert network.num_params == sum(stage.params for stage in network.stages)
        assert network.macs == sum(stage.macs for stage in network.stages)
        # MACs are convolutions (ECA's across channels included) and fc only (the paper's
        # and torchvision's convention), and attention's linear layers and matrix products.
        counted = sum(
            node.macs for node in network.nodes() if isinstance(node.layer, Conv | ChannelConv | Linear | Attention)
        )
        assert network.macs == counted


def test_stage_table_of_resnet34_matches_table1() -> None:
    network = resdsl.compile("resnet34")
    stages = {stage.name: stage for stage in network.stages}
    # Table 1: output sizes 56, 28, 14, 7 and block counts 3, 4, 6, 3.
    assert [(stages[f"conv{i}_x"].blocks, stages[f"conv{i}_x"].output_shape) for i in range(2, 6)] == [
        (3, (64, 56, 56)),
        (4, (128, 28, 28)),
        (6, (256, 14, 14)),
        (3, (512, 7, 7)),
    ]
    assert stages["stem"].output_shape == (64, 56, 56)


def test_params_from_the_api() -> None:
    network = resdsl.compile("resnet50", classes=10)
    assert network.output_shape == (10,)
    assert network.num_params == IMAGENET_PARAMS["resnet50"] - 2048 * 990 - 990
