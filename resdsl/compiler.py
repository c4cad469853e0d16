"""``resdsl.compile``: from a spec (a path or a shipped name) to a validated Network."""

from __future__ import annotations

import gc
from functools import cache
from pathlib import Path

import networkx as nx

from resdsl.errors import Pos, Source, SpecError, UseError, unknown
from resdsl.evaluate import Value
from resdsl.frontend import Namespace, choose, instantiate, load, load_text
from resdsl.ir import Limits, Network, Settings
from resdsl.passes import run_passes


@cache
def specs_dir() -> Path:
    """The shipped specs: specs/ in a source checkout, resdsl/specs/ in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "specs", here.parent / "specs"):
        if candidate.is_dir():
            return candidate
    return here / "specs"


def shipped_specs() -> list[str]:
    """Names of the shipped specs, as ``compile`` accepts them (``resnet50``, ``torchvision/resnet50``)."""
    root = specs_dir()
    return sorted(
        str(path.relative_to(root).with_suffix(""))
        for path in root.rglob("*.res")
        if "lib" not in path.relative_to(root).parts
    )


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


def compile(
    spec: str | Path,
    *,
    network: str | None = None,
    limits: Limits | None = None,
    **params: Value,
) -> Network:
    """Compile a spec file, or a shipped spec by name, into a validated :class:`Network`.

    ``network`` picks one of the file's networks; ``params`` set network parameters
    (``classes=10``). Raises :class:`~resdsl.SpecError` for any problem with the spec.
    """
    limits = limits or Limits()
    path = find_spec(spec)
    namespace = load(path, limits)
    return _compile(namespace, path.stem, network, params, limits)


def compile_text(
    text: str,
    *,
    path: str = "<string>",
    network: str | None = None,
    limits: Limits | None = None,
    **params: Value,
) -> Network:
    """Compile spec text held in memory (``use`` paths resolve from the current directory)."""
    limits = limits or Limits()
    namespace = load_text(text, path, limits)
    return _compile(namespace, Path(path).stem, network, params, limits)


def _compile(namespace: Namespace, stem: str, network: str | None, params: dict, limits: Limits) -> Network:
    source = Source(namespace.path, "")
    file_pos = Pos(source, 1, 1, 1, 1)
    name = choose(namespace, stem, network, params, file_pos)
    definition, _ = namespace.networks[name]
    pos = definition.name_pos
    instance = instantiate(namespace, name, params, pos)
    result = Network(
        name=name,
        graph=nx.DiGraph(),
        settings=Settings((), "B"),
        path=namespace.path,
        pos=pos,
        limits=limits,
        instance=instance,
    )
    # The passes allocate many small, acyclic objects; Python's cyclic collector
    # would rescan the growing graph again and again, making compile time grow
    # faster than the network. Nothing here creates garbage cycles worth collecting.
    collecting = gc.isenabled()
    gc.disable()
    try:
        run_passes(result)
    finally:
        if collecting:
            gc.enable()
    result.instance = None
    return result


__all__ = ["SpecError", "UseError", "compile", "compile_text", "find_spec", "shipped_specs", "specs_dir"]
