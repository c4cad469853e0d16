"""The shipped parse tables (grammar/resdsl.tables.json) are current and parse as the grammar does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from resdsl import parser
from resdsl.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent


def _from_grammar():
    parser._parser.cache_clear()
    original = parser._load_tables
    parser._load_tables = lambda grammar: None
    try:
        return parser._parser()
    finally:
        parser._load_tables = original
        parser._parser.cache_clear()


def test_shipped_tables_are_current():
    stored = json.loads(parser.tables_path().read_text(encoding="utf-8"))
    grammar = parser.grammar_path().read_text(encoding="utf-8")
    # lark numbers its states in set order, so rebuilt tables differ byte for byte; what
    # matters is that they were built from this grammar and parse as it does (below).
    assert stored["key"] == parser._tables_key(grammar), "stale tables: run `python grammar/build_tables.py`"


def test_loaded_tables_parse_every_spec_and_fixture_as_the_grammar_does():
    parser._parser.cache_clear()
    loaded = parser._parser()
    assert loaded.source_path == "<deserialized>", "the shipped tables were not used"
    built = _from_grammar()
    assert built.source_path != "<deserialized>"
    files = [
        path
        for path in sorted(ROOT.glob("specs/**/*.res")) + sorted(ROOT.glob("tests/fixtures/errors/*.res"))
        if path.is_file()
    ]
    assert len(files) > 50

    def outcome(text: str, with_parser):
        # The named syntax errors are found by the parser's state numbers, which each
        # build of the tables numbers its own way: they are worked out per parser.
        parser._parser.cache_clear()
        parser._example_errors.cache_clear()
        original = parser._parser
        parser._parser = lambda: with_parser  # type: ignore[assignment]
        try:
            return ("ok", parser.parse(text))
        except SpecError as error:
            return ("error", str(error))
        finally:
            parser._parser = original
            parser._example_errors.cache_clear()

    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        assert outcome(text, loaded) == outcome(text, built), path


@pytest.mark.parametrize("damage", ["truncate", "other-key", "not-json", "directory"])
def test_damaged_or_stale_tables_fall_back_to_the_grammar(tmp_path, monkeypatch, damage):
    tables = tmp_path / "resdsl.tables.json"
    shipped = parser.tables_path().read_text(encoding="utf-8")
    if damage == "truncate":
        tables.write_text(shipped[: len(shipped) // 2], encoding="utf-8")
    elif damage == "other-key":
        stored = json.loads(shipped)
        stored["key"]["grammar_sha256"] = "0" * 64
        tables.write_text(json.dumps(stored), encoding="utf-8")
    elif damage == "not-json":
        tables.write_bytes(b"\xff\x00garbage")
    else:
        tables.mkdir()
    monkeypatch.setattr(parser, "tables_path", lambda: tables)
    parser._parser.cache_clear()
    try:
        rebuilt = parser._parser()
        assert rebuilt.source_path != "<deserialized>"
        assert parser.parse("network n {\n    input 3x8x8\n    conv 3x3, 4\n}\n").definitions
    finally:
        parser._parser.cache_clear()


def test_check_never_builds_tables():
    """`resdsl check` loads the shipped tables: lark's LALR analysis never runs."""
    code = (
        "import sys, lark.parsers.lalr_analysis as a\n"
        "def refuse(*args, **kwargs): raise SystemExit('LALR tables were built')\n"
        "a.LALR_Analyzer.compute_lalr = refuse\n"
        "from resdsl.cli import main\n"
        "sys.exit(main(['check', 'specs/resnet50.res']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
