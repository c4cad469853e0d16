"""Run the curated mutants (tests/mutation/mutants.py): each planted alone in a copy of
the tree, its tests run against it, and the result reported.

    python -m tests.mutation.run                   # the CI budget: each mutant's own tests
    python -m tests.mutation.run --budget full     # also the test files that own the mutated file
    python -m tests.mutation.run --only ID [ID...] # some mutants
    python -m tests.mutation.run --check           # only that every mutant still applies

A mutant is *killed* when its tests fail (or run past the timeout), *survived* when
they pass, and *stale* when its snippet is not found exactly once in its file: the
code moved, and the list must follow it. The exit status is 1 when a mutant that is
not marked equivalent survived, or any mutant is stale; 0 otherwise.

Each worker copies the tree once into a temporary directory and plants one mutant at
a time there (restoring the file after), so the working tree is never touched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from tests.mutation.mutants import FULL_SELECTION, MUTANTS, Mutant

ROOT = Path(__file__).resolve().parents[2]
# What a copy of the tree leaves out: version control, caches, and the build outputs .gitignore names.
IGNORED = shutil.ignore_patterns(
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".ruff_cache",
    "*.egg-info",
    "build",
    "dist",
    ".venv",
    "node_modules",
)


@dataclass
class Result:
    mutant: Mutant
    status: str  # killed, survived, timeout, stale, equivalent, error
    seconds: float = 0.0
    detail: str = ""


def stale_reason(mutant: Mutant, root: Path = ROOT) -> str | None:
    """Why the mutant cannot be planted any more (None: it applies exactly once)."""
    path = root / mutant.file
    if not path.is_file():
        return f"{mutant.file} does not exist"
    count = path.read_text(encoding="utf-8").count(mutant.original)
    if count == 0:
        return f"its snippet is no longer in {mutant.file}"
    if count > 1:
        return f"its snippet occurs {count} times in {mutant.file}: make it unique"
    if mutant.original == mutant.replacement:
        return "its replacement is the original"
    return None


def selection(mutant: Mutant, budget: str) -> list[str]:
    tests = list(mutant.tests)
    if budget == "full":
        tests += [t for t in FULL_SELECTION.get(mutant.file, ()) if t not in tests]
    return tests


def _pytest(copy: Path, tests: list[str], timeout: float) -> tuple[str, str]:
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", f"ran past {timeout:g} s"
    tail = (done.stdout + done.stderr).strip().splitlines()
    summary = tail[-1] if tail else ""
    if done.returncode == 0:
        return "survived", summary
    if done.returncode in (1, 2):  # failures, or a collection error (a mutant that breaks an import)
        return "killed", summary
    if done.returncode == 5:
        return "error", f"no tests collected: the selection {tests} is stale"
    return "error", f"pytest exited {done.returncode}: {summary}"


def run_one(mutant: Mutant, copy: Path, budget: str, timeout: float) -> Result:
    if mutant.equivalent:
        return Result(mutant, "equivalent", detail=mutant.equivalent)
    reason = stale_reason(mutant, copy)
    if reason:
        return Result(mutant, "stale", detail=reason)
    path = copy / mutant.file
    original = path.read_text(encoding="utf-8")
    path.write_text(original.replace(mutant.original, mutant.replacement), encoding="utf-8")
    start = time.perf_counter()
    try:
        status, detail = _pytest(copy, selection(mutant, budget), timeout)
    finally:
        path.write_text(original, encoding="utf-8")
    return Result(mutant, status, time.perf_counter() - start, detail)


def _baseline(copy: Path, mutants: list[Mutant], budget: str, timeout: float) -> str | None:
    tests = sorted({t for m in mutants if not m.equivalent for t in selection(m, budget)})
    status, detail = _pytest(copy, tests, timeout * max(1, len(tests)))
    return None if status == "survived" else f"the unmutated tree fails its selections ({status}: {detail})"


def choose(budget: str, only: list[str]) -> list[Mutant]:
    known = {m.id: m for m in MUTANTS}
    if only:
        unknown = [i for i in only if i not in known]
        if unknown:
            raise SystemExit(f"unknown mutant ids: {', '.join(unknown)}")
        return [known[i] for i in only]
    return [m for m in MUTANTS if budget == "full" or m.ci]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", choices=("ci", "full"), default="ci")
    parser.add_argument("--only", nargs="+", default=[], metavar="ID")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds per mutant (default 240)")
    parser.add_argument("--check", action="store_true", help="only check that every mutant applies")
    parser.add_argument("--baseline", action="store_true", help="first run the selections on the unmutated tree")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTANTS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        print(f"duplicate mutant ids: {', '.join(duplicates)}")
        return 1
    # Staleness is checked over the whole list whatever the budget: a stale mutant is a
    # guard that silently stopped guarding.
    stale = [(m, stale_reason(m)) for m in MUTANTS if not m.equivalent and stale_reason(m)]
    for mutant, reason in stale:
        print(f"STALE      {mutant.id:36} {reason}")
    if args.check:
        print(f"{len(MUTANTS) - len(stale)} of {len(MUTANTS)} mutants apply")
        return 1 if stale else 0

    mutants = choose(args.budget, args.only)
    workers = max(1, args.jobs)
    copies: Queue[Path] = Queue()
    with tempfile.TemporaryDirectory(prefix="resdsl-mutants-") as temp:
        for index in range(workers):
            target = Path(temp) / f"tree{index}"
            shutil.copytree(ROOT, target, ignore=IGNORED, symlinks=True)
            copies.put(target)
        if args.baseline:
            problem = _baseline(copies.queue[0], mutants, args.budget, args.timeout)
            if problem:
                print(problem)
                return 1

        def work(mutant: Mutant) -> Result:
            copy = copies.get()
            try:
                result = run_one(mutant, copy, args.budget, args.timeout)
            finally:
                copies.put(copy)
            print(f"{result.status.upper():10} {mutant.id:36} {result.seconds:6.1f} s  {result.detail}", flush=True)
            return result

        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(work, mutants))
    return report(results, args.budget, time.perf_counter() - start, args.json, stale_elsewhere=len(stale))


def report(results: list[Result], budget: str, seconds: float, json_path: Path | None, stale_elsewhere: int) -> int:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    scored = killed + counts.get("survived", 0)
    print()
    print(f"budget {budget}: {len(results)} mutants in {seconds:.0f} s")
    print(f"score: {killed} of {scored} killed" + (f" ({100 * killed / scored:.0f}%)" if scored else ""))
    for status in ("killed", "timeout", "survived", "stale", "error", "equivalent"):
        if counts.get(status):
            print(f"  {status}: {counts[status]}")
    bad = [r for r in results if r.status in ("survived", "stale", "error")]
    for result in bad:
        print(f"{result.status}: {result.mutant.id} ({result.mutant.file}): {result.mutant.why}; {result.detail}")
    if json_path is not None:
        records = [{"id": r.mutant.id, "file": r.mutant.file, "status": r.status, "detail": r.detail} for r in results]
        json_path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return 1 if bad or stale_elsewhere else 0


if __name__ == "__main__":
    sys.exit(main())
