"""Generated mutants: cosmic-ray's operators over resdsl's core, each run against the tests that cover it.

    python -m tests.mutation.generated                 # CI: a fixed sample of SAMPLE mutants
    python -m tests.mutation.generated --all           # every generated mutant (hours; docs/testing.md)
    python -m tests.mutation.generated --sample 40     # a larger fixed sample
    python -m tests.mutation.generated --list          # how many mutants each file has
    python -m tests.mutation.generated --map           # rebuild the coverage map (tests/mutation/coverage.json)

The curated list (tests/mutation/mutants.py) measures the tests it was written beside;
these mutants come from a tool that knows nothing of the project. cosmic-ray's
operators (a comparison, an arithmetic or boolean operator, a number or a constant
replaced, a loop that never runs) find every place in FILES where one applies; a
mutant is that one change. Which tests run against it comes from coverage, not from a
hand-kept list: ``--map`` runs MAP_TESTS under coverage with one context per test and
records, for each line of FILES, the tests that executed it; a mutant runs the tests
of its line (at most MAX_TESTS of them, the fastest first); a line that runs at import
(no test's context holds it) gets the tests of its file. A mutant in a file no test
executes is *uncovered*, scored as survived: no test can see it.

The sample is deterministic: mutants are ordered by a hash of their file, line,
operator and occurrence, and the first SAMPLE are taken, so that CI runs the same
mutants until the code they sit in changes. Each worker copies the tree once and
plants one mutant at a time there, as tests/mutation/run.py does: the working tree is
never touched. Exit 1 when a mutant survives that docs/testing.md does not class.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from queue import Queue

from tests.mutation.run import IGNORED

ROOT = Path(__file__).resolve().parents[2]
COVERAGE_MAP = ROOT / "tests" / "mutation" / "coverage.json"
TESTING_DOC = ROOT / "docs" / "testing.md"

#: What is mutated: the core (the issue's 90% target) first, then the rest of what it names.
CORE = (
    "resdsl/ir.py",
    "resdsl/layers.py",
    "resdsl/passes/cost.py",
    "resdsl/passes/expand.py",
    "resdsl/passes/naming.py",
    "resdsl/passes/parallel_paths.py",
    "resdsl/passes/shapes.py",
    "resdsl/passes/shortcuts.py",
    "resdsl/passes/structure.py",
    "resdsl/passes/values.py",
    "resdsl/backends/torch.py",
    "resdsl/backends/torch_modules.py",
)
OTHERS = (
    "resdsl/evaluate.py",
    "resdsl/fmt.py",
    "resdsl/lsp/analysis.py",
    "resdsl/lsp/positions.py",
    "resdsl/train/loop.py",
    "resdsl/train/recipes.py",
)
FILES = CORE + OTHERS

#: The tests the coverage map is built from: every test file that exercises FILES and
#: runs in a few minutes (the slow-marked fuzz and zoo runs are left out: they cover
#: the same lines as the fast tests, more slowly).
MAP_TESTS = (
    "tests/test_ir.py",
    "tests/test_kinds.py",
    "tests/test_language.py",
    "tests/test_language2.py",
    "tests/test_language3.py",
    "tests/test_survivors.py",
    "tests/test_survivors2.py",
    "tests/test_oracle.py",
    "tests/test_oracle_values.py",
    "tests/test_parallel_paths.py",
    "tests/test_torch_backend.py",
    "tests/test_specs.py",
    "tests/test_fmt.py",
    "tests/test_lsp.py",
    "tests/test_train_options.py",
    "tests/test_train_recipes.py",
    "tests/test_train_step.py",
)

#: cosmic-ray's operators that make a bug a developer would write; the others (a '+'
#: made a '<<', an '==' made an 'is') mostly make code that cannot run at all.
OPERATORS = (
    "core/ReplaceComparisonOperator_Lt_LtE",
    "core/ReplaceComparisonOperator_LtE_Lt",
    "core/ReplaceComparisonOperator_Gt_GtE",
    "core/ReplaceComparisonOperator_GtE_Gt",
    "core/ReplaceComparisonOperator_Eq_NotEq",
    "core/ReplaceComparisonOperator_NotEq_Eq",
    "core/ReplaceBinaryOperator_Add_Sub",
    "core/ReplaceBinaryOperator_Sub_Add",
    "core/ReplaceBinaryOperator_Mul_FloorDiv",
    "core/ReplaceBinaryOperator_FloorDiv_Mul",
    "core/ReplaceBinaryOperator_Div_Mul",
    "core/ReplaceAndWithOr",
    "core/ReplaceOrWithAnd",
    "core/ReplaceTrueWithFalse",
    "core/ReplaceFalseWithTrue",
    "core/AddNot",
    "core/NumberReplacer",
    "core/ZeroIterationForLoop",
)

#: The CI sample: a few minutes of tests on a 2-core machine.
SAMPLE = 12
#: Tests run against one mutant, at most: a line that 300 tests execute is as well
#: judged by the fastest 25 of them.
MAX_TESTS = 25


@dataclass(frozen=True)
class Generated:
    file: str
    line: int
    operator: str
    occurrence: int  # cosmic-ray's index of this operator's positions in the file

    @property
    def id(self) -> str:
        return f"{self.file}:{self.line}:{self.operator.removeprefix('core/')}:{self.occurrence}"

    @property
    def order(self) -> str:
        return hashlib.sha256(self.id.encode("utf-8")).hexdigest()


def generate(files: tuple[str, ...] = FILES, root: Path = ROOT) -> list[Generated]:
    """Every mutant cosmic-ray's OPERATORS make in `files`, in file order."""
    from cosmic_ray.ast import ast_nodes, get_ast_from_path
    from cosmic_ray.plugins import get_operator

    found = []
    for file in files:
        module = get_ast_from_path(root / file)
        for name in OPERATORS:
            operator = get_operator(name)()
            occurrence = 0
            for node in ast_nodes(module):
                for start, _ in operator.mutation_positions(node):
                    found.append(Generated(file, start[0], name, occurrence))
                    occurrence += 1
    return found


