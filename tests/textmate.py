"""A small TextMate tokenizer for tests: the subset of vscode-textmate that a grammar
of ``match`` rules uses, on Oniguruma (the regex engine VS Code runs) via onigurumacffi.

What it does, as vscode-textmate does: each line is scanned with a ``\\n`` appended;
at each position every rule is searched from there, the match that starts earliest
wins and ties go to the rule listed first; a winner's ``name`` scopes the whole
match, its ``captures`` scope groups; text no rule matches keeps only the grammar's
scope. ``include`` of ``#name`` (repository) and ``$self`` are followed. Grammars
with ``begin``/``end`` rules are refused rather than tokenised wrongly.
"""

from __future__ import annotations

from dataclasses import dataclass

import onigurumacffi


@dataclass(frozen=True)
class Token:
    text: str
    scopes: tuple[str, ...]  # outermost first: the grammar's scope, then the rule's, then a capture's
    line: int  # 1-based
    column: int = 0  # 0-based, filled in by Tokenizer.tokenize


class Tokenizer:
    def __init__(self, grammar: dict) -> None:
        self.scope = grammar["scopeName"]
        self.rules = []
        self._collect(grammar, grammar["patterns"], set())

    def _collect(self, grammar: dict, patterns: list[dict], seen: set[str]) -> None:
        for pattern in patterns:
            if "include" in pattern:
                target = pattern["include"]
                if target == "$self":
                    if "$self" not in seen:
                        self._collect(grammar, grammar["patterns"], seen | {"$self"})
                    continue
                if not target.startswith("#"):
                    raise ValueError(f"only repository includes are supported, not {target!r}")
                if target in seen:
                    continue
                entry = grammar["repository"][target[1:]]
                self._collect(
                    grammar, entry.get("patterns", [entry]) if "match" not in entry else [entry], seen | {target}
                )
            elif "match" in pattern:
                self.rules.append((onigurumacffi.compile(pattern["match"]), pattern))
            elif "begin" in pattern or "end" in pattern:
                raise ValueError("begin/end rules are not supported by this tokenizer")
            elif "patterns" in pattern:
                self._collect(grammar, pattern["patterns"], seen)

    def tokenize(self, text: str) -> list[Token]:
        tokens: list[Token] = []
        for number, line in enumerate(text.splitlines(), start=1):
            column = 0
            for token in self._line(line + "\n", number):
                tokens.append(Token(token.text, token.scopes, number, column))
                column += len(token.text)
        return [token for token in tokens if token.text != "\n"]

    def _line(self, line: str, number: int) -> list[Token]:
        tokens: list[Token] = []
        position = 0
        while position < len(line):
            best = None
            for regex, rule in self.rules:
                match = regex.search(line, position)
                if match is None:
                    continue
                if best is None or match.start() < best[0].start():
                    best = (match, rule)
            if best is None:
                tokens.append(Token(line[position:], (self.scope,), number))
                break
            match, rule = best
            if match.end() == match.start():
                raise ValueError(f"rule {rule['match']!r} matches empty text: TextMate would stall here")
            if match.start() > position:
                tokens.append(Token(line[position : match.start()], (self.scope,), number))
            tokens.extend(self._scoped(match, rule, number))
            position = match.end()
        return [token for token in tokens if token.text]

    def _scoped(self, match, rule: dict, number: int) -> list[Token]:
        outer = (self.scope, rule["name"]) if "name" in rule else (self.scope,)
        captures = rule.get("captures", {})
        if not captures:
            return [Token(match.group(), outer, number)]
        # Split the match at its captured groups (they do not nest in this grammar).
        pieces: list[Token] = []
        cursor = match.start()
        spans = []
        for key, value in captures.items():
            start, end = match.span(int(key))
            if start >= 0 and end > start:
                spans.append((start, end, value["name"]))
        for start, end, name in sorted(spans):
            if start > cursor:
                pieces.append(Token(match.string[cursor:start], outer, number))
            pieces.append(Token(match.string[start:end], (*outer, name), number))
            cursor = end
        if cursor < match.end():
            pieces.append(Token(match.string[cursor : match.end()], outer, number))
        return pieces
