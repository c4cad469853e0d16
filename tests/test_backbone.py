"""Backbones: feature maps, forward_features / forward_head / reset_classifier and
feature_info, against timm's ``features_only=True`` models and timm's own methods,
with the same randomised weights (BN statistics included), in float64.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="backbones are built in torch")
timm = pytest.importorskip("timm", reason="timm's features_only models are the reference")

import resdsl  # noqa: E402
from tests.oracle import randomise, relative_error  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
#: Divisible by 32, so that each stage's reduction is its nominal stride, as timm reports it.
INPUT = (3, 32, 32)
NAMES = ("resnet18", "ecaresnet50d", "resnet18d")


def _pair(name: str):
    """timm's model, randomised, and resdsl's spec of it holding the same weights, float64."""
    reference = randomise(timm.create_model(name, pretrained=False)).double().eval()
    return reference, reference.state_dict()


def _timm_features(name: str, state: dict, out_indices: tuple[int, ...]):
    features = timm.create_model(name, pretrained=False, features_only=True, out_indices=out_indices)
    own = features.state_dict()
    assert set(own) <= set(state)
    features.load_state_dict({key: state[key] for key in own})
    return features.double().eval()


@pytest.mark.parametrize("name", NAMES)
def test_features_only_is_timms_with_the_same_weights(name: str) -> None:
    _, state = _pair(name)
    reference = _timm_features(name, state, (1, 2, 3, 4))  # timm's index 0 is the stem
    model = resdsl.load(f"timm/{name}", input=INPUT, weights=state, features_only=True).double().eval()
    x = torch.randn(2, *INPUT, dtype=torch.float64)
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert isinstance(ours, list) and len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert relative_error(a, b) < 1e-10
    assert model.feature_info.channels() == reference.feature_info.channels()
    assert model.feature_info.reduction() == reference.feature_info.reduction()
    assert model.feature_info.module_name() == reference.feature_info.module_name()
    # The same figures from the IR alone, before anything is built.
    info = resdsl.feature_info(f"timm/{name}", input="x".join(map(str, INPUT)))
    assert info.channels() == reference.feature_info.channels()
    assert info.reduction() == reference.feature_info.reduction()
    assert [feature.shape for feature in info] == [tuple(t.shape[1:]) for t in ours]


def test_named_features_and_out_indices_against_timm() -> None:
    _, state = _pair("resnet18")
    reference = _timm_features("resnet18", state, (0, 2, 4))
    x = torch.randn(2, *INPUT, dtype=torch.float64)
    named = resdsl.load("timm/resnet18", input=INPUT, weights=state, features=("act1", "layer2", "layer4"))
    named = named.double().eval()
    with torch.no_grad():
        ours, theirs = named(x), reference(x)
    assert list(ours) == ["act1", "layer2", "layer4"]
    for a, b in zip(ours.values(), theirs):
        assert relative_error(a, b) < 1e-10
    assert named.feature_info.reduction() == reference.feature_info.reduction() == [2, 8, 32]
    # Nothing after the last feature is built into the extractor, or computed.
    early = resdsl.load("timm/resnet18", input=INPUT, weights=state, features=("layer2",))
    assert not any(key.startswith(("layer3", "layer4", "fc")) for key in early.state_dict())
    indexed = resdsl.load("timm/resnet18", input=INPUT, weights=state, features_only=True, out_indices=(1, -1))
    indexed = indexed.double().eval()
    with torch.no_grad():
        got = indexed(x)
    assert [tuple(t.shape[1:]) for t in got] == [(128, 4, 4), (512, 1, 1)]
    assert relative_error(got[1], theirs[2]) < 1e-10


@pytest.mark.parametrize("name", NAMES)
def test_forward_features_head_and_reset_classifier_are_timms(name: str) -> None:
    reference, state = _pair(name)
    model = resdsl.load(f"timm/{name}", input=INPUT, weights=state).double().eval()
    x = torch.randn(2, *INPUT, dtype=torch.float64)
    with torch.no_grad():
        features = model.forward_features(x)
        assert relative_error(features, reference.forward_features(x)) < 1e-10
        assert relative_error(model.forward_head(features), reference.forward_head(features)) < 1e-10
        pooled = model.forward_head(features, pre_logits=True)
        assert relative_error(pooled, reference.forward_head(features, pre_logits=True)) < 1e-10
        assert relative_error(model.forward_head(features), model(x)) < 1e-12
    assert model.num_features == reference.num_features
    assert model.get_classifier() is model.fc
    model.reset_classifier(7)
    reference.reset_classifier(7)
    assert model.num_classes == 7
    with torch.no_grad():
        model.fc.weight.copy_(reference.fc.weight)
        model.fc.bias.copy_(reference.fc.bias)
        assert relative_error(model(x), reference(x)) < 1e-10
        assert relative_error(model.forward_head(model.forward_features(x)), model(x)) < 1e-12
    model.reset_classifier(0)
    reference.reset_classifier(0)
    with torch.no_grad():
        assert relative_error(model(x), reference(x)) < 1e-10  # the pooled features


def test_bad_requests_say_what_there_is() -> None:
    with pytest.raises(ValueError, match=r"no feature 'layer9'.*conv5_x"):
        resdsl.feature_info("resnet18", features=("layer9",))
    with pytest.raises(ValueError, match="out_indices: 4"):
        resdsl.feature_info("resnet18", out_indices=(4,))
    with pytest.raises(ValueError, match="for_inference"):
        resdsl.load("resnet18", features_only=True, for_inference=True)


def test_feature_info_never_imports_torch() -> None:
    code = (
        "import sys, resdsl\n"
        "info = resdsl.feature_info('resnet50')\n"
        "assert info.channels() == [256, 512, 1024, 2048], info\n"
        "assert info.reduction() == [4, 8, 16, 32], info\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)})


def test_an_extractor_exports_and_a_model_copies() -> None:
    import copy

    x = torch.randn(2, 3, 32, 32)
    extractor = resdsl.load("cifar20", features=("conv3_x", "conv4_x")).eval()
    with torch.no_grad():
        expected = extractor(x)
    program = torch.export.export(extractor, (x,))
    with torch.no_grad():
        exported = program.module()(x)
    assert list(exported) == ["conv3_x", "conv4_x"]
    assert all(torch.equal(exported[name], expected[name]) for name in expected)
    model = resdsl.load("cifar20").eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(twin.forward_features(x), model.forward_features(x))