def mutated_source(mutant: Generated, root: Path) -> tuple[str, str]:
    """(original, mutated) text of the mutant's file under `root`."""
    from cosmic_ray.mutating import mutate_code
    from cosmic_ray.plugins import get_operator

    original = (root / mutant.file).read_text(encoding="utf-8")
    mutated = mutate_code(original, get_operator(mutant.operator)(), mutant.occurrence)
    if mutated is None or mutated == original:
        raise ValueError(f"{mutant.id} does not apply")
    return original, mutated


# The coverage map ---------------------------------------------------------------------------


def build_map(tests: tuple[str, ...] = MAP_TESTS, jobs: int = 2) -> dict:
    """Run `tests` under coverage, one context per test, and map each line of FILES to its tests."""
    import coverage

    with tempfile.TemporaryDirectory(prefix="resdsl-coverage-") as temp:
        data_file = Path(temp) / ".coverage"
        report = Path(temp) / "durations.txt"
        command = [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--cov=resdsl", "--cov-context=test",
            "--cov-report=", "--durations=0", "--durations-min=0", "-n", str(jobs), *tests,
        ]  # fmt: skip
        env = dict(os.environ, COVERAGE_FILE=str(data_file), PYTHONPATH=str(ROOT))
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        report.write_text(done.stdout)
        if done.returncode not in (0, 1):
            raise SystemExit(
                f"the coverage run failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        seconds: dict[str, float] = {}
        for line in done.stdout.splitlines():
            match = re.match(r"([\d.]+)s (call|setup|teardown)\s+(\S+)", line)
            if match:
                seconds[match.group(3)] = seconds.get(match.group(3), 0.0) + float(match.group(1))
        data = coverage.CoverageData(basename=str(data_file))
        data.combine_parallel_data = True
        coverage.Coverage(data_file=str(data_file)).combine(strict=False)
        data.read()
        names: dict[str, int] = {}
        lines: dict[str, dict[str, list[int]]] = {}
        for measured in data.measured_files():
            file = Path(measured).resolve().relative_to(ROOT).as_posix() if Path(measured).is_absolute() else measured
            if file not in FILES:
                continue
            per_line: dict[str, list[int]] = {}
            for number, contexts in (data.contexts_by_lineno(measured) or {}).items():
                ids = sorted({context.split("|")[0] for context in contexts if context})
                if ids:
                    per_line[str(number)] = sorted(names.setdefault(i, len(names)) for i in ids)
            lines[file] = per_line
    ordered = sorted(names, key=names.get)
    durations = [seconds.get(test, 0.0) for test in ordered]
    # Only the fastest tests of a line are ever run (MAX_TESTS): keep twice as many, not all.
    for per_line in lines.values():
        for number, indices in per_line.items():
            per_line[number] = sorted(sorted(indices, key=lambda i: (durations[i], ordered[i]))[: 2 * MAX_TESTS])
    return {
        "tests": ordered,
        "seconds": [round(seconds.get(test, 0.0), 3) for test in ordered],
        "map_tests": list(tests),
        "lines": lines,
    }


def load_map() -> dict:
    if not COVERAGE_MAP.is_file():
        raise SystemExit(f"no {COVERAGE_MAP.relative_to(ROOT)}: run `python -m tests.mutation.generated --map`")
    return json.loads(COVERAGE_MAP.read_text(encoding="utf-8"))


def covering_tests(mutant: Generated, coverage_map: dict) -> list[str]:
    """The tests that executed the mutant's line, the fastest MAX_TESTS of them.

    A line that runs when its module is imported (a decorator, a table of constants)
    runs before any test, so no test's context holds it: such a line, and any line no
    test executed, gets the tests that executed any line of its file.
    """
    per_line = coverage_map["lines"].get(mutant.file, {})
    indices = per_line.get(str(mutant.line)) or sorted({i for tests in per_line.values() for i in tests})
    seconds = coverage_map["seconds"]
    chosen = sorted(indices, key=lambda i: (seconds[i], coverage_map["tests"][i]))[:MAX_TESTS]
    return [coverage_map["tests"][i] for i in chosen]


# Running ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    mutant: Generated
    status: str  # killed, survived, uncovered, timeout, error
    seconds: float = 0.0
    detail: str = ""


def run_mutant(mutant: Generated, copy: Path, coverage_map: dict, timeout: float) -> Outcome:
    tests = covering_tests(mutant, coverage_map)
    if not tests:
        return Outcome(mutant, "uncovered", detail="no test in the coverage map executes its file")
    try:
        original, mutated = mutated_source(mutant, copy)
    except ValueError as error:
        return Outcome(mutant, "error", detail=str(error))
    path = copy / mutant.file
    path.write_text(mutated, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(copy), PYTHONDONTWRITEBYTECODE="1")
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Outcome(mutant, "timeout", time.perf_counter() - start, f"ran past {timeout:g} s")
    finally:
        path.write_text(original, encoding="utf-8")
    tail = (done.stdout + done.stderr).strip().splitlines()
    summary = tail[-1] if tail else ""
    if done.returncode == 0:
        return Outcome(mutant, "survived", time.perf_counter() - start, summary)
    if done.returncode in (1, 2):
        return Outcome(mutant, "killed", time.perf_counter() - start, summary)
    if done.returncode == 4 and "found no collectors" in done.stdout + done.stderr:
        # A test module that no longer imports (a stale test id reads "not found" instead).
        return Outcome(mutant, "killed", time.perf_counter() - start, "a test module fails to collect")
    return Outcome(mutant, "error", time.perf_counter() - start, f"pytest exited {done.returncode}: {summary}")


def classed_in_docs() -> dict[str, str]:
    """Survivors docs/testing.md classes: id -> 'equivalent: why' or 'open: why' (its table's rows)."""
    text = TESTING_DOC.read_text(encoding="utf-8") if TESTING_DOC.is_file() else ""
    classes = {}
    for row in re.findall(r"^\| `([^`]+)` \| (equivalent|open|killed-by-new-test) \|", text, flags=re.M):
        classes[row[0]] = row[1]
    return classes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation.generated", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=SAMPLE, help=f"how many mutants (default {SAMPLE})")
    parser.add_argument("--all", action="store_true", help="every generated mutant")
    parser.add_argument("--core", action="store_true", help="only the core's files")
    parser.add_argument("--list", action="store_true", help="count the mutants of each file, run none")
    parser.add_argument("--map", action="store_true", help="rebuild the coverage map, run none")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    parser.add_argument("--only", nargs="+", default=[], metavar="ID", help="these mutants (ids as printed)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    if args.map:
        coverage_map = build_map(jobs=args.jobs)
        temporary = COVERAGE_MAP.with_name(f".{COVERAGE_MAP.name}.tmp")
        temporary.write_text(json.dumps(coverage_map, separators=(",", ":")) + "\n", encoding="utf-8")
        os.replace(temporary, COVERAGE_MAP)
        print(f"wrote {COVERAGE_MAP.relative_to(ROOT)}: {len(coverage_map['tests'])} tests")
        return 0
    mutants = generate(CORE if args.core else FILES)
    if args.list:
        for file in CORE + OTHERS:
            print(f"{sum(m.file == file for m in mutants):6}  {file}")
        print(f"{len(mutants):6}  in all")
        return 0
    chosen = mutants if args.all else sorted(mutants, key=lambda m: m.order)[: args.sample]
    if args.only:
        known = {m.id: m for m in mutants}
        unknown = [i for i in args.only if i not in known]
        if unknown:
            raise SystemExit(f"unknown mutant ids: {', '.join(unknown)}")
        chosen = [known[i] for i in args.only]
    coverage_map = load_map()
    classes = classed_in_docs()
    workers = max(1, args.jobs)
    copies: Queue[Path] = Queue()
    with tempfile.TemporaryDirectory(prefix="resdsl-generated-") as temp:
        for index in range(workers):
            target = Path(temp) / f"tree{index}"
            shutil.copytree(ROOT, target, ignore=IGNORED, symlinks=True)
            copies.put(target)

        def work(mutant: Generated) -> Outcome:
            copy = copies.get()
            try:
                outcome = run_mutant(mutant, copy, coverage_map, args.timeout)
            finally:
                copies.put(copy)
            print(f"{outcome.status.upper():10} {mutant.id:60} {outcome.seconds:6.1f} s  {outcome.detail}", flush=True)
            return outcome

        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            outcomes = list(pool.map(work, chosen))
    return report(outcomes, classes, time.perf_counter() - start, args.json)


def report(outcomes: list[Outcome], classes: dict[str, str], seconds: float, json_path: Path | None) -> int:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    equivalent = [
        o for o in outcomes if o.status in ("survived", "uncovered") and classes.get(o.mutant.id) == "equivalent"
    ]
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    scored = killed + counts.get("survived", 0) + counts.get("uncovered", 0) - len(equivalent)
    print()
    print(f"{len(outcomes)} generated mutants in {seconds:.0f} s")
    print(f"score: {killed} of {scored} non-equivalent killed" + (f" ({100 * killed / scored:.0f}%)" if scored else ""))
    for status in ("killed", "timeout", "survived", "uncovered", "error"):
        if counts.get(status):
            print(f"  {status}: {counts[status]}")
    unclassed = [o for o in outcomes if o.status in ("survived", "uncovered", "error") and o.mutant.id not in classes]
    for outcome in unclassed:
        print(f"{outcome.status}, not classed in docs/testing.md: {outcome.mutant.id}; {outcome.detail}")
    if json_path is not None:
        records = [
            {"id": o.mutant.id, "status": o.status, "class": classes.get(o.mutant.id), "detail": o.detail}
            for o in outcomes
        ]
        json_path.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return 1 if unclassed else 0


if __name__ == "__main__":
    sys.exit(main())
