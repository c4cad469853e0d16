"""The shipped specs: where they are, their names, and ``use "resdsl:NAME"``.

A separate module so that the front end (which resolves ``use`` lines) and the
compiler (which resolves ``resdsl.compile("resnet50")``) share one definition
without importing each other.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from resdsl.errors import Pos, UseError, unknown

#: How a ``use`` line names a shipped file: ``use "resdsl:torchvision/resnet50"``,
#: ``use "resdsl:lib/cifar"``. The ``.res`` suffix may be left out.
USE_PREFIX = "resdsl:"
#: No shipped spec's name is longer; a longer one is refused before the OS or a spelling suggestion sees it.
MAX_NAME_BYTES = 255


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


def _shipped_files() -> list[str]:
    """Every shipped .res file, libraries included, as a ``use "resdsl:..."`` line names it."""
    root = specs_dir()
    return sorted(str(path.relative_to(root).with_suffix("")) for path in root.rglob("*.res"))


def shipped_use_target(name: str, pos: Pos) -> Path:
    """The file a ``use "resdsl:NAME"`` line imports; a UseError if there is none of that name.

    Only files inside the shipped specs directory can be named: ``..`` or an
    absolute path after the prefix is refused rather than resolved.
    """
    relative = name.removesuffix(".res")
    root = specs_dir().resolve()
    if len(relative.encode("utf-8", "replace")) > MAX_NAME_BYTES:
        raise UseError(
            f"no shipped spec has a name that long ({len(relative):,} characters)",
            pos,
            "run `resdsl list` for the shipped specs",
        )
    try:
        target = (root / f"{relative}.res").resolve()
        found = bool(relative) and not Path(relative).is_absolute() and target.is_relative_to(root) and target.is_file()
    except (OSError, RuntimeError, ValueError):  # a name part too long for the OS, a link loop
        found = False
    if not found:
        error = unknown("shipped spec", relative, _shipped_files(), pos)
        if not error.hint:
            error.hint = "run `resdsl list` for the shipped specs"
        raise UseError(error.message, pos, error.hint)
    return target


__all__ = ["USE_PREFIX", "shipped_specs", "shipped_use_target", "specs_dir"]
