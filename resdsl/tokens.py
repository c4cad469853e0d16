"""The tokens of the ``.res`` language, described once.

Every reader of ``.res`` text takes its words and token patterns from here:

- the grammar (grammar/resdsl.lark) spells the same patterns and keywords, and
  tests/test_tokens.py checks that it does, terminal by terminal;
- the parser's pre-scan (:data:`PRESCAN`) and its "expected ..." messages
  (:data:`TERMINAL_DESCRIPTIONS`);
- the formatter's tokenizer (:mod:`resdsl.fmt`);
- the highlighters (:mod:`resdsl.highlight`, which writes the TextMate grammar and
  feeds the Pygments lexer);
- the language server (:mod:`resdsl.lsp.analysis`).

A new keyword is one entry in :data:`KEYWORDS` (and its group below), plus the
grammar rule that uses it. Nothing here imports anything but ``re``.
"""

from __future__ import annotations

import re

# Words ------------------------------------------------------------------------------

#: Words that open a definition or a section: ``use``, ``block``, ``network``, ``stem``...
DEFINITION_KEYWORDS = ("use", "block", "network", "stem", "stage", "head", "with")
#: Compile-time control: ``if``/``else`` and ``for NAME in A .. B``.
CONTROL_KEYWORDS = ("if", "else", "for", "in")
#: Names for values: ``let NAME`` binds the current value, ``from NAME`` makes one current.
VALUE_KEYWORDS = ("let", "from")
#: Operators spelled as words.
WORD_OPERATORS = ("and", "or", "not")
#: The ``x`` of ``stage s: 3 x basic(64)``.
REPEAT_KEYWORD = "x"

#: Reserved words: a name can never be one of these where the keyword may stand.
KEYWORDS = (*DEFINITION_KEYWORDS, REPEAT_KEYWORD, *CONTROL_KEYWORDS, *VALUE_KEYWORDS, *WORD_OPERATORS)

#: The two constants (names, not keywords: a parameter may shadow them).
CONSTANTS = ("true", "false")

# Patterns ---------------------------------------------------------------------------
# Python regular expressions, written so that lark (the grammar's terminals), the
# formatter and the highlighters read them alike: non-capturing groups only.

#: A name; a module path where labels and stage names allow one (``conv1.0``, ``head.fc``).
NAME = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
#: A label with ``{NAME}`` interpolated (``convs.{i}``), only ever followed by its ``:``.
TEMPLATE_BODY = (
    r"(?:[A-Za-z0-9_.]|\{[A-Za-z_][A-Za-z0-9_]*\})*\{[A-Za-z_][A-Za-z0-9_]*\}"
    r"(?:[A-Za-z0-9_.]|\{[A-Za-z_][A-Za-z0-9_]*\})*"
)
#: What must follow a label token: its ``:``, after spaces or ``\`` line continuations.
LABEL_FOLLOWS = r"(?=(?:[ \t]|\\\r?\n)*:)"
TEMPLATE = TEMPLATE_BODY + LABEL_FOLLOWS
#: A label that names a module in the scope around the block (``..convShortcut``: a
#: projection's layer beside the block's own), only ever followed by its ``:``.
OUTER_LABEL_BODY = r"\.\.(?:[A-Za-z0-9_.]|\{[A-Za-z_][A-Za-z0-9_]*\})+"
OUTER_LABEL = OUTER_LABEL_BODY + LABEL_FOLLOWS
#: A label whose first part is a number (``0: conv 3x3, 64``, ``0.conv``: nn.Sequential's
#: layout), only ever followed by its ``:``.
NUMBERED_LABEL_BODY = r"[0-9]+(?:\.[A-Za-z0-9_]+)*"
NUMBERED_LABEL = NUMBERED_LABEL_BODY + LABEL_FOLLOWS
#: ``3x3`` (a kernel) or ``3x224x224`` (an input shape): one token, so that the ``x`` of a
#: repeat (``3 x basic(64)``) stays a keyword.
SIZE = r"[0-9]+(?:x[0-9]+)+"
#: A real. ``0..4`` is a range, not the real ``0.`` and ``.4``.
REAL = r"[0-9]+\.(?!\.)[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+"
INTEGER = r"[0-9]+"
STRING = r'"[^"\n]*"'
COMMENT = r"#[^\n]*"
#: ``min(``: a name and its ``(`` with no space between, one token (a call).
CALL = r"(?!(?:if|not|and|or|else|for|in|from|let)\()[A-Za-z_][A-Za-z0-9_]*\("

