"""The trainer's errors, and how it reads a text file it is handed (a recipe, a run's
record, metrics.csv): recipes and run folders share both, so both import this, not each
other. Never imports torch."""

from __future__ import annotations

from pathlib import Path

from resdsl.errors import SpecError
from resdsl.files import NotRegularFile, TooLarge, read_regular_file


class RecipeError(SpecError):
    """A recipe that cannot be used: an unknown key, a value of the wrong type, a missing file."""


class RunError(RecipeError):
    """A run folder that cannot be used as asked: a resume whose spec or recipe changed, a missing checkpoint."""


def read_text(path: Path, limit: int, what: str, error: type[RecipeError] = RunError) -> str:
    """A regular file's UTF-8 text, at most `limit` bytes; every failure is `error` naming the file."""
    try:
        data = read_regular_file(path, limit)
    except FileNotFoundError:
        raise error(f"no {what} here", file=str(path)) from None
    except NotRegularFile as problem:
        raise error(f"{what} is {problem.kind}, not a regular file", file=str(path)) from None
    except TooLarge as problem:
        raise error(f"{what} is larger than the limit of {limit:,} bytes ({problem.size:,})", file=str(path)) from None
    except OSError as problem:
        raise error(f"cannot read {what}: {problem.strerror or problem}", file=str(path)) from None
    if len(data) > limit:
        raise error(f"{what} is larger than the limit of {limit:,} bytes", file=str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{what} is not UTF-8 text (byte offset {problem.start})", file=str(path)) from None


__all__ = ["RecipeError", "RunError", "read_text"]
