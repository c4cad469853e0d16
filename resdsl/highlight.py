"""Syntax highlighting: one ordered list of rules, two grammars made from it.

:data:`RULES` is the single description of how ``.res`` text is coloured. Each
rule is a regular expression whose groups cover everything it matches, and for
each group a TextMate scope and a Pygments token type. From it come

- the TextMate grammar (``editors/vscode/syntaxes/resdsl.tmLanguage.json``, written
  by ``python -m resdsl.highlight``), a flat list of ``match`` rules;
- the Pygments lexer (:mod:`resdsl.pygments_lexer`), a ``RegexLexer`` state.

Why they agree: TextMate takes, at each position, the match that starts earliest,
ties going to the first rule; a RegexLexer takes the first rule that matches at the
position itself. Whenever some rule matches where TextMate stands, both pick the
same one, so with rules that never match across a line end and never match empty
text, the two tokenise alike. The patterns keep to the regular-expression syntax that
Oniguruma (VS Code) and Python's ``re`` read the same way: ``[ \\t]`` rather than
``\\s`` (which crosses lines in Python), explicit ASCII classes rather than ``\\w``,
fixed-width lookbehind.

The word lists come from :mod:`resdsl.vocabulary`, so a new layer kind or setting
there reaches both grammars (and the tests check that the committed TextMate file
is the one this module makes).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from resdsl import tokens, vocabulary
from resdsl.files import write_file

SCOPE = "source.resdsl"

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOTTED = tokens.NAME
# Without the lookahead for the label's ':': the rule spells it, on the same line (TextMate reads one line at a time).
_TEMPLATE = tokens.TEMPLATE_BODY
_OUTER_LABEL = tokens.OUTER_LABEL_BODY
_NUMBERED_LABEL = tokens.NUMBERED_LABEL_BODY
# A statement starts at a line's start or after a `;`.
_STATEMENT_START = r"(?:^|(?<=;))"


def _words(words: tuple[str, ...] | list[str]) -> str:
    # Longest first, so that no word's prefix wins where `\b` would allow it.
    return tokens.words_pattern(words)


@dataclass(frozen=True)
class Group:
    """One capturing group of a rule: its TextMate scope and its Pygments token ("" for none)."""

    scope: str
    token: str


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: str
    groups: tuple[Group, ...]  # one per capturing group, in order; together they cover the match


def _space() -> Group:
    return Group("", "Text.Whitespace")


def _keyword(kind: str = "other") -> Group:
    return Group(f"keyword.{kind}.resdsl", "Keyword")


def rules() -> tuple[Rule, ...]:
    """The rules, in priority order."""
    settings = _words(vocabulary.settings())
    return (
        Rule("comment", r"(#.*)", (Group("comment.line.number-sign.resdsl", "Comment.Single"),)),
        Rule("string", r'("[^"\n]*")', (Group("string.quoted.double.resdsl", "Literal.String.Double"),)),
        Rule(
            "continuation",
            r"(\\)(?=[ \t]*$)",
            (Group("punctuation.separator.continuation.resdsl", "Punctuation"),),
        ),
        Rule(
            "block-definition",
            rf"\b(block)([ \t]+)({_NAME})",
            (_keyword("other.definition"), _space(), Group("entity.name.type.block.resdsl", "Name.Class")),
        ),
        Rule(
            "network-definition",
            rf"\b(network)([ \t]+)({_NAME})",
            (_keyword("other.definition"), _space(), Group("entity.name.function.network.resdsl", "Name.Function")),
        ),
        Rule(
            "stage",
            rf"\b(stage)([ \t]+)({_DOTTED})",
            (_keyword("other.definition"), _space(), Group("entity.name.section.stage.resdsl", "Name.Namespace")),
        ),
        Rule(
            "shortcut-statement",
            rf"\b({_words(vocabulary.SHORTCUT_STATEMENTS)})([ \t]+)(shortcut)\b",
            (_keyword("other.statement"), _space(), _keyword("other.statement")),
        ),
        Rule(
            "join",
            rf"\b({_words(vocabulary.joins())})(?=[ \t]*\{{)",
            (Group("keyword.other.join.resdsl", "Keyword.Pseudo"),),
        ),
        Rule(
            "label",
            rf"{_STATEMENT_START}([ \t]*)({_DOTTED}|{_TEMPLATE}|{_OUTER_LABEL}|{_NUMBERED_LABEL})([ \t]*)(:)",
            (
                _space(),
                Group("entity.name.label.resdsl", "Name.Label"),
                _space(),
                Group("punctuation.separator.label.resdsl", "Punctuation"),
            ),
        ),
        Rule(
            "setting",
            rf"{_STATEMENT_START}([ \t]*)({settings})\b",
            (_space(), Group("support.variable.setting.resdsl", "Name.Attribute")),
        ),
        Rule(
            "override",
            rf"\b(with)([ \t]+)({settings})\b",
            (_keyword(), _space(), Group("support.variable.setting.resdsl", "Name.Attribute")),
        ),
        Rule(
            "keyword",
            rf"\b({_words(vocabulary.DEFINITION_KEYWORDS)})\b",
            (_keyword(),),
        ),
        Rule("control", rf"\b({_words(vocabulary.CONTROL_KEYWORDS)})\b", (_keyword("control"),)),
        Rule("value", rf"\b({_words(vocabulary.VALUE_KEYWORDS)})\b", (_keyword("other.value"),)),
        Rule(
            "value-statement",
            rf"{_STATEMENT_START}([ \t]*)({_words(vocabulary.VALUE_STATEMENTS)})\b",
            (_space(), Group("support.function.value.resdsl", "Name.Builtin")),
        ),
        # The `x` of `3 x basic(64)`: only before the stage's block, since `x` is also a
        # name a spec may give a value (`let x`, `from x`, `add x, y`).
        Rule("repeat", rf"\b(x)(?=[ \t]+{_DOTTED}[ \t]*(?:\(|#|;|$))", (_keyword("repeat"),)),
        Rule(
            "word-operator",
            rf"\b({_words(vocabulary.WORD_OPERATORS)})\b",
            (Group("keyword.operator.logical.resdsl", "Operator.Word"),),
        ),
        Rule(
            "constant",
            rf"\b({_words(vocabulary.CONSTANTS)})\b",
            (Group("constant.language.resdsl", "Keyword.Constant"),),
        ),
        Rule(
            "function",
            rf"\b({_words(vocabulary.FUNCTIONS)})(?=\()",
            (Group("support.function.builtin.resdsl", "Name.Builtin.Pseudo"),),
        ),
        Rule(
            "position-name",
            rf"\b({_words(vocabulary.POSITION_NAMES)})\b",
            (Group("variable.language.resdsl", "Name.Variable.Magic"),),
        ),
        Rule(
            "layer-kind",
            rf"\b({_words(vocabulary.layer_kinds())})\b(?!\.)",
            (Group("support.function.layer.resdsl", "Name.Builtin"),),
        ),
        Rule(
            "keyword-argument",
            rf"\b({_NAME})(?=[ \t]*=(?!=))",
            (Group("variable.parameter.resdsl", "Name.Variable"),),
        ),
        Rule("call", rf"\b({_NAME})(?=\()", (Group("entity.name.function.call.resdsl", "Name.Function"),)),
        Rule("range", r"(\.\.)", (Group("keyword.operator.range.resdsl", "Operator"),)),
        Rule("size", r"\b([0-9]+(?:x[0-9]+)+)\b", (Group("constant.numeric.size.resdsl", "Literal.Number"),)),
        Rule(
            "real",
            r"((?:\b[0-9]+\.(?!\.)[0-9]*|(?<!\.)\.[0-9]+)(?:[eE][-+]?[0-9]+)?|\b[0-9]+[eE][-+]?[0-9]+)",
            (Group("constant.numeric.float.resdsl", "Literal.Number.Float"),),
        ),
        Rule("integer", r"\b([0-9]+)\b", (Group("constant.numeric.integer.resdsl", "Literal.Number.Integer"),)),
        Rule(
            "comparison",
            r"(==|!=|<=|>=|<|>)",
            (Group("keyword.operator.comparison.resdsl", "Operator"),),
        ),
        Rule("arithmetic", r"(//|[-+*/%])", (Group("keyword.operator.arithmetic.resdsl", "Operator"),)),
        Rule("assignment", r"(=)", (Group("keyword.operator.assignment.resdsl", "Operator"),)),
        Rule("brace", r"([{}])", (Group("punctuation.section.braces.resdsl", "Punctuation"),)),
        Rule("bracket", r"([\[\]])", (Group("punctuation.section.brackets.resdsl", "Punctuation"),)),
        Rule("parenthesis", r"([()])", (Group("punctuation.section.parens.resdsl", "Punctuation"),)),
        Rule("separator", r"([,:;])", (Group("punctuation.separator.resdsl", "Punctuation"),)),
        Rule("name", rf"({_DOTTED})", (Group("variable.other.resdsl", "Name"),)),
    )


def textmate_grammar() -> dict:
    """The TextMate grammar, as VS Code reads it."""
    repository = {}
    for rule in rules():
        entry: dict = {"match": rule.pattern}
        if len(rule.groups) == 1 and rule.groups[0].scope:
            entry["name"] = rule.groups[0].scope
        else:
            entry["captures"] = {
                str(index): {"name": group.scope} for index, group in enumerate(rule.groups, 1) if group.scope
            }
        repository[rule.name] = entry
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/tmlanguage.json",
        "name": "resdsl",
        "scopeName": SCOPE,
        "fileTypes": ["res"],
        "comment": "Generated by `python -m resdsl.highlight` from resdsl/highlight.py; do not edit by hand.",
        "patterns": [{"include": f"#{rule.name}"} for rule in rules()],
        "repository": repository,
    }


def textmate_json() -> str:
    return json.dumps(textmate_grammar(), indent=2) + "\n"


#: Where the VS Code extension keeps the grammar, in a source checkout.
TEXTMATE_PATH = Path(__file__).resolve().parent.parent / "editors" / "vscode" / "syntaxes" / "resdsl.tmLanguage.json"


def main(argv: list[str] | None = None) -> int:
    """Write the TextMate grammar (to the path given, else to the VS Code extension)."""
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else TEXTMATE_PATH
    target.parent.mkdir(parents=True, exist_ok=True)
    write_file(target, textmate_json())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
