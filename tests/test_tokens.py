"""One token description (resdsl/tokens.py): the grammar, the parser's pre-scan, the
formatter, the highlighters and the language server read the same words and patterns."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resdsl import fmt, highlight, parser, tokens, vocabulary

ROOT = Path(__file__).resolve().parent.parent

SAMPLE = """\
block res2(width, scale=4) {
    conv1: conv 1x1, width * scale
    split scale
    let s
    for i in 0..scale - 1 {
        if i == 0 { from s[i] } else { add s[i], o[i - 1] }
        convs.{i}: conv 3x3, width, stride=1
        let o[i]
    }
    let last = s[scale - 1]
    cat o, last
    weighted [last, last], [last, last]
    dropout 0.5
    add shortcut
}
"""


def test_the_grammar_spells_every_pattern_as_tokens_py_does() -> None:
    terminals = {terminal.name: terminal.pattern.value for terminal in parser._parser().terminals}
    for name, pattern in tokens.GRAMMAR_PATTERNS.items():
        # Lark reads `\t` in some patterns as the tab itself.
        spelled = terminals[name].replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
        assert spelled == pattern, name


def test_the_grammar_has_exactly_the_keywords_of_tokens_py() -> None:
    text = parser.grammar_path().read_text(encoding="utf-8")
    spelled = set(re.findall(r'^[A-Z_]+: "([a-z]+)"', text, re.MULTILINE)) | set(re.findall(r'"([a-z]+)"', text))
    assert spelled == set(tokens.KEYWORDS)
    assert vocabulary.KEYWORDS is tokens.KEYWORDS
    assert fmt.KEYWORDS is tokens.KEYWORDS
    assert parser.KEYWORDS is tokens.KEYWORDS


def test_every_terminal_has_a_description_for_messages() -> None:
    for terminal in parser._parser().terminals:
        if terminal.name.startswith("__") or terminal.name in ("_SEP",):
            continue
        assert terminal.name in tokens.TERMINAL_DESCRIPTIONS, terminal.name


def _lark_values(text: str) -> list[str]:
    lexed = parser._parser().lex(text + "\n")
    return [token.value for token in lexed if token.type != "_SEP"]


def _fmt_values(text: str) -> list[str]:
    values: list[str] = []
    previous = None
    for token in fmt.tokenize(text):
        if token.kind in (fmt.NEWLINE, fmt.COMMENT, fmt.SEMI):
            previous = None
            continue
        if token.kind == fmt.LPAR and not token.space_before and previous is not None and previous.kind == fmt.NAME:
            values[-1] += "("  # lark's CALL: a name and its "(" with no space between
        else:
            values.append(token.text)
        previous = token
    return values


@pytest.mark.parametrize(
    "path", [*sorted(ROOT.glob("specs/**/*.res")), ROOT / "resdsl" / "prelude.res"], ids=lambda p: p.name
)
def test_the_formatter_splits_every_spec_as_the_compiler_does(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert _fmt_values(text) == _lark_values(text)


def test_the_new_tokens_split_alike() -> None:
    # `0..scale` is a range, not the reals `0.` and `.scale`; `convs.{i}` is one label.
    assert _fmt_values(SAMPLE) == _lark_values(SAMPLE)
    assert "convs.{i}" in _fmt_values(SAMPLE)
    assert ".." in _fmt_values(SAMPLE)


def test_the_prescan_counts_one_match_per_word() -> None:
    assert [m.group() for m in tokens.PRESCAN.finditer('use "a b" # c\nx')] == ["use", '"a b"', "# c", "\n", "x"]


def test_the_highlighters_colour_the_new_keywords() -> None:
    patterns = {rule.name: re.compile(rule.pattern) for rule in highlight.rules()}
    for word in tokens.VALUE_KEYWORDS:
        assert patterns["value"].fullmatch(word)
    for word in ("for", "in"):
        assert patterns["control"].fullmatch(word)
    assert patterns["label"].match("    convs.{i}: conv 3x3, 8")
    assert patterns["range"].fullmatch("..")


def test_a_label_and_its_colon_may_stand_on_either_side_of_a_continuation() -> None:
    text = "block b(n=2) {\n    for i in 0 .. n {\n        convs.{i} \\\n: conv 3x3, 4\n    }\n}\n"
    assert _fmt_values(text) == _lark_values(text)
    assert "convs.{i}" in _fmt_values(text)
    parser.parse(text)