#: Operators, longest first where one is the other's prefix.
COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
ARITHMETIC = ("//", "*", "/", "%", "+", "-")
#: The range of ``for i in 0 .. n``.
RANGE = ".."
OPERATOR = r"\.\.|==|!=|<=|>=|//|[-+*/%<>]"

#: Single characters with a meaning of their own.
PUNCTUATION = ("{", "}", "(", ")", "[", "]", ",", ":", ";", "=")

#: One match per token that lark would see, comments and quoted strings whole, so
#: that the parser's pre-scan runs once per token rather than once per character.
PRESCAN = re.compile(r'#[^\n]*|"[^"\n]*"?|[A-Za-z0-9_.]+|//|\n|[^\s]')

#: What each grammar terminal is called in "expected ..." messages.
TERMINAL_DESCRIPTIONS = {
    "NAME": "a name",
    "TEMPLATE": "a label such as convs.{i}",
    "OUTER_LABEL": "a label such as ..convShortcut",
    "NUMBERED_LABEL": "a label such as 0.conv",
    "INT": "a number",
    "FLOAT": "a number",
    "DIMS": "sizes such as 3x3",
    "STRING": 'a quoted path such as "lib/cifar.res"',
    "_SEP": "end of line",
    "$END": "end of file",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "COLON": "':'",
    "EQUAL": "'='",
    "RANGE": "'..'",
    "ADD_OP": "'+' or '-'",
    "MUL_OP": "'*', '//', '/' or '%'",
    "COMPARE": "a comparison",
    "CALL": "a call such as min(a, b)",
    **{word.upper(): f"'{word}'" for word in KEYWORDS},
}

#: The grammar's terminals and the pattern each must spell (tests/test_tokens.py).
GRAMMAR_PATTERNS = {
    "NAME": NAME,
    "TEMPLATE": TEMPLATE,
    "OUTER_LABEL": OUTER_LABEL,
    "NUMBERED_LABEL": NUMBERED_LABEL,
    "DIMS": SIZE,
    "FLOAT": REAL,
    "INT": INTEGER,
    "STRING": STRING,
    "CALL": CALL,
}


def words_pattern(words: tuple[str, ...] | list[str]) -> str:
    """An alternation of words, longest first, so that no word's prefix wins."""
    return "|".join(sorted(words, key=lambda word: (-len(word), word)))


__all__ = [
    "ARITHMETIC",
    "CALL",
    "COMMENT",
    "COMPARISONS",
    "CONSTANTS",
    "CONTROL_KEYWORDS",
    "DEFINITION_KEYWORDS",
    "GRAMMAR_PATTERNS",
    "INTEGER",
    "KEYWORDS",
    "LABEL_FOLLOWS",
    "NAME",
    "NUMBERED_LABEL",
    "NUMBERED_LABEL_BODY",
    "OPERATOR",
    "OUTER_LABEL",
    "OUTER_LABEL_BODY",
    "PRESCAN",
    "PUNCTUATION",
    "RANGE",
    "REAL",
    "REPEAT_KEYWORD",
    "SIZE",
    "STRING",
    "TEMPLATE",
    "TEMPLATE_BODY",
    "TERMINAL_DESCRIPTIONS",
    "VALUE_KEYWORDS",
    "WORD_OPERATORS",
    "words_pattern",
]
