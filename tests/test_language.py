"""Every example of the design sketch, tests/fixtures/LANGUAGE.md, compiles as written.

tests/fixtures/LANGUAGE.md is the repository's copy of the design document. Where
the authors' working tree has the original beside the checkout
(../shared/design/LANGUAGE.md), the examples are read from it and a test keeps the
copy identical to it; a fresh clone reads the copy.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

import resdsl
from resdsl.frontend import load

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "design" / "LANGUAGE.md"
VENDORED = ROOT / "tests" / "fixtures" / "LANGUAGE.md"


def _document() -> str:
    return (SHARED if SHARED.is_file() else VENDORED).read_text(encoding="utf-8")


def _examples() -> list[str]:
    return re.findall(r"```\n(.*?)```", _document(), flags=re.S)


def _example(marker: str) -> str:
    (found,) = [example for example in _examples() if marker in example]
    return found


def test_vendored_copy_is_current() -> None:
    if not SHARED.is_file():
        pytest.skip(
            "no original design document beside this checkout to compare with: "
            "tests/fixtures/LANGUAGE.md, in this repository, is the design sketch read here"
        )
    assert VENDORED.read_text(encoding="utf-8") == SHARED.read_text(encoding="utf-8")


def test_every_example_is_accounted_for() -> None:
    assert len(_examples()) == 6


def test_block_examples_define_the_prelude_blocks(write_spec) -> None:
    blocks = _example("block basic(width, stride=1)")
    path = write_spec("blocks.res", blocks)
    namespace = load(path)
    assert {"basic", "bottleneck"} <= set(namespace.blocks)
    assert namespace.blocks["basic"][1].path == namespace.path  # the file's own, not the prelude's
    # A network built from the example's blocks has the paper's figures.
    network = _example("network resnet50(classes=1000)")
    path = write_spec("resnet50.res", blocks + "\n" + network)
    compiled = resdsl.compile(path)
    assert (compiled.num_params, compiled.macs) == (25_557_032, 3_857_973_248)


def test_resnet50_example(write_spec) -> None:
    network = resdsl.compile(write_spec("resnet50.res", _example("network resnet50(classes=1000)")))
    assert network.name == "resnet50"
    assert network.num_params == 25_557_032
    assert round(network.macs / 1e9, 3) == 3.858
    assert network.output_shape == (1000,)
    assert resdsl.compile(
        write_spec("resnet50.res", _example("network resnet50(classes=1000)")), classes=10
    ).output_shape == (10,)


def test_family_import_and_instantiation(write_spec) -> None:
    write_spec("lib/cifar.res", _example("network cifar_resnet(n, classes=10)"))
    path = write_spec("cifar110.res", _example("network cifar110 = cifar_resnet(n=18)"))
    network = resdsl.compile(path)
    assert network.name == "cifar110"
    assert network.num_params == 1_727_962
    assert network.layer_count() == 110


def test_override_makes_the_plain_network(write_spec, tmp_path: Path) -> None:
    shutil.copy(ROOT / "specs" / "resnet34.res", tmp_path / "resnet34.res")
    network = resdsl.compile(write_spec("plain34.res", _example("network plain34 = resnet34 with shortcut none")))
    residual = resdsl.compile(tmp_path / "resnet34.res")
    assert network.name == "plain34"
    assert network.settings.shortcut == "none"
    assert not list(network.nodes("add"))
    assert network.num_params == residual.num_params - 173_824  # the three projections of Table 1's ResNet-34


def test_torchvision_naming_example_matches_torchvision(write_spec) -> None:
    torch = pytest.importorskip("torch", reason="torch is a dependency")
    models = pytest.importorskip("torchvision.models", reason="torchvision is in the [test] extra")
    network = resdsl.compile(write_spec("resnet50_tv.res", _example("network resnet50_tv(classes=1000)")))
    with torch.device("meta"):
        reference = models.resnet50()
    expected = {name.rsplit(".", 1)[0] for name in reference.state_dict()}
    with_state = {"conv", "bn", "fc", "projection"}
    names = {node.name for node in network.nodes() if node.kind in with_state}
    projections = {name for name in names if name.endswith("downsample")}
    names = (names - projections) | {f"{p}.0" for p in projections} | {f"{p}.1" for p in projections}
    assert names == expected
    assert network.macs == 4_089_184_256
