"""Day-to-day use with torch: the table against torchinfo's, exports at any batch size,
no warnings on a normal run, fine-tuning with skip=, the module's network attribute."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import resdsl
from resdsl.cli import main
from resdsl.table import Table

ROOT = Path(__file__).resolve().parent.parent
torchinfo = pytest.importorskip("torchinfo", reason="torchinfo is in the [test] extra")
models = pytest.importorskip("torchvision.models", reason="torchvision is in the [test] extra")


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_table_totals_are_torchinfos(name: str) -> None:
    batch = 2
    reference = getattr(models, name)()
    reference.layer1.requires_grad_(False)  # frozen parameters, as when fine-tuning
    stats = torchinfo.summary(reference, input_size=(batch, 3, 224, 224), verbose=0)
    model = resdsl.load(f"torchvision/{name}", weights=reference.state_dict())
    model.layer1.requires_grad_(False)
    table = Table.of(model.network, batch=batch, model=model)
    assert table.params == stats.total_params
    assert table.trainable == stats.trainable_params and table.frozen > 0
    assert round(table.params_bytes / 1e6, 2) == round(stats.to_megabytes(stats.total_param_bytes), 2)
    assert round(table.activation_bytes / 1e6, 2) == round(stats.to_megabytes(stats.total_output_bytes), 2)
    assert round(table.input_bytes / 1e6, 2) == round(stats.to_megabytes(stats.total_input), 2)
    # torchinfo's mult-adds add BN's (one per parameter); resdsl's count conv and fc only.
    assert table.macs * batch <= stats.total_mult_adds < table.macs * batch * 1.01


def test_build_table_has_what_torchinfo_users_expect(capsys) -> None:
    assert main(["build", "cifar20", "--batch", "4"]) == 0
    out = capsys.readouterr().out
    assert "kernel" in out and "3x3,3x3" in out and "conv3_x (stage)" in out
    assert "trainable 269,722, frozen 0" in out and "memory at batch 4" in out
    assert main(["build", "cifar20", "--detail", "stage"]) == 0
    stages = [line.split()[0] for line in capsys.readouterr().out.splitlines()[3:8]]
    assert stages == ["stem", "conv2_x", "conv3_x", "conv4_x", "head"]
    assert main(["build", "cifar20", "--json", "--batch", "3"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["batch"] == 3 and summary["totals"]["params"] == 269_722
    assert summary["totals"]["activation_bytes"] == 3 * Table.of(resdsl.compile("cifar20")).activation_bytes


def test_exports_take_any_batch_size(tmp_path: Path, capsys) -> None:
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    torch.manual_seed(0)
    weights = tmp_path / "w.pt"
    torch.save(resdsl.load("cifar20").state_dict(), weights)
    model = resdsl.load("cifar20", weights=weights).eval()
    for suffix in (".pt2", ".onnx"):
        # The probe's batch (1 here) must not become the export's.
        assert main(["build", "cifar20", "--weights", str(weights), "-o", str(tmp_path / f"m{suffix}")]) == 0
        assert "any batch size" in capsys.readouterr().out
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(program(x), expected, rtol=1e-4, atol=1e-5)
        (got,) = session.run(None, {"input": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-5)


def test_a_normal_run_prints_no_warnings(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    commands = [
        ["build", "cifar20", "-o", str(tmp_path / "m.onnx")],
        ["build", "cifar20", "--batch", "2", "-o", str(tmp_path / "m.pt2")],
        ["check", "resnet50", "--stages"],
        ["list"],
        ["diff", "plain34", "resnet34"],
    ]
    for command in commands:
        result = subprocess.run(
            [sys.executable, "-m", "resdsl", *command], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert result.returncode == 0, result.stderr
        assert "Warning" not in result.stderr and "warn" not in result.stderr.lower(), (command, result.stderr)
        assert result.stderr == "", (command, result.stderr)


def test_load_has_its_real_signature_and_the_module_its_network() -> None:
    parameters = inspect.signature(resdsl.load).parameters
    assert {"weights", "skip", "for_inference", "engine", "input", "device", "params"} <= set(parameters)
    assert "skip" in resdsl.load.__doc__ and "engine" in resdsl.load.__doc__
    model = resdsl.load("cifar20", input="3x64x64")
    assert isinstance(model.network, resdsl.Network) and model.network.input_shape == (3, 64, 64)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
    assert model.network.num_params == sum(p.numel() for p in model.parameters())


def test_torchvision_weights_in_a_paper_layout_spec_suggest_the_matching_spec() -> None:
    state = models.resnet50().state_dict()
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.load("resnet50", weights=state)
    assert "'torchvision/resnet50'" in raised.value.hint and "resdsl.load('torchvision/resnet50'" in raised.value.hint
    model = resdsl.load("torchvision/resnet50", weights=state)
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])


def test_fine_tuning_loads_all_but_the_head() -> None:
    torch.manual_seed(0)
    state = models.resnet18().state_dict()
    with pytest.raises(resdsl.SpecError) as raised:
        resdsl.load("torchvision/resnet18", classes=10, weights=state)
    assert "skip=('fc',)" in raised.value.hint
    model = resdsl.load("torchvision/resnet18", classes=10, weights=state, skip=("fc",))
    assert model.fc.out_features == 10
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.fc.weight.abs().sum() > 0  # initialised, not left as empty memory
    assert torch.isfinite(model(torch.randn(1, 3, 64, 64))).all()
    with pytest.raises(resdsl.SpecError, match="unknown module 'fcc'") as raised:
        resdsl.load("torchvision/resnet18", classes=10, weights=state, skip="fcc")
    assert "did you mean 'fc'?" in raised.value.hint
