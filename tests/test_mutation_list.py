"""The curated mutants (tests/mutation/mutants.py) still apply to the code, and their test
selections still exist: a mutant that no longer applies guards nothing, so a change
that moves the code it mutates must move the mutant too (see docs/testing.md)."""

from __future__ import annotations

from pathlib import Path

from tests.mutation.mutants import FULL_SELECTION, MUTANTS
from tests.mutation.run import stale_reason

ROOT = Path(__file__).resolve().parent.parent


def test_every_mutant_applies_exactly_once() -> None:
    stale = {m.id: stale_reason(m) for m in MUTANTS if not m.equivalent and stale_reason(m)}
    assert not stale, stale


def test_mutant_ids_are_unique_and_each_has_tests_and_a_reason() -> None:
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids))
    for mutant in MUTANTS:
        assert mutant.tests and mutant.why, mutant.id
        assert mutant.file in FULL_SELECTION, f"{mutant.id}: add {mutant.file} to FULL_SELECTION"


def test_every_selected_test_exists() -> None:
    selections = {t for m in MUTANTS for t in m.tests} | {t for ts in FULL_SELECTION.values() for t in ts}
    for selected in selections:
        file, _, name = selected.partition("::")
        assert (ROOT / file).is_file(), selected
        if name:
            assert f"def {name.split('[')[0]}(" in (ROOT / file).read_text(encoding="utf-8"), selected
