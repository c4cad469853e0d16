"""resdsl: a declarative language and graph compiler for residual networks.

``import resdsl`` is light: it never imports torch. ``resdsl.load`` (the torch
backend) imports it on first use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resdsl.compiler import compile, compile_text, shipped_specs
from resdsl.errors import CompilerBug, LimitError, ShapeError, SpecError, SpecSyntaxError, UnknownNameError, UseError
from resdsl.evaluate import Value
from resdsl.ir import Limits, Network
from resdsl.table import Table

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

__all__ = [
    "CompilerBug",
    "LimitError",
    "Limits",
    "Network",
    "ShapeError",
    "SpecError",
    "SpecSyntaxError",
    "Table",
    "UnknownNameError",
    "UseError",
    "__version__",
    "compile",
    "compile_text",
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

    The module's ``network`` attribute is the compiled :class:`Network`
    (``model.network.summary()``, ``resdsl.Table.of(model.network)``).
    """
    from resdsl.backends.torch import load as _load

    return _load(
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
