"""``load(..., for_inference=True, engine=...)``: the folded model, run by the fastest engine.

Every engine starts from the same model: eval mode, each sum of parallel linear
paths folded into one convolution, each BN folded into its convolution,
channels_last weights (``fold_for_inference``). Then:

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
Inputs may have any batch size, and any height and width the eager module accepts.
"""

from __future__ import annotations

import io
import itertools
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


def _device(model: nn.Module) -> torch.device:
    # A network may hold no tensors at all (only pooling): it runs on torch's default device.
    first = next(itertools.chain(model.parameters(), model.buffers()), None)
    return first.device if first is not None else torch.get_default_device()


def prepare(model: nn.Module, network: Network, engine: str = "auto") -> nn.Module:
    """The model for inference on the chosen engine: its ``.network`` is the inference IR
    (resdsl.passes.for_inference) that it computes, and ``.engine`` names the engine."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(repr(e) for e in ENGINES)}, not {engine!r}")
    device = _device(model)
    if engine == "auto":
        engine = choose_engine(device)
    elif not installed(engine):
        raise ImportError(f"engine {engine!r} needs onnxruntime and onnx: pip install onnxruntime onnx")
    folded = fold_for_inference(model, network)
    if engine == "eager":
        result = folded
    elif engine == "onnxruntime":
        result = OnnxRuntimeModel(folded, network)
    else:
        result = InductorModel(folded)
    result.network = folded.network  # what it computes: the rewritten IR
    result.engine = engine
    return result


class OnnxRuntimeModel(nn.Module):
    """A folded model exported to ONNX and run by ONNX Runtime; called like the module.

    One session per input height and width, each exported with those sizes fixed and
    the batch dynamic: fixed sizes let ONNX Runtime plan its convolutions ahead, which
    measured faster than one session with every size dynamic. The session for the
    spec's input shape is made at once; another size costs one more export (about a
    second for ResNet-50) the first time it is seen, as inductor recompiles for it.
    """

    def __init__(self, folded: nn.Module, network: Network) -> None:
        super().__init__()
        import onnxruntime

        device = _device(folded)
        if device.type != "cpu":
            raise ValueError("the onnxruntime engine runs on the CPU; load with device='cpu' or use engine='eager'")
        self.module = folded  # kept for other input sizes; its parameters are the model's
        self.channels, *size = network.input_shape
        self.sessions: dict[tuple[int, int], Any] = {}
        self._options = _session_options(onnxruntime)
        self._session(tuple(size))

    def _session(self, size: tuple[int, int]) -> Any:
        if size not in self.sessions:
            import onnxruntime

            onnx_bytes = export_onnx(self.module, (self.channels, *size))
            self.sessions[size] = onnxruntime.InferenceSession(
                onnx_bytes, self._options, providers=["CPUExecutionProvider"]
            )
        return self.sessions[size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"expected input of shape N x {self.channels} x H x W, got {tuple(x.shape)}")
        session = self._session((int(x.shape[2]), int(x.shape[3])))
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        (output,) = session.run(None, {"input": array})
        return torch.from_numpy(output)


def _session_options(onnxruntime: Any) -> Any:
    options = onnxruntime.SessionOptions()
    # As many threads as torch uses, so that engines compare (and coexist) fairly.
    options.intra_op_num_threads = torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def export_onnx(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """The model as ONNX bytes for inputs of ``input_shape`` (C, H, W) and any batch size.

    Input ``input``, output ``output``, both with a symbolic first dimension ``batch``.
    Uses the TorchScript-based exporter: it needs no onnxscript and takes well under a
    second where the torch.export-based one took 25 s for cifar20 on this project's
    CPU machine. Three of its messages are known and harmless here, and silenced by
    exact text: that it is the legacy exporter (it is supported by every torch this
    package admits, <2.15), the exporter's own use of a helper torch deprecated, and
    that a strided slice (option A's subsampling) is not constant-folded (it is a
    runtime op either way).
    """
    import warnings

    example = torch.randn(2, *input_shape, device=_device(model))
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=ONNX_SLICE_WARNING, category=UserWarning)
        warnings.filterwarnings("ignore", message=ONNX_LEGACY_WARNING, category=DeprecationWarning)
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
