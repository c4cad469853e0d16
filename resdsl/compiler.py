"""``resdsl.compile``: from a spec (a path or a shipped name) to a validated Network."""

from __future__ import annotations

import gc
from collections.abc import Sequence
from pathlib import Path

from resdsl import syntax as ast
from resdsl.errors import CompilerBug, Pos, Source, SpecError, UseError, unknown
from resdsl.evaluate import Value
from resdsl.frontend import Instance, Namespace, choose, instantiate, load, load_text
from resdsl.ir import Limits, Network
from resdsl.passes import run_passes
from resdsl.passes.expand import elaborate
from resdsl.shipped import shipped_specs, specs_dir


def find_spec(spec: str | Path) -> Path:
    """A path as given, or else a shipped spec of that name."""
    path = Path(spec)
    try:
        exists = path.exists()
    except OSError:  # a name too long for the OS: let read_spec report it as a UseError
        return path
    if isinstance(spec, Path) or path.suffix == ".res" or exists:
        return path
    shipped = specs_dir() / f"{spec}.res"
    if shipped.is_file():
        return shipped
    error = unknown("spec", str(spec), shipped_specs(), None)
    error.message = f"no spec file '{spec}' and no shipped spec of that name"
    raise error


def parse_input(value: str | Sequence[int]) -> tuple[int, ...]:
    """An input shape as ``--input`` and ``input=`` take it: ``"3x64x64"`` or ``(3, 64, 64)``.

    Raises ValueError for anything but three positive whole numbers.
    """
    if isinstance(value, str):
        parts = value.strip().lower().split("x")
        if not all(part.strip().isdigit() for part in parts):
            raise ValueError(f"expected C x H x W, such as 3x224x224, got {value!r}")
        shape = tuple(int(part) for part in parts)
    else:
        shape = tuple(value)
        if not all(isinstance(size, int) and not isinstance(size, bool) for size in shape):
            raise ValueError(f"expected three whole numbers (C, H, W), got {value!r}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"expected three positive sizes C x H x W, such as 3x224x224, got {value!r}")
    return shape


def compile(
    spec: str | Path,
    *,
    network: str | None = None,
    limits: Limits | None = None,
    input: str | Sequence[int] | None = None,
    **params: Value,
) -> Network:
    """Compile a spec file, or a shipped spec by name, into a validated :class:`Network`.

    ``network`` picks one of the file's networks; ``params`` set network parameters
    (``classes=10``); ``input`` replaces the spec's ``input`` setting (``"3x64x64"`` or
    ``(3, 64, 64)``), as ``network X = Y() with input 3x64x64`` would. Raises
    :class:`~resdsl.SpecError` for any problem with the spec, ValueError for a
    malformed ``input``.
    """
    limits = limits or Limits()
    shape = parse_input(input) if input is not None else None
    path = find_spec(spec)
    namespace = load(path, limits)
    return _compile(namespace, path.stem, network, params, limits, shape)


def compile_text(
    text: str,
    *,
    path: str = "<string>",
    network: str | None = None,
    limits: Limits | None = None,
    input: str | Sequence[int] | None = None,
    **params: Value,
) -> Network:
    """Compile spec text held in memory (``use`` paths resolve from the current directory).

    The arguments are :func:`compile`'s.
    """
    limits = limits or Limits()
    shape = parse_input(input) if input is not None else None
    namespace = load_text(text, path, limits)
    return _compile(namespace, Path(path).stem, network, params, limits, shape)


def _input_override(shape: tuple[int, ...]) -> ast.Override:
    """``with input CxHxW``: the expand pass applies it after the spec's own settings."""
    text = "x".join(map(str, shape))
    source = Source("<input override>", f"input {text}")
    pos = Pos(source, 1, 7, 1, 7 + len(text))
    return ast.Override("input", ast.Dims(shape, pos), pos)


def _elaborate(instance: Instance, name: str, path: str, pos: Pos, limits: Limits) -> Network:
    """:func:`elaborate`, with anything but a SpecError reported as the compiler's bug."""
    try:
        return elaborate(instance, name=name, path=path, pos=pos, limits=limits)
    except SpecError:
        raise
    except RecursionError as error:
        raise CompilerBug(f"elaboration recursed too deeply on {path}") from error
    except Exception as error:
        raise CompilerBug(f"internal error in elaboration on {path}: {type(error).__name__}: {error}") from error


def _compile(
    namespace: Namespace,
    stem: str,
    network: str | None,
    params: dict,
    limits: Limits,
    input_shape: tuple[int, ...] | None = None,
) -> Network:
    source = Source(namespace.path, "")
    file_pos = Pos(source, 1, 1, 1, 1)
    name = choose(namespace, stem, network, params, file_pos)
    definition, _ = namespace.networks[name]
    pos = definition.name_pos
    instance = instantiate(namespace, name, params, pos)
    if input_shape is not None:
        # Last in the list, so it wins over the spec's line and over every alias's `with input`.
        instance.overrides.append(_input_override(input_shape))
    # The passes allocate many small, acyclic objects; Python's cyclic collector
    # would rescan the growing graph again and again, making compile time grow
    # faster than the network. Nothing here creates garbage cycles worth collecting.
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = _elaborate(instance, name, namespace.path, pos, limits)
        run_passes(result)
    finally:
        if collecting:
            gc.enable()
    return result


__all__ = [
    "SpecError",
    "UseError",
    "compile",
    "compile_text",
    "find_spec",
    "parse_input",
    "shipped_specs",
    "specs_dir",
]
