"""resdsl: a declarative language and graph compiler for residual networks.

``import resdsl`` is light: it never imports torch. ``resdsl.load`` (the torch
backend) imports it on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resdsl.compiler import compile, compile_text, shipped_specs
from resdsl.errors import (
    CompilerBug,
    LimitError,
    ShapeError,
    SpecError,
    SpecSyntaxError,
    SpecWarning,
    UnknownNameError,
    UseError,
)
from resdsl.evaluate import Value
from resdsl.features import FeatureInfo
from resdsl.ir import Limits, Network
from resdsl.table import Table

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

__all__ = [
    "CompilerBug",
    "FeatureInfo",
    "LimitError",
    "Limits",
    "Network",
    "ShapeError",
    "SpecError",
    "SpecSyntaxError",
    "SpecWarning",
    "Table",
    "UnknownNameError",
    "UseError",
    "__version__",
    "compile",
    "compile_text",
    "export",
    "feature_info",
    "import_model",
    "load",
    "shipped_specs",
]


def load(
    spec: str | Path | Network,
    *,
    network: str | None = None,
    weights: str | Path | Mapping[str, Any] | None = None,
    skip: Sequence[str] = (),
    for_inference: bool = False,
    engine: str = "auto",
    zero_init_residual: bool | None = None,
    checkpoint: str | None = None,
    device: torch.device | str | None = None,
    limits: Limits | None = None,
    input: str | Sequence[int] | None = None,
    allow_other_network: bool = False,
    features: Sequence[str] | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | None = None,
    **params: Value,
) -> torch.nn.Module:
    """Compile a spec and build it as a ``torch.nn.Module`` (imports torch on first use).

    spec
        a ``.res`` path, a shipped spec's name (``"resnet50"``, ``"torchvision/resnet50"``;
        ``resdsl list`` shows them) or a compiled :class:`Network`.
    network, params
        which network of the file, and its parameters (``classes=10``), as for :func:`compile`.
    input
        replaces the spec's input shape: ``"3x64x64"`` or ``(3, 64, 64)``.
    weights
        a state dict, a ``.safetensors`` file or a ``torch.save`` file (read with
        ``weights_only=True``). Keys and shapes must fit exactly, or a
        :class:`WeightsError` lists what does not and suggests the shipped spec whose
        keys the checkpoint has. A run's ``best.pt`` or ``checkpoint.pt`` (``resdsl
        train``) loads too: its recorded network must be this one (every layer's name,
        kind, shape and inputs), or a :class:`WeightsError` names both.
    allow_other_network
        load a run checkpoint into a network other than the one it recorded (the check
        is also off when ``skip`` names modules: fine-tuning changes the network).
    skip
        modules whose weights are not loaded (they keep their initialisation), for
        fine-tuning with a new head: ``load("torchvision/resnet50", classes=10,
        weights=state, skip=("fc",))``.
    for_inference
        eval mode, BN folded into the convolutions, channels_last, run by ``engine``.
    engine
        with ``for_inference``: ``"auto"`` (the fastest installed engine for the
        device: ONNX Runtime on a CPU where installed, else eager), ``"eager"``,
        ``"onnxruntime"`` or ``"inductor"``. See docs/torch.md.
    zero_init_residual
        zero the last BN of each residual branch (default: the spec's setting).
    checkpoint
        activation checkpointing in training: ``"none"``, ``"stage"`` or ``"block"``.
    device
        where the tensors are allocated (default: torch's default device).
    limits
        :class:`Limits`; ``max_params`` is checked before any tensor is allocated.
    features
        names of feature maps (stages such as ``"conv4_x"``, ``"stem"``, top-level layers
        by module name): the module returns them as a dict by name, and computes
        nothing after the last (docs/torch.md, "Backbones").
    features_only, out_indices
        the module returns a list of the stages' outputs, those at ``out_indices``
        (all by default), as timm's ``features_only=True`` models do.

    The module's ``network`` attribute is the compiled :class:`Network`
    (``model.network.summary()``, ``resdsl.Table.of(model.network)``). A whole model
    also has timm's ``forward_features``, ``forward_head``, ``reset_classifier`` and
    ``num_features``; a feature extractor has ``feature_info`` (:func:`feature_info`
    gives the same without building anything).
    """
    from resdsl.backends.loading import load as _load

    extractor = features is not None or features_only or out_indices is not None
    if extractor and for_inference:
        raise ValueError("features and for_inference do not combine: build the extractor, then export it")
    model = _load(
        spec,
        network=network,
        weights=weights,
        skip=(skip,) if isinstance(skip, str) else tuple(skip),
        for_inference=for_inference,
        engine=engine,
        zero_init_residual=zero_init_residual,
        checkpoint=checkpoint,
        device=device,
        limits=limits,
        input=input,
        allow_other_network=allow_other_network,
        **params,
    )
    if for_inference:
        return model
    from resdsl.backends.features import attach, feature_extractor

    if extractor:
        return feature_extractor(model, model.network, features, out_indices, as_list=features is None)
    return attach(model)


def feature_info(
    spec: str | Path | Network,
    features: Sequence[str] | None = None,
    out_indices: Sequence[int] | None = None,
    **params: Value,
) -> FeatureInfo:
    """The channels, reduction, shape and module of each feature map that ``load(spec,
    features=...)`` (or ``features_only=True, out_indices=...``) returns, from the
    compiled network alone: nothing is built and torch is not imported. ``params`` are
    :func:`compile`'s (``input="3x64x64"``, ``classes=10``)."""
    from resdsl.features import feature_info as _feature_info

    network = spec if isinstance(spec, Network) else compile(spec, **params)
    return _feature_info(network, features, out_indices)


def export(model: Any, path: str | Path, *, network: Network | None = None, example: Any = None) -> None:
    """Save a model that :func:`load` built in the format `path`'s suffix names: ``.pt``,
    ``.safetensors`` (state dicts), ``.pt2`` (torch.export), ``.onnx``, ``.py`` (standalone
    source). The table is ``resdsl.backends.exports.EXPORTERS``, which ``resdsl build -o``
    uses too."""
    from resdsl.backends.exports import export as _export

    _export(model, path, network=network, example=example)


def _network_svg(network: Network) -> str | None:
    """Jupyter draws a network inline (block detail); None where Graphviz's dot is missing."""
    import shutil

    from resdsl.backends.draw import to_dot

    if shutil.which("dot") is None:
        return None
    return to_dot([network], detail="block").pipe(format="svg").decode("utf-8")


# Set here rather than in resdsl.ir, so that the IR does not import the backend that draws it.
Network._repr_svg_ = _network_svg  # type: ignore[attr-defined]

def import_model(
    module_or_name: torch.nn.Module | str, *, input: str | Sequence[int] | None = None, name: str | None = None
) -> str:
    """The ``.res`` text of a PyTorch network (imports torch on first use): a module, or
    ``"timm/NAME"``, ``"torchvision/NAME"`` or ``"package.module:callable"`` (the one
    place resdsl runs code of yours). Blocks, stages and shortcuts come from its module
    hierarchy; labels give its ``state_dict`` keys. ``resdsl.importer.verify`` checks
    the text against the module (docs/import.md); a construct the language lacks is a
    :class:`SpecError` naming it and its line."""
    from resdsl.importer import import_model as _import_model

    return _import_model(module_or_name, input=tuple(input) if isinstance(input, list) else input, name=name)
