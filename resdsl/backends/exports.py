"""Exports: one table from a file's suffix to what writes it, for ``resdsl build -o``,
``resdsl.export`` and any tool that saves a model.

Every exporter writes through :func:`resdsl.files.write_file` (a temporary file renamed
over the target, never through a link). ``metadata`` is a JSON text recorded under
:data:`METADATA_KEY` where the format has room for it (safetensors, .pt2, ONNX): a run's
input normalisation, for instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resdsl.files import check_target, write_file
from resdsl.ir import Network

#: The metadata key under which exports record what a run did to its input.
METADATA_KEY = "resdsl.input_normalization"


@dataclass(frozen=True)
class Exporter:
    """How one suffix is written."""

    suffix: str
    what: str  # what the file holds, as `resdsl build --help` says it
    packages: tuple[str, ...]  # modules it needs beyond torch
    install: str  # the pip line that brings them
    write: Callable[[Any, Network, Any, Path, str | None], None]
    dynamic_batch: bool = False  # the file takes any batch size
    records_metadata: bool = False

    def available(self) -> bool:
        import importlib.util

        return all(importlib.util.find_spec(package) is not None for package in self.packages)


def _write_pt(model: Any, network: Network, example: Any, path: Path, metadata: str | None) -> None:
    import torch

    write_file(path, lambda handle: torch.save(model.state_dict(), handle))


def _write_safetensors(model: Any, network: Network, example: Any, path: Path, metadata: str | None) -> None:
    from safetensors.torch import save

    state = {key: value.contiguous() for key, value in model.state_dict().items()}
    write_file(path, save(state, metadata={METADATA_KEY: metadata} if metadata else None))


def _write_pt2(model: Any, network: Network, example: Any, path: Path, metadata: str | None) -> None:
    import torch

    # The batch dimension is symbolic. torch.export specialises a dimension whose example
    # size is 1, so the example it traces has at least two samples.
    example = example.expand(max(2, example.shape[0]), *example.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    extra = {METADATA_KEY: metadata} if metadata else None
    write_file(path, lambda handle: torch.export.save(program, handle, extra_files=extra))


def _write_py(model: Any, network: Network, example: Any, path: Path, metadata: str | None) -> None:
    from resdsl.backends.torch import export_source

    write_file(path, export_source(network))


def _write_onnx(model: Any, network: Network, example: Any, path: Path, metadata: str | None) -> None:
    from resdsl.backends.inference import export_onnx

    content = export_onnx(model, network.input_shape)
    if metadata:
        import onnx

        proto = onnx.load_from_string(content)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, metadata
        content = proto.SerializeToString()
    write_file(path, content)


EXPORTERS: dict[str, Exporter] = {
    exporter.suffix: exporter
    for exporter in (
        Exporter(".pt", "a state dict (torch.save)", (), "", _write_pt),
        Exporter(
            ".safetensors",
            "a state dict (safetensors)",
            ("safetensors",),
            "pip install safetensors",
            _write_safetensors,
            records_metadata=True,
        ),
        Exporter(".pt2", "a torch.export program", (), "", _write_pt2, dynamic_batch=True, records_metadata=True),
        Exporter(
            ".onnx",
            "an ONNX model",
            ("onnx", "onnxscript"),
            "pip install onnx onnxscript",
            _write_onnx,
            dynamic_batch=True,
            records_metadata=True,
        ),
        Exporter(".py", "a standalone PyTorch source file (imports only torch)", (), "", _write_py),
    )
}


def exporter_for(path: str | Path) -> Exporter:
    """The exporter of a path's suffix; a ValueError naming the known suffixes otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in EXPORTERS:
        raise ValueError(f"cannot tell the format of '{path}': use one of {', '.join(EXPORTERS)}")
    return EXPORTERS[suffix]


def export(
    model: Any,
    path: str | Path,
    *,
    network: Network | None = None,
    example: Any = None,
    metadata: str | None = None,
) -> None:
    """Write `model` (built by resdsl; its ``.network`` unless `network` is given) to
    `path` in the format its suffix names. `example` is an input batch for the traced
    formats (.pt2; default: one random input of the network's shape)."""
    exporter = exporter_for(path)
    if not exporter.available():
        raise ImportError(f"saving {exporter.suffix} needs {', '.join(exporter.packages)}: {exporter.install}")
    network = network if network is not None else model.network
    if example is None:
        import torch

        example = torch.randn(2, *network.input_shape)
    target = Path(path)
    check_target(target)
    exporter.write(model, network, example, target, metadata)


__all__ = ["EXPORTERS", "METADATA_KEY", "Exporter", "export", "exporter_for"]
