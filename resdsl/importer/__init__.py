"""``resdsl import``: a PyTorch network as a readable ``.res`` spec that rebuilds it exactly.

``import_model(source)`` traces the module with torch.fx (``resdsl/importer/trace.py``),
recovers blocks, stages and shortcuts from its module hierarchy
(``resdsl/importer/structure.py``) and formats the text with ``resdsl fmt``;
``verify`` builds the spec and checks it against the module (strict keys, float64
outputs in eval and train mode). ``import resdsl`` never imports this package: it
needs torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from resdsl.importer.ops import ImportFailure

if TYPE_CHECKING:
    from torch import nn

    from resdsl.importer.proof import Check

__all__ = ["ImportFailure", "import_model", "load_source", "verify"]

DEFAULT_INPUT = (3, 224, 224)


def load_source(source: str) -> tuple[nn.Module, str]:
    """The module a SOURCE names, and a network name for it: ``timm/NAME``,
    ``torchvision/NAME`` or ``package.module:callable`` (a function returning a module;
    the one place resdsl imports code, and only in this explicit form)."""
    if source.startswith("timm/"):
        name = source[len("timm/") :]
        import timm

        if name not in timm.list_models():
            close = timm.list_models(f"*{name[:4]}*")[:5]
            raise ImportFailure(
                f"timm has no model {name!r}", hint=f"did you mean one of {', '.join(close)}?" if close else None
            )
        return timm.create_model(name, pretrained=False), name
    if source.startswith("torchvision/"):
        name = source[len("torchvision/") :]
        from torchvision import models

        if name not in models.list_models():
            raise ImportFailure(
                f"torchvision has no model {name!r}", hint="`torchvision.models.list_models()` lists them"
            )
        return models.get_model(name, weights=None), name
    if ":" in source:
        module_name, _, attribute = source.partition(":")
        if not re.fullmatch(r"[A-Za-z_][\w.]*", module_name) or not re.fullmatch(r"[A-Za-z_][\w.]*", attribute):
            raise ImportFailure(f"{source!r} is not package.module:callable")
        import importlib

        try:
            value: Any = importlib.import_module(module_name)
        except ImportError as error:
            raise ImportFailure(f"cannot import {module_name}: {error}") from None
        for part in attribute.split("."):
            if not hasattr(value, part):
                raise ImportFailure(f"{module_name} has no {attribute!r}")
            value = getattr(value, part)
        from torch import nn

        model = value() if callable(value) and not isinstance(value, nn.Module) else value
        if not isinstance(model, nn.Module):
            raise ImportFailure(f"{source} gave a {type(model).__name__}, not an nn.Module")
        return model, attribute.rsplit(".", 1)[-1]
    raise ImportFailure(
        f"unknown source {source!r}",
        hint="name a timm model (timm/resnet50), a torchvision one (torchvision/resnet50) "
        "or a function returning an nn.Module (package.module:callable)",
    )


def _input_of(model: nn.Module) -> tuple[int, ...]:
    config = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = config.get("input_size") if isinstance(config, dict) else None
    return tuple(int(s) for s in size) if size else DEFAULT_INPUT


def network_name(name: str) -> str:
    text = re.sub(r"[^A-Za-z0-9_]", "_", name)
    return text if text and not text[0].isdigit() else f"net_{text}"


def import_model(
    module_or_name: nn.Module | str, *, input: str | tuple[int, ...] | None = None, name: str | None = None
) -> str:
    """The ``.res`` text of a module, or of the model a SOURCE names (see :func:`load_source`)."""
    text, _, _ = import_with_model(module_or_name, input=input, name=name)
    return text


def import_with_model(
    module_or_name: nn.Module | str, *, input: str | tuple[int, ...] | None = None, name: str | None = None
) -> tuple[str, nn.Module, tuple[int, ...]]:
    from resdsl.compiler import parse_input
    from resdsl.fmt import format_text
    from resdsl.importer.structure import recover, snake
    from resdsl.importer.trace import trace

    if isinstance(module_or_name, str):
        model, default_name = load_source(module_or_name)
    else:
        model, default_name = module_or_name, snake(type(module_or_name).__name__)
    shape = parse_input(input) if input is not None else _input_of(model)
    graph = trace(model, tuple(shape))
    text = recover(graph, network_name(name or default_name))
    return format_text(text), model, tuple(shape)


def verify(text: str, model: nn.Module, input_shape: tuple[int, ...]) -> Check:
    from resdsl.importer.proof import check

    return check(text, model, input_shape)
