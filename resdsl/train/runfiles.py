"""A run folder's files, read as untrusted input: recipe.yaml and metrics.csv may have been edited or handed over.

Everything here turns what is wrong with a file into a :class:`RunError` naming it,
never a traceback; the bounds are stated in docs/training.md ("Bounds"). Reading
never imports torch.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from resdsl.files import (
    FolderLock,
    check_target,
    lock_folder,
    make_folder,
)
from resdsl.train.textfiles import RecipeError, RunError, read_text

#: The largest metrics.csv a run folder may hold (about a million rows).
MAX_METRICS_BYTES = 64 << 20
#: The largest recipe.yaml (a run's record) read back.
MAX_RECORD_BYTES = 4 << 20

#: The files a run writes in its folder, checked (before training starts) to be absent or regular files.
RUN_FILES = ("recipe.yaml", "metrics.csv", "checkpoint.pt", "best.pt", "curves.png")


def metrics_table(path: Path, error: type[RecipeError] = RunError) -> tuple[list[str], list[dict[str, str]]]:
    """metrics.csv's header and rows (each row holds the header's fields only), checked to be a CSV table."""
    text = read_text(path, MAX_METRICS_BYTES, "metrics.csv", error)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = list(reader)
        fields = list(reader.fieldnames or [])
    except csv.Error as problem:
        raise error(f"metrics.csv is not a CSV table: {problem}", file=str(path)) from None
    if "iteration" not in fields:
        raise error("metrics.csv has no 'iteration' column", file=str(path), hint="is this a run's metrics.csv?")
    return fields, [{name: row.get(name) or "" for name in fields} for row in rows]


def iteration_of(row: dict[str, str], number: int, path: Path, error: type[RecipeError] = RunError) -> int:
    text = row.get("iteration", "").strip()
    if not text.isdigit() or len(text) > 18:  # isdigit: no sign, no underscores, no 4,300-digit integers
        raise error(f"line {number}: 'iteration' is not a whole number: {text[:40]!r}", file=str(path))
    return int(text)


def read_metrics_rows(path: Path, keep_until: int, fields: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a run's metrics.csv up to iteration `keep_until`, with the given fields only."""
    try:
        path.lstat()
    except FileNotFoundError:
        return []  # a run folder without metrics.csv: history restarts at the checkpoint
    except OSError as problem:
        raise RunError(f"cannot read metrics.csv: {problem.strerror or problem}", file=str(path)) from None
    _, rows = metrics_table(path)
    kept = []
    for number, row in enumerate(rows, start=2):
        if iteration_of(row, number, path) <= keep_until:
            kept.append({name: row.get(name, "") for name in fields})
    return kept


def claim_run_folder(out: Path, resume: bool) -> FolderLock:
    """Create and lock the run folder; refuse a folder another run holds, or files a run must not write through."""
    make_folder(out)
    lock = lock_folder(out, "run folder")
    try:
        if not resume and (out / "checkpoint.pt").exists():
            raise RunError(
                "this folder already holds a run", file=str(out), hint="continue it with --resume, or choose another"
            )
        for name in RUN_FILES:
            check_target(out / name)
    except BaseException:
        lock.release()
        raise
    return lock


def record_values(content: Any, path: Path) -> tuple[dict[str, Any], str]:
    """The recipe values and name of a run's recipe.yaml, checked to be what the trainer wrote."""
    if not isinstance(content, dict):
        raise RunError(f"recipe.yaml holds {_kind(content)}, not a run's record (a mapping)", file=str(path))
    values, name = content.get("recipe"), content.get("recipe_name")
    if not isinstance(values, dict):
        raise RunError(f"recipe.yaml's 'recipe' is {_kind(values)}, not a mapping of recipe keys", file=str(path))
    bad = [key for key in values if not isinstance(key, str)]
    if bad:
        raise RunError(f"recipe.yaml's 'recipe' has a key that is not text: {bad[0]!r}", file=str(path))
    if not isinstance(name, str) or not name or len(name) > 200:
        raise RunError("recipe.yaml's 'recipe_name' is missing or not a short text", file=str(path))
    return values, name


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "text", int: "a number", float: "a number", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


__all__ = [
    "MAX_METRICS_BYTES",
    "MAX_RECORD_BYTES",
    "RUN_FILES",
    "RunError",
    "check_checkpoint",
    "check_normalizer_fits",
    "claim_run_folder",
    "iteration_of",
    "metrics_table",
    "read_metrics_rows",
    "read_text",
    "record_values",
]


# ---------------------------------------------------------------------------
# Checkpoints: the whole structure the code reads, checked before any of it is used.

#: What ``resdsl eval`` reads of best.pt or checkpoint.pt.
EVAL_FIELDS = ("format", "model", "recipe", "recipe_name", "spec", "normalizer", "classes")
#: What ``--resume`` reads of checkpoint.pt, besides EVAL_FIELDS.
RESUME_FIELDS = ("optimizer", "scheduler", "scaler", "iteration", "seconds", "best", "window", "rng")
#: Bound on an iteration count read back (beyond any run's length; keeps arithmetic exact).
MAX_ITERATION = 1 << 53


