"""`resdsl build`: the table, --json, saving by extension, and its errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.backends.loading import load
from resdsl.cli import main


def test_table_rows_are_blocks_and_totals_are_the_irs(capsys) -> None:
    assert main(["build", "cifar20"]) == 0
    out = capsys.readouterr().out
    network = resdsl.compile("cifar20")
    assert re.search(r"^conv3_x\.0 +basic ", out, flags=re.M) and "conv3_x.0.conv1" not in out
    (total,) = [line for line in out.splitlines() if line.startswith("total ")]
    assert f"{network.num_params:,}" in total and f"{network.macs:,}" in total
    assert main(["build", "cifar20", "--detail", "layer"]) == 0
    assert "conv3_x.0.conv1" in capsys.readouterr().out


def test_json(capsys) -> None:
    assert main(["build", "resnet18", "--json", "--param", "classes=7"]) == 0
    summary = json.loads(capsys.readouterr().out)
    network = resdsl.compile("resnet18", classes=7)
    assert summary["output_shape"] == [7]
    assert summary["params"] == network.num_params == sum(row["params"] for row in summary["rows"])
    assert [row["module"] for row in summary["rows"]][-1] == "fc1"


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pt2", ".onnx"])
def test_save_formats(tmp_path: Path, suffix: str, capsys) -> None:
    out = tmp_path / f"cifar20{suffix}"
    assert main(["build", "cifar20", "-o", str(out)]) == 0
    assert out.stat().st_size > 100_000
    if suffix in (".pt", ".safetensors"):
        model = load("cifar20", weights=out)
        assert sum(p.numel() for p in model.parameters()) == 269_722
    if suffix == ".pt2":
        program = torch.export.load(str(out))
        assert tuple(program.module()(torch.randn(1, 3, 32, 32)).shape) == (1, 10)


def test_errors(tmp_path: Path, capsys) -> None:
    assert main(["build", "cifar20", "-o", str(tmp_path / "m.h5")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err
    bad = tmp_path / "bad.res"
    bad.write_text("network bad {\n    input 3x32x32\n    stage s: 0 x basic(16)\n}\n")
    assert main(["build", str(bad)]) == 1
    assert f"{bad}:3:14: a stage's repeat count must be positive" in capsys.readouterr().err


@pytest.mark.parametrize("spec", ["cifar20", "torchvision/resnet18"])
def test_py_export_reimports_with_equal_outputs(tmp_path: Path, spec: str, capsys) -> None:
    import runpy

    out = tmp_path / "model.py"
    assert main(["build", spec, "-o", str(out)]) == 0
    # The file holds no weights and not the spec's initialisation: build says so.
    assert "no weights" in capsys.readouterr().out.splitlines()[-1]
    source = out.read_text()
    assert "import resdsl" not in source and "from resdsl" not in source
    exported = runpy.run_path(str(out))["Model"]().eval()
    reference = load(spec).eval()
    exported.load_state_dict(reference.state_dict(), strict=True)
    assert list(exported.state_dict()) == list(reference.state_dict())
    x = torch.randn(2, *resdsl.compile(spec).input_shape)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), reference(x))
