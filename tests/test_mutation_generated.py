"""tests/mutation/generated.py makes its mutants from cosmic-ray and runs the tests coverage found for each."""

from __future__ import annotations

import pytest

pytest.importorskip("cosmic_ray", reason="cosmic-ray is in the [test] extra")

from tests.mutation import generated

SMALL = ("resdsl/passes/shapes.py", "resdsl/passes/cost.py")  # the whole list takes minutes to enumerate


def test_each_generated_mutant_changes_its_own_line() -> None:
    assert all((generated.ROOT / file).is_file() for file in generated.FILES)
    mutants = generated.generate(SMALL)
    assert {mutant.file for mutant in mutants} == set(SMALL)
    assert len({mutant.id for mutant in mutants}) == len(mutants)
    for mutant in mutants:
        original, mutated = generated.mutated_source(mutant, generated.ROOT)
        assert mutated != original
        changed = [n for n, (a, b) in enumerate(zip(original.splitlines(), mutated.splitlines()), 1) if a != b]
        assert changed == [mutant.line], (mutant.id, changed)


def test_the_sample_is_fixed_and_spread() -> None:
    first = sorted(generated.generate(SMALL), key=lambda m: m.order)[:10]
    again = sorted(generated.generate(SMALL), key=lambda m: m.order)[:10]
    assert first == again
    assert len({mutant.file for mutant in first}) > 1


def test_tests_are_chosen_by_the_lines_they_executed() -> None:
    coverage_map = {
        "tests": ["tests/a.py::slow", "tests/a.py::fast", "tests/b.py::other"],
        "seconds": [9.0, 0.5, 1.0],
        "lines": {"resdsl/ir.py": {"10": [0, 1], "11": [2]}},
    }
    mutant = generated.Generated("resdsl/ir.py", 10, "core/AddNot", 0)
    assert generated.covering_tests(mutant, coverage_map) == ["tests/a.py::fast", "tests/a.py::slow"]
    # A line no test's context holds (one run at import) gets the tests of its file.
    import_time = generated.Generated("resdsl/ir.py", 12, "core/AddNot", 0)
    assert generated.covering_tests(import_time, coverage_map) == [
        "tests/a.py::fast",
        "tests/b.py::other",
        "tests/a.py::slow",
    ]
    assert generated.covering_tests(generated.Generated("resdsl/fmt.py", 1, "core/AddNot", 0), coverage_map) == []


def test_the_committed_coverage_map_names_tests_that_exist() -> None:
    coverage_map = generated.load_map()
    assert set(coverage_map["lines"]) <= set(generated.FILES)
    files = {test.split("::")[0] for test in coverage_map["tests"]}
    missing = sorted(file for file in files if not (generated.ROOT / file).is_file())
    assert not missing, f"rebuild the map (python -m tests.mutation.generated --map): {missing}"
