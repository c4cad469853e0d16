"""Every shipped spec that has a reference implementation, checked against it.

The references are timm's own modules (``timm.create_model(name, pretrained=False)``:
nothing is downloaded) and, for the CIFAR networks of the 2016 papers that timm does
not have, small torch modules below written from the authors' published code. For
each network: the reference's weights and BN statistics are randomised, loaded into
the module the spec builds with ``strict=True``, and both are run in float64 in eval
and in train mode; the outputs must agree, and so must the ``state_dict()`` keys, the
parameter count and the multiply-accumulates (torch's FlopCounterMode on the reference, counting
convolutions and matrix products, against the compiler's figure); the reference
interpreter (resdsl.interpret) computes the same output from the IR. Inputs are
small and not square, so that CI stays fast and a swapped height and width would
show; the ImageNet networks' odd intermediate sizes (5x4, 3x2) exercise ResNet-D's
ceil-mode pooling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import resdsl
from resdsl import interpret
from resdsl.compiler import specs_dir
from tests.oracle import randomise, relative_error

# float64 agrees to about 1e-14 here; the bound leaves room for summation order.
TOLERANCE = 1e-9

IMAGENET_INPUT = (3, 40, 32)
CIFAR_INPUT = (3, 32, 32)  # the authors' 8x8 average pool needs 32x32


# The CIFAR references ---------------------------------------------------------------


def _conv(inputs: int, outputs: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    # Both codes' convolutions have no bias: resnet-pre-act.lua's ConvInit removes it
    # (cuDNN >= 4), and wide-residual-networks' conv_params makes none.
    return nn.Conv2d(inputs, outputs, kernel, stride, kernel // 2, bias=False)


class PreActUnit(nn.Module):
    """``bottleneck(nInputPlane, nOutputPlane, stride)`` of KaimingHe/resnet-1k-layers,
    resnet-pre-act.lua (He et al., 2016): full pre-activation, the stride on the first
    1x1 convolution; where dimensions increase, BN and ReLU are common to both paths
    and the shortcut is a strided 1x1 convolution, else the shortcut is the identity."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        width = outputs // 4
        self.norm1 = nn.BatchNorm2d(inputs)
        self.conv1 = _conv(inputs, width, 1, stride)
        self.norm2 = nn.BatchNorm2d(width)
        self.conv2 = _conv(width, width, 3)
        self.norm3 = nn.BatchNorm2d(width)
        self.conv3 = _conv(width, outputs, 1)
        self.downsample = nn.Sequential(_conv(inputs, outputs, 1, stride)) if inputs != outputs else None

    def convs(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.conv2(F.relu(self.norm2(x)))
        return self.conv3(F.relu(self.norm3(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is None:
            return self.convs(F.relu(self.norm1(x))) + x
        preact = F.relu(self.norm1(x))
        return self.convs(preact) + self.downsample(preact)


class PreActResNet(nn.Module):
    """resnet-pre-act.lua's CIFAR-10 model: depth 9n+2, nStages = {16, 64, 128, 256}."""

    def __init__(self, depth: int, classes: int = 10) -> None:
        super().__init__()
        n = (depth - 2) // 9
        self.conv1 = _conv(3, 16, 3)
        stages = (16, 64, 128, 256)
        for index in range(3):
            inputs, outputs, stride = stages[index], stages[index + 1], 1 if index == 0 else 2
            units = [PreActUnit(inputs, outputs, stride)] + [PreActUnit(outputs, outputs, 1) for _ in range(n - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*units))
        self.bn = nn.BatchNorm2d(256)
        self.fc = nn.Linear(256, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = F.avg_pool2d(F.relu(self.bn(x)), 8, 1)  # Avg(8, 8, 1, 1)
        return self.fc(x.view(x.shape[0], -1))


class WideBlock(nn.Module):
    """``block`` of szagoruyko/wide-residual-networks, pytorch/resnet.py (Zagoruyko and
    Komodakis, 2016), with the dropout of their Lua model (models/wide-resnet.lua)
    between the convolutions. Their ``convdim`` is ``downsample.0`` here, as the
    language names a projection."""

    def __init__(self, inputs: int, outputs: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn0 = nn.BatchNorm2d(inputs)
        self.conv0 = _conv(inputs, outputs, 3, stride)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv1 = _conv(outputs, outputs, 3)
        self.downsample = nn.Sequential(_conv(inputs, outputs, 1, stride)) if inputs != outputs else None
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o1 = F.relu(self.bn0(x))
        y = self.conv0(o1)
        o2 = F.relu(self.bn1(y))
        o2 = F.dropout(o2, self.dropout, self.training)
        z = self.conv1(o2)
        if self.downsample is not None:
            return z + self.downsample(o1)
        return z + x


class WideResNet(nn.Module):
    """pytorch/resnet.py's ``resnet(depth, width, num_classes)``; groups of blocks are
    numbered ``group0.0`` where the functional code says ``group0.block0``."""

    def __init__(self, depth: int, k: int, classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        n = (depth - 4) // 6
        widths = [16 * k, 32 * k, 64 * k]
        self.conv0 = _conv(3, 16, 3)
        inputs = 16
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks = [WideBlock(inputs if i == 0 else width, width, stride if i == 0 else 1, dropout) for i in range(n)]
            self.add_module(f"group{index}", nn.Sequential(*blocks))
            inputs = width
        self.bn = nn.BatchNorm2d(widths[2])
        self.fc = nn.Linear(widths[2], classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.group2(self.group1(self.group0(self.conv0(x))))
        x = F.avg_pool2d(F.relu(self.bn(x)), 8, 1, 0)
        return self.fc(x.view(x.shape[0], -1))


# The cases ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    spec: str  # the shipped spec's name
    reference: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    # Why the reference registers its modules in another order than the spec (strict
    # loading does not depend on the order, only on the names and shapes).
    order_differs: str | None = None
    batch: int = 2
    #: Network parameters the smaller input needs (a token count a block cannot see).
    params: tuple[tuple[str, object], ...] = ()

    @property
    def network(self) -> str:
        return self.spec.rsplit("/", 1)[-1]


def _timm(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False)


TIMM_NAMES = (
    "resnet18",
    "resnet50",
    "resnet18d",
    "resnet26t",
    "resnet50d",
    "seresnet50",
    "resnetrs50",
    "ecaresnet50d",
    "resnet50_gn",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "resnetv2_50",
    "mobilenetv2_100",
    "mobilenetv2_050",
    "efficientnet_b0",
    "convnext_atto",
    "convnext_femto",
    "regnetx_002",
    "regnetx_004",
    "regnety_002",
    "repvgg_a0",
    "repvgg_b0",
    "skresnet18",
    "skresnet34",
    "resnest14d",
    "resnest26d",
    "res2net50_26w_4s",
    "res2next50",
    "cspresnext50",
    "cspresnet50",
    "nf_resnet26",
    "dpn68",
)

# Why a reference registers its modules in another order than the spec builds them.
ORDER_NOTES = {
    "resnetv2_50": "timm's PreActBottleneck registers downsample before norm1",
    "deit_tiny_distilled_patch16_224": "timm's DeiT registers dist_token after pos_embed",
    "deit3_small_patch16_224": "timm registers cls_token before pos_embed; the spec adds the position first",
    "vit_wee_patch16_reg1_gap_256": "timm registers reg_token before pos_embed; the spec adds the position first",
}


def _timm_at(name: str, size: int | tuple[int, int]) -> Callable[[], nn.Module]:
    """A reference whose position embedding is sized for a smaller input (the spec's
    `position` follows its input's tokens)."""
    return lambda: timm.create_model(name, pretrained=False, img_size=size)


#: Token networks, checked at 64x64: their position embeddings follow the input size.
TOKEN_NAMES = ("vit_tiny_patch16_224", "deit_tiny_distilled_patch16_224")
#: Written from docs/ alone (issue 24's trial).
TRIAL_TOKEN_NAMES = ("vit_small_patch16_224", "deit3_small_patch16_224", "vit_medium_patch16_gap_256")

CASES = {
    **{
        name: Case(
            f"timm/{name}",
            _timm(name),
            IMAGENET_INPUT,
            order_differs=ORDER_NOTES.get(name),
        )
        for name in TIMM_NAMES
    },
    **{
        name: Case(f"timm/{name}", _timm_at(name, 64), (3, 64, 64), order_differs=ORDER_NOTES.get(name))
        for name in TOKEN_NAMES
    },
    # MLP-Mixer's token MLP ends at the number of tokens, (64 / 16)^2 at this input.
    "mixer_s16_224": Case("timm/mixer_s16_224", _timm_at("mixer_s16_224", 64), (3, 64, 64), params=(("patches", 16),)),
    # Swin at 14x21 tokens: shifted windows padded along the width, then grids of 7x11 (a window
    # the grid's height, shifted and padded along the width), 4x6 (merging pads 7 to 8) and 2x3,
    # where timm's rule shrinks the windows and drops the shift. Drop path (timm's 0.1) off.
    "swin_tiny_patch4_window7_224": Case(
        "timm/swin_tiny_patch4_window7_224",
        lambda: timm.create_model(
            "swin_tiny_patch4_window7_224", pretrained=False, img_size=(56, 84), drop_path_rate=0.0
        ),
        (3, 56, 84),
        params=(("drop_path_rate", 0),),
    ),
    # DLA's pooled shortcuts and strided blocks meet only where every size divides by 32.
    "dla34": Case("timm/dla34", _timm("dla34"), (3, 64, 64)),
    "dla46_c": Case("timm/dla46_c", _timm("dla46_c"), (3, 64, 64)),
    # HRNet's branches at 1/4 ... 1/32 meet through exact 2x upsampling: every size divides by 32.
    "hrnet_w18_small": Case("timm/hrnet_w18_small", _timm("hrnet_w18_small"), (3, 64, 96)),
    # BoTNet's relative position tables follow the attended map (4x6 in the last stage
    # here): not square, so that a swapped height and width would show.
    "botnet26t_256": Case("timm/botnet26t_256", _timm_at("botnet26t_256", (64, 96)), (3, 64, 96)),
    # CoAtNet's transformer stages attend over the whole map (4x6 and 2x3 here), their
    # relative position tables sized by it.
    "coatnet_0_rw_224": Case("timm/coatnet_0_rw_224", _timm_at("coatnet_0_rw_224", (64, 96)), (3, 64, 96)),
    # PVT v2 takes any size (its grids follow the input): not square, so a swapped height
    # and width in the reductions to 2x3 keys would show.
    "pvt_v2_b0": Case("timm/pvt_v2_b0", _timm("pvt_v2_b0"), (3, 64, 96)),
    # MobileViT unfolds 2x2 patches down to 1/32 of the input: every size divides by 64.
    "mobilevit_xs": Case("timm/mobilevit_xs", _timm("mobilevit_xs"), (3, 64, 128)),
    # Issue 24's docs-only trial, at 4x6 patches (not square); `patches` is the token count
    # where a spec needs it (gMLP's spatial gate, the register-less average of vit_wee,
    # Mixer's token MLP).
    **{
        name: Case(f"timm/{name}", _timm_at(name, (64, 96)), (3, 64, 96), order_differs=ORDER_NOTES.get(name))
        for name in TRIAL_TOKEN_NAMES
    },
    **{
        name: Case(
            f"timm/{name}",
            _timm_at(name, (64, 96)),
            (3, 64, 96),
            order_differs=ORDER_NOTES.get(name),
            params=(("patches", 24),),
        )
        for name in ("gmlp_s16_224", "vit_wee_patch16_reg1_gap_256", "mixer_b16_224")
    },
    # ConvMixer's 14x14 patches: 5x4 of them.
    "convmixer_1024_20_ks9_p14": Case(
        "timm/convmixer_1024_20_ks9_p14", _timm("convmixer_1024_20_ks9_p14"), (3, 70, 56)
    ),
    "preact_resnet164": Case("preact_resnet164", lambda: PreActResNet(164), CIFAR_INPUT),
    "preact_resnet1001": Case("preact_resnet1001", lambda: PreActResNet(1001), CIFAR_INPUT, batch=1),
    "wrn28_10": Case("wrn28_10", lambda: WideResNet(28, 10), CIFAR_INPUT, batch=1),
}


def compile_at(spec: str, input_shape: tuple[int, int, int], **params: object) -> resdsl.Network:
    """The shipped spec at another input size, through an alias that overrides its
    `input` setting (the spec file itself is unchanged)."""
    path = specs_dir() / f"{spec}.res"
    name = spec.rsplit("/", 1)[-1]
    arguments = ", ".join(f"{key}={value!r}" for key, value in params.items())
    call = f"{name}({arguments})" if arguments else name
    dims = "x".join(map(str, input_shape))
    return resdsl.compile_text(f'use "{path}"\nnetwork small = {call} with input {dims}\n')


# Attention's Q K^T and A V count as fvcore counts them (aten.bmm: the meta device runs
# scaled_dot_product_attention's math path; the fused kernels where a device runs them).
MATRIX_OPS = {
    "aten.convolution",
    "aten.addmm",
    "aten.mm",
    "aten.bmm",
    "aten._scaled_dot_product_flash_attention",
    "aten._scaled_dot_product_efficient_attention",
    "aten._scaled_dot_product_cudnn_attention",
}


def matrix_macs(counter: FlopCounterMode) -> int:
    """Multiply-accumulates of the convolutions and matrix products a counter saw."""
    counts = counter.get_flop_counts()["Global"]
    return sum(count for op, count in counts.items() if str(op) in MATRIX_OPS) // 2


def loaded_pair(case: Case, **params: object) -> tuple[nn.Module, nn.Module, resdsl.Network]:
    """The randomised reference and the spec's module holding the same weights, both float64."""
    reference = randomise(case.reference())
    network = compile_at(case.spec, case.input_shape, **params)
    model = resdsl.load(network, weights=reference.state_dict())  # strict: names and shapes
    return reference.double(), model.double(), network


#: The references the ordinary suite checks: one plain ImageNet ResNet, a block that
#: holds a block, several paths, a CIFAR net of the 2016 papers. The rest of the zoo is
#: marked slow and runs in CI's second step (README, "Run the tests").
FAST_CASES = ("resnet50", "ecaresnet50d", "dla34", "preact_resnet164")


@pytest.mark.parametrize(
    "name", [name if name in FAST_CASES else pytest.param(name, marks=pytest.mark.slow) for name in CASES]
)
def test_spec_matches_its_reference(name: str) -> None:
    case = CASES[name]
    reference, model, network = loaded_pair(case, **dict(case.params))
    expected_keys = list(reference.state_dict())
    keys = list(model.state_dict())
    assert set(keys) == set(expected_keys)
    if case.order_differs is None:
        assert keys == expected_keys
    else:
        assert keys != expected_keys, f"the order now matches; drop the note: {case.order_differs}"
    assert network.num_params == sum(p.numel() for p in reference.parameters())
    assert network.num_params == sum(p.numel() for p in model.parameters())

    batch = case.batch
    x = torch.randn(batch, *case.input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    reference.eval()
    model.eval()
    with torch.no_grad():
        expected = reference(x)
        got = model(x)
        # The reference interpreter, once per spec: the IR itself computes the same.
        interpreted = interpret.run(network, model.state_dict(), x)
    assert got.shape == expected.shape == (batch, *network.output_shape)
    assert relative_error(got, expected) < TOLERANCE
    assert relative_error(interpreted, expected) < TOLERANCE
    # Train mode: BN normalises with the batch's statistics (and both update their
    # running ones, which nothing reads after this).
    reference.train()
    model.train()
    with torch.no_grad():
        assert relative_error(model(x), reference(x)) < TOLERANCE
    reference.eval()  # MACs are counted with a batch of one, which BN refuses to train on at 1x1
    assert network.macs == reference_macs(reference, case.input_shape)


def test_nf_resnet26_with_gamma_in_its_activations() -> None:
    # timm's gamma_in_act=True: every ReLU (the final one too) is a GammaAct scaling by
    # ReLU's gamma, and the standardised convolutions' gamma is 1.
    gamma = 1.7139588594436646
    case = Case(
        "timm/nf_resnet26",
        lambda: timm.create_model("nf_resnet26", pretrained=False, gamma_in_act=True),
        IMAGENET_INPUT,
    )
    reference, model, network = loaded_pair(case, act_gamma=gamma, conv_gamma=1)
    assert sum(type(m).__name__ == "GammaAct" for m in reference.modules()) == 3 * 8 + 1
    x = torch.randn(2, *case.input_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    default = resdsl.load(compile_at(case.spec, case.input_shape), weights=reference.state_dict()).double().eval()
    for training in (False, True):
        reference.train(training)
        model.train(training)
        with torch.no_grad():
            expected = reference(x)
            assert relative_error(model(x), expected) < TOLERANCE
            assert (
                relative_error(interpret.run(network, model.state_dict(), x, training=training), expected) < TOLERANCE
            )
    with torch.no_grad():
        assert relative_error(default(x), reference.eval()(x)) > 1e-3  # where gamma stands matters


def reference_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """The multiply-accumulates of one input, counted by torch on the meta device: the
    counter needs shapes only, and counting real tensors under it is several times slower."""
    model = model.to("meta")
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.empty(1, *input_shape, device="meta", dtype=torch.float64))
    return matrix_macs(counter)


def test_cifar_figures_the_papers_print() -> None:
    # He et al. (2016) print 1.7M and 10.2M: the weights without BN's scales and shifts
    # (10,178,490 of 10,327,706 for ResNet-1001; 1,679,034 of 1,703,258 for ResNet-164).
    for spec, printed in (("preact_resnet164", 1.7), ("preact_resnet1001", 10.2)):
        network = resdsl.compile(spec)
        norms = sum(node.params for node in network.nodes("bn"))
        assert round((network.num_params - norms) / 1e6, 1) == printed
    assert round(resdsl.compile("wrn28_10").num_params / 1e6, 1) == 36.5  # Table 5


def _drop_paths(model: nn.Module) -> dict[str, float]:
    found = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "DropPath":
            found[name] = getattr(module, "drop_prob", getattr(module, "p", None))
    return found


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("resnet50", 15),
        ("resnetv2_50", 15),
        ("convnext_atto", 11),
        ("regnety_002", 12),
        ("nf_resnet26", 7),
        ("swin_tiny_patch4_window7_224", 22),  # two per block: after the attention and after the MLP
    ],
)
def test_drop_path_schedule_matches_timm(name: str, count: int) -> None:
    rate = 0.05
    reference = timm.create_model(name, pretrained=False, drop_path_rate=rate)
    model = resdsl.load(compile_at(f"timm/{name}", IMAGENET_INPUT, drop_path_rate=rate))
    expected = _drop_paths(reference)
    got = _drop_paths(model)
    assert set(got) == set(expected)
    assert len(got) == count  # every block but the first, whose probability is 0
    for module, probability in expected.items():
        assert got[module] == pytest.approx(probability, rel=1e-6)
    last = max(got.values())
    assert last == pytest.approx(rate)


def test_train_mode_with_drop_path_matches_timm_under_one_seed() -> None:
    # Both sides draw one Bernoulli mask per block from torch's generator, in block
    # order, and BN uses batch statistics: with the same seed they drop the same samples.
    case = CASES["resnet50"]
    rate = 0.3
    reference = randomise(timm.create_model("resnet50", pretrained=False, drop_path_rate=rate))
    network = compile_at(case.spec, case.input_shape, drop_path_rate=rate)
    model = resdsl.load(network, weights=reference.state_dict()).double().train()
    reference = reference.double().train()
    x = torch.randn(4, *case.input_shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    outputs = {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        expected = reference(x)
        torch.manual_seed(seed)
        got = model(x).detach()
        assert relative_error(got, expected.detach()) < TOLERANCE
        outputs[seed] = got
    # The seed matters, so the masks were drawn and applied on both sides.
    assert relative_error(outputs[0], outputs[1]) > 1e-3


def test_network_parameters_reach_the_module() -> None:
    # classes: timm's num_classes; dropout_rate: the WRN authors' Lua dropout.
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    network = compile_at("timm/resnet18", IMAGENET_INPUT, classes=10)
    assert network.output_shape == (10,)
    assert network.num_params == sum(p.numel() for p in reference.parameters())
    wide = resdsl.load(resdsl.compile("wrn28_10", dropout_rate=0.3))
    dropouts = [m.p for m in wide.modules() if isinstance(m, nn.Dropout)]
    assert dropouts == [0.3] * 12
    assert not [m for m in resdsl.load(resdsl.compile("wrn28_10")).modules() if isinstance(m, nn.Dropout)]


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenetv2_100"])
def test_efficientnet_drop_path_follows_timms_rule_where_a_block_joins_its_input(name: str) -> None:
    # timm's rule is drop_path_rate * block_index / block_count over all 16 (17) blocks; its
    # blocks without a residual join keep an unused DropPath, which the spec leaves out.
    rate = 0.2
    reference = timm.create_model(name, pretrained=False, drop_path_rate=rate)
    model = resdsl.load(compile_at(f"timm/{name}", IMAGENET_INPUT, drop_path_rate=rate))
    expected = _drop_paths(reference)
    got = _drop_paths(model)
    assert got and set(got) < set(expected)
    for module, probability in got.items():
        assert probability == pytest.approx(expected[module], rel=1e-6)
        assert reference.get_submodule(module.rsplit(".", 1)[0]).has_skip
    joined = {n for n, m in reference.named_modules() if getattr(m, "has_skip", False)}
    assert {module.rsplit(".", 1)[0] for module in got} == joined
