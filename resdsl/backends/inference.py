"""``load(..., for_inference=True, engine=...)``: the folded model, run by the fastest engine.

Every engine starts from the same model: eval mode, each BN folded into its
convolution, channels_last weights (``fold_for_inference``). Then:

``"eager"``
    that module, run by PyTorch as it is.
``"onnxruntime"``
    the module exported to ONNX in memory (batch dimension dynamic) and run by an
    ONNX Runtime session with as many threads as torch uses. Needs ``onnxruntime``
    and ``onnx`` (the ``export`` extra brings ``onnx``; ``pip install onnxruntime``).
``"inductor"``
    ``torch.compile`` with inductor and weight freezing, compiled on the first call
    (tens of seconds for a ResNet-50 on a CPU) and again for each new input shape.
``"auto"``
    the fastest engine that is installed for the model's device, by a fixed rule
    measured by ``bench/inference.py`` (docs/performance.md): on a CPU, ONNX Runtime
    where it is installed, else eager; on a GPU, eager (inductor's gain there is the
    GPU table's ``torch.compile`` row, and its compile time is not paid silently).
    A rule rather than a probe at load time: timing engines inside ``load`` would
    make it slow and its choice depend on the machine's load at that moment.

Outputs agree with the eval model's within 1e-4 relative (tests/test_inference.py).
The input must have the network's channels and spatial size; only the batch varies.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from resdsl.backends.torch import fold_for_inference
from resdsl.ir import Network

ENGINES = ("auto", "eager", "onnxruntime", "inductor")


def installed(engine: str) -> bool:
    """Whether an engine's packages are importable (eager always is)."""
    if engine == "onnxruntime":
        try:
            import onnx  # noqa: F401  (torch.onnx.export writes through it)
            import onnxruntime  # noqa: F401
        except ImportError:
            return False
    return True


def choose_engine(device: torch.device) -> str:
    """``"auto"``'s rule (see the module's docstring and docs/performance.md)."""
    if device.type == "cpu" and installed("onnxruntime"):
        return "onnxruntime"
    return "eager"


def prepare(model: nn.Module, network: Network, engine: str = "auto") -> nn.Module:
    """The model for inference on the chosen engine; it keeps ``.network`` and gains ``.engine``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}, not {engine!r}")
    device = next(model.parameters()).device
    if engine == "auto":
        engine = choose_engine(device)
    elif not installed(engine):
        raise ImportError(f"engine {engine!r} needs onnxruntime and onnx: pip install onnxruntime onnx")
    folded = fold_for_inference(model)
    if engine == "eager":
        result = folded
    elif engine == "onnxruntime":
        result = OnnxRuntimeModel(folded, network)
    else:
        result = InductorModel(folded)
    result.network = network
    result.engine = engine
    return result


class OnnxRuntimeModel(nn.Module):
    """A folded model exported to ONNX and run by ONNX Runtime; called like the module."""

    def __init__(self, folded: nn.Module, network: Network) -> None:
        super().__init__()
        import onnxruntime

        device = next(folded.parameters()).device
        if device.type != "cpu":
            raise ValueError("the onnxruntime engine runs on the CPU; load with device='cpu' or use engine='eager'")
        self.input_shape = tuple(network.input_shape)
        self.session = onnxruntime.InferenceSession(
            export_onnx(folded, network), _session_options(onnxruntime), providers=["CPUExecutionProvider"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            shape = "x".join(map(str, self.input_shape))
            raise ValueError(f"expected input of shape N x {shape}, got {tuple(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (output,) = self.session.run(None, {"input": array})
        return torch.from_numpy(output)


def _session_options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    # As many threads as torch uses, so that engines compare (and coexist) fairly.
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def export_onnx(model: nn.Module, network: Network) -> bytes:
    """The model as ONNX bytes, with a dynamic batch dimension (input ``input``, output ``output``).

    Uses the TorchScript-based exporter: it needs no onnxscript and takes well under a
    second where the torch.export-based one took 25 s for cifar20 on this project's
    CPU machine. Two of its messages are known and harmless here, and silenced by
    exact text: that it is the legacy exporter (it is supported by every torch this
    package admits, <2.15), and that a strided slice (option A's subsampling) is not
    constant-folded (it is a runtime op either way).
    """
    import warnings

    example = torch.randn(2, *network.input_shape, device=next(model.parameters()).device)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ONNX_SLICE_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=ONNX_LEGACY_WARNING, category=DeprecationWarning)
        # The exporter's own use of a torch helper it deprecated; nothing a caller can change.
        warnings.filterwarnings("ignore", message="The feature will be removed", module=r"torch\.onnx")
        torch.onnx.export(
            model,
            (example,),
            buffer,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
        )
    return buffer.getvalue()


#: The TorchScript exporter's note on option A's strided slices (see export_onnx).
ONNX_SLICE_WARNING = r"Constant folding - Only steps=1 can be constant folded"
#: The TorchScript exporter's note that torch.export's exporter is now the default (see export_onnx).
ONNX_LEGACY_WARNING = r"You are using the legacy TorchScript-based ONNX export"


class InductorModel(nn.Module):
    """A folded model compiled by inductor with frozen weights; called like the module."""

    def __init__(self, folded: nn.Module) -> None:
        super().__init__()
        self.module = folded
        # Not a registered submodule: it wraps `module`, whose parameters would otherwise appear twice.
        object.__setattr__(self, "compiled", torch.compile(folded, backend="inductor", options={"freezing": True}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Freezing folds the weights in as constants, which inductor allows only without autograd.
        with torch.no_grad():
            return self.compiled(x.contiguous(memory_format=torch.channels_last))


__all__ = ["ENGINES", "InductorModel", "OnnxRuntimeModel", "choose_engine", "export_onnx", "installed", "prepare"]