def check_checkpoint(state: Any, path: Path, fields: Sequence[str]) -> None:
    """Raise RunError naming the first field of `fields` that is missing or not what the trainer wrote."""
    import torch

    def fail(field: str, what: str) -> RunError:
        return RunError(
            f"the checkpoint's '{field}' {what}",
            file=str(path),
            hint="a checkpoint written by `resdsl train` (checkpoint.pt to resume; best.pt or checkpoint.pt to eval)",
        )

    def is_int(value: Any, low: int = 0, high: int = MAX_ITERATION) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    def is_number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)

    def tensors(value: Any) -> bool:
        return isinstance(value, dict) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items()
        )

    missing = [field for field in fields if field not in state]
    if missing:
        raise RunError(
            f"the checkpoint lacks {', '.join(repr(f) for f in missing)}",
            file=str(path),
            hint="best.pt holds the weights only: resume from checkpoint.pt"
            if "optimizer" in missing and "model" in state
            else None,
        )
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "model": (lambda v: tensors(v) and bool(v), "is not a mapping of parameter names to tensors"),
        "recipe": (lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v), "is not a mapping of keys"),
        "recipe_name": (lambda v: isinstance(v, str) and 0 < len(v) <= 200, "is not a short text"),
        "spec": (
            lambda v: (
                isinstance(v, dict)
                and isinstance(v.get("name"), str)
                and isinstance(v.get("path"), str)
                and is_int(v.get("num_params"), 0, 1 << 62)
                and isinstance(v.get("architecture_sha256"), str)
            ),
            "lacks the network's name, path, num_params or architecture_sha256",
        ),
        "normalizer": (
            lambda v: (
                isinstance(v, dict)
                and isinstance(v.get("shift"), torch.Tensor)
                and isinstance(v.get("scale"), torch.Tensor)
                and v["shift"].is_floating_point()
                and v["scale"].is_floating_point()
                and v["shift"].dim() == 3
                and v["shift"].shape[0] == 3
                and tuple(v["scale"].shape) == (3, 1, 1)
                and bool(torch.isfinite(v["shift"]).all() and torch.isfinite(v["scale"]).all())
            ),
            "is not a shift (3 x H x W or 3 x 1 x 1) and a scale (3 x 1 x 1) of finite floats",
        ),
        "classes": (
            lambda v: isinstance(v, list) and 0 < len(v) <= 100_000 and all(isinstance(c, str) for c in v),
            "is not a list of class names",
        ),
        "optimizer": (
            lambda v: (
                isinstance(v, dict)
                and isinstance(v.get("state"), dict)
                and isinstance(v.get("param_groups"), list)
                and all(isinstance(g, dict) and isinstance(g.get("params"), list) for g in v["param_groups"])
                and all(isinstance(s, dict) and tensors(s) for s in v["state"].values())
            ),
            "is not an optimizer state (state, param_groups)",
        ),
        "scheduler": (lambda v: isinstance(v, dict) and is_int(v.get("warmup_end")), "lacks a whole 'warmup_end'"),
        "scaler": (lambda v: isinstance(v, dict), "is not a mapping"),
        "iteration": (is_int, f"is not a whole number from 0 to {MAX_ITERATION}"),
        "seconds": (lambda v: is_number(v) and v >= 0, "is not a number of seconds"),
        "best": (
            lambda v: (
                isinstance(v, dict)
                and (v.get("error") is None or is_number(v.get("error")))
                and (v.get("iteration") is None or is_int(v.get("iteration")))
                and isinstance(v.get("split"), str)
            ),
            "is not a record of the best error (error, iteration, split)",
        ),
        "window": (
            lambda v: (
                isinstance(v, dict)
                and all(
                    isinstance(v.get(k), torch.Tensor) and v[k].numel() == 1 for k in ("loss", "wrong", "warm_wrong")
                )
                and is_int(v.get("images"), 0, 1 << 62)
                and is_int(v.get("warm_images"), 0, 1 << 62)
                and is_number(v.get("seconds"))
            ),
            "is not the training window's sums",
        ),
        "rng": (_rng_state_ok, "is not the random generators' states (torch, cuda, python)"),
    }
    if state.get("format") is None:
        raise fail("format", "is missing")
    for field in fields:
        if field in checks:
            test, what = checks[field]
            if not test(state[field]):
                raise fail(field, what)


def _rng_state_ok(value: Any) -> bool:
    import torch

    if not isinstance(value, dict) or not isinstance(value.get("torch"), torch.Tensor):
        return False
    expected = torch.get_rng_state()
    if value["torch"].dtype != expected.dtype or tuple(value["torch"].shape) != tuple(expected.shape):
        return False
    cuda = value.get("cuda")
    if not isinstance(cuda, list) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        return False
    python = value.get("python")
    if not isinstance(python, list | tuple) or len(python) != 3 or not isinstance(python[1], list | tuple):
        return False
    version, internal, gauss = python
    return (
        version == 3
        and len(internal) == 625
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (1 << 32) for v in internal)
        and (gauss is None or isinstance(gauss, float))
    )


def check_normalizer_fits(normalizer_state: dict[str, Any], input_shape: Sequence[int], path: Path) -> None:
    """A checkpoint's per-pixel (3 x H x W) or per-channel (3 x 1 x 1) mean must fit the data's images."""
    shift = tuple(normalizer_state["shift"].shape)
    if shift not in ((3, 1, 1), (3, *tuple(input_shape)[1:])):
        raise RunError(
            f"the checkpoint's normalizer is for {'x'.join(map(str, shift))} images; the data's are "
            f"{'x'.join(map(str, input_shape))}",
            file=str(path),
            hint="evaluate on the data set the weights were trained on",
        )
