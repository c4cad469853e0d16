"""A Pygments lexer for ``.res`` files, registered as ``resdsl``.

``pip install resdsl`` registers it through the ``pygments.lexers`` entry point, so
``pygmentize -l resdsl spec.res`` and documentation tools (Sphinx, MkDocs) colour
```` ```resdsl ```` fences. Its rules are :data:`resdsl.highlight.rules`, the same
list the TextMate grammar is made from. Only Pygments imports this module.
"""

from __future__ import annotations

from typing import ClassVar

from pygments.lexer import RegexLexer, bygroups
from pygments.token import STANDARD_TYPES, Text, Whitespace, _TokenType

from resdsl.highlight import rules

#: Pygments' token types by their dotted names ("Literal.Number.Float").
_TOKEN_TYPES = {str(token).removeprefix("Token."): token for token in STANDARD_TYPES}


def _token_type(dotted: str) -> _TokenType:
    # A lookup, not string_to_tokentype: that would make a new, unstyled type of any
    # name it is given ("Number" would not be Literal.Number).
    return _TOKEN_TYPES[dotted]


def _action(groups):
    tokens = [_token_type(group.token) for group in groups]
    return tokens[0] if len(tokens) == 1 else bygroups(*tokens)


class ResdslLexer(RegexLexer):
    """The .res architecture language of resdsl."""

    name = "resdsl"
    aliases: ClassVar[list[str]] = ["resdsl", "res"]
    filenames: ClassVar[list[str]] = ["*.res"]
    mimetypes: ClassVar[list[str]] = ["text/x-resdsl"]
    url = "https://pypi.org/project/resdsl/"

    tokens: ClassVar[dict] = {
        "root": [
            *((rule.pattern, _action(rule.groups)) for rule in rules()),
            (r"[ \t]+", Whitespace),
            (r"\r?\n", Whitespace),
            # What no rule takes stays plain text, as in the TextMate grammar.
            (r".", Text),
        ]
    }


__all__ = ["ResdslLexer"]
