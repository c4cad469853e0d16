"""resdsl: a declarative language and graph compiler for residual networks.

``import resdsl`` is light: it never imports torch. ``resdsl.load`` (the torch
backend) imports it on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resdsl.compiler import compile, compile_text, shipped_specs
from resdsl.errors import CompilerBug, LimitError, ShapeError, SpecError, SpecSyntaxError, UnknownNameError, UseError
from resdsl.ir import Limits, Network

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
    "UnknownNameError",
    "UseError",
    "__version__",
    "compile",
    "compile_text",
    "load",
    "shipped_specs",
]


def load(spec: Any, **kwargs: Any) -> torch.nn.Module:
    """Compile a spec and build it as a ``torch.nn.Module`` (see resdsl.backends.torch)."""
    from resdsl.backends.torch import load as _load

    return _load(spec, **kwargs)
