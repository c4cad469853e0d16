"""load(..., for_inference=True, engine=...): every engine gives the eval model's outputs.

"Within 1e-4 relative": the largest difference is at most 1e-4 of the largest
output, element by element as torch.testing.assert_close reads rtol=1e-4 with an
atol of 1e-4 times the output's scale.
"""

from __future__ import annotations

import pytest
import torch

import resdsl
from resdsl.backends.inference import ENGINES, choose_engine, installed


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())


@pytest.fixture(scope="module")
def eval_model() -> tuple[dict, torch.nn.Module]:
    torch.manual_seed(0)
    model = resdsl.load("cifar20", input="3x16x16")
    # Running statistics away from 0 and 1, so that folding BN has something to fold.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.state_dict(), model.eval()


@pytest.mark.parametrize("engine", ["eager", "onnxruntime", "auto"])
def test_engine_outputs_match_the_eval_model(engine: str, eval_model) -> None:
    if engine == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    state, reference = eval_model
    model = resdsl.load("cifar20", input="3x16x16", weights=state, for_inference=True, engine=engine)
    assert model.engine == (choose_engine(torch.device("cpu")) if engine == "auto" else engine)
    assert model.network.name == "cifar20"
    for batch in (1, 3):
        x = torch.randn(batch, 3, 16, 16)
        with torch.no_grad():
            _close(model(x), reference(x))


def test_inductor_engine_outputs_match_the_eval_model(eval_model) -> None:
    """Compiles with inductor: about 20 to 40 s on a 2-core CPU, the slowest test here."""
    state, reference = eval_model
    model = resdsl.load("cifar20", input="3x16x16", weights=state, for_inference=True, engine="inductor")
    assert model.engine == "inductor"
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        _close(model(x), reference(x))


def test_auto_picks_onnxruntime_on_a_cpu_where_installed() -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    assert installed("onnxruntime")
    assert choose_engine(torch.device("cpu")) == "onnxruntime"
    assert choose_engine(torch.device("cuda")) == "eager"


def test_onnxruntime_engine_takes_what_the_eager_module_takes(eval_model) -> None:
    pytest.importorskip("onnxruntime", reason="onnxruntime is in the [test] extra")
    state, reference = eval_model
    with pytest.raises(ValueError, match="engine must be one of"):
        resdsl.load("cifar20", weights=state, input="3x16x16", for_inference=True, engine="tensorrt")
    assert "tensorrt" not in ENGINES
    model = resdsl.load("cifar20", weights=state, input="3x16x16", for_inference=True, engine="onnxruntime")
    with pytest.raises(ValueError, match="expected input of shape N x 3 x H x W"):
        model(torch.randn(1, 1, 16, 16))
    # Another spatial size, as the eager module takes it (cifar20's head pools globally).
    x = torch.randn(2, 3, 24, 24)
    with torch.no_grad():
        _close(model(x), reference(x))


def test_a_network_without_tensors_loads_for_inference() -> None:
    # Found by the hostile fuzzer: `network n { input 3x8x8 }` has no parameter to ask for a device.
    import torch

    import resdsl

    network = resdsl.compile_text("network n {\n    input 3x8x8\n    stem {\n        avgpool 2x2, stride=2\n    }\n}\n")
    for engine in ("eager", "onnxruntime"):
        model = resdsl.load(network, for_inference=True, engine=engine)
        x = torch.randn(2, 3, 8, 8)
        assert torch.allclose(model(x), torch.nn.functional.avg_pool2d(x, 2, 2), atol=1e-6)


def test_a_folded_models_network_and_table_describe_what_it_computes() -> None:
    # Round 3's for_inference folded parallel paths outside the passes and patched the
    # block records: repvgg_a0's stages summed to 9,108,968 parameters for a module of
    # 8,309,384, and the model's .network still described the training network.
    model = resdsl.load("timm/repvgg_a0", for_inference=True, engine="eager")
    network = model.network
    computed = sum(parameter.numel() for parameter in model.parameters())
    assert network.num_params == computed < resdsl.compile("timm/repvgg_a0").num_params
    assert sum(stage.params for stage in network.stages) == computed
    assert sum(stage.macs for stage in network.stages) == network.macs
    assert not list(network.nodes("bn"))  # every BN folded, into a path's sum or its convolution
    table = resdsl.Table.of(network, detail="stage")
    assert table.params == computed == sum(row.params for row in table.stages)
