"""Parse .res text into a :class:`~resdsl.syntax.Module`.

The grammar lives in grammar/resdsl.lark (shipped inside the wheel as
resdsl/grammar/resdsl.lark). Lark's LALR parser builds a tree with positions; a
non-recursive transformer maps each aliased rule onto its AST class, so deeply
nested input cannot overflow Python's stack. Syntax errors become
:class:`~resdsl.errors.SpecSyntaxError` with what was expected, at the line and
column of the offending token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import lark
from lark import Token, Transformer_NonRecursive, v_args

from resdsl import syntax as ast
from resdsl import tokens
from resdsl.errors import MAX_ERRORS, LimitError, Note, Pos, Source, SpecError, SpecSyntaxError, closest
from resdsl.evaluate import literal

#: Deepest nesting of parentheses and braces accepted.
MAX_EXPRESSION_DEPTH = 100

#: Deepest expression tree accepted: operators chained (1+1+...+1) or signs stacked
#: (- - -1). The evaluator recurses over the tree, so this keeps it far from Python's
#: recursion limit whatever the spec holds.
MAX_EXPRESSION_TREE_DEPTH = 200

#: Most tokens a spec may hold, with every file it uses: words, numbers, symbols and
#: line ends (`;` or a newline), a comment counting as one. Lark takes some 20-50
#: microseconds a token on a shared core; this keeps parsing well under a second.
#: ``Limits(max_tokens=...)`` sets it for one compile.
MAX_TOKENS = 20_000

#: Longest quoted string (a `use` path) accepted, as the OS's own PATH_MAX.
MAX_STRING_LENGTH = 4096

#: Longest name (of a block, network, layer label, parameter...) accepted.
MAX_NAME_LENGTH = 128
#: The most dimensions a size token (3x224x224) may have.
MAX_SIZE_DIMENSIONS = 16

#: Most arguments in one call or statement, and most parameters of one definition.
MAX_ARGUMENTS = 256

#: One match per token that lark would see (resdsl/tokens.py describes every token).
_PRESCAN = tokens.PRESCAN

KEYWORDS = tokens.KEYWORDS

# What each terminal is called in "expected ..." messages.
_TERMINAL_NAMES = tokens.TERMINAL_DESCRIPTIONS

# Named syntax errors (lark's match_examples): a label, a hint, and examples that
# end in the mistake. The parser's state at the error picks the closest label.
_EXAMPLES: dict[tuple[str, str | None], list[str]] = {
    ("missing ',' between arguments", "separate a layer's arguments with commas: conv 3x3, 64, stride=2"): [
        "block b { conv 3x3 64 }",
        "block b { conv 3x3, 64 stride=2 }",
        "block b { fc 10 bias=1 }",
        "block b { conv 3x3 w }",
        "block b {\n    conv 3x3 w\n}",
        "block b(w) {\n    bn\n    conv 3x3 w\n}",
        "block b {\n    conv 3x3, 64 stride=2\n}",
        "block b(w) {\n    conv 3x3 w\n    bn\n}",
        "block b(w) {\n    conv 3x3 w\n}",
    ],
    ("a stage needs a name and a colon", "write: stage conv2_x: 3 x basic(64)"): [
        "network n { stage 3 x basic(64) }",
        "network n { stage conv2_x 3 x basic(64) }",
        "network n {\n    input 3x32x32\n    stage conv2_x 3 x basic(64)\n}",
        "network n {\n    stage conv2_x 3 x basic(64)\n}",
        "network n {\n    input 3x32x32\n    stage 3 x basic(64)\n}",
    ],
    (
        "a stem or head needs its body in braces",
        "write: stem { conv 7x7, 64, stride=2 }; 'stem' and 'head' are keywords in a network's body, so a layer "
        "or block labelled stem or head goes inside the braces: stem { stem: repvgg(64, stride=2) }",
    ): [
        "network n { stem: b(64) }",
        "network n {\n    input 3x32x32\n    stem: b(64)\n}",
        "network n { stem conv 3x3, 64 }",
        "network n { head: b(64) }",
        "network n {\n    input 3x32x32\n    head: b(64)\n}",
        "network n { head fc 10 }",
    ],
    ("a stage needs a block after the repeat count", "write: stage conv2_x: 3 x basic(64)"): [
        "network n { stage s: 3 x }",
        "network n { stage s: 3 x 4 }",
    ],
    ("a definition must start with 'use', 'block' or 'network'", None): [
        "conv 3x3, 64",
        "foo bar",
        "stage s: 2 x basic(1)",
        # After a leading comment or blank line, and after another definition, the
        # parser is in other states: each needs its example.
        "\nconv 3x3, 64",
        "\nfoo bar",
        "block b { bn }\nconv 3x3, 64",
        "block b { bn }\nfoo bar",
    ],
    ("missing '{' after the definition's header", "write the body in braces: block NAME(params) { ... }"): [
        "block b(w) conv 3x3, w",
        "network n(c=1) input 3x32x32",
    ],
}


@cache
def grammar_path() -> Path:
    """grammar/resdsl.lark in a source checkout, resdsl/grammar/ in a wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "grammar" / "resdsl.lark", here.parent / "grammar" / "resdsl.lark"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError("resdsl's grammar (resdsl.lark) is missing from the installation")


_LARK_OPTIONS: dict[str, object] = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True}


class _LinesInParentheses(lark.lark.PostLex):
    """A line end inside parentheses or brackets (a parameter list, a call, a list) is
    a space, as in Python: ``block b(width,`` may go on on the next line without ``\\``.
    A ``;`` there still ends a statement (and so is an error), and comments are spaces too.

    The contextual lexer must still see line ends where the grammar takes none, so
    that they reach this filter: hence ``always_accept``.
    """

    always_accept = ("_SEP",)
    _OPENING = frozenset(("LPAR", "LSQB", "CALL"))  # CALL is `name(`, its parenthesis included
    _CLOSING = frozenset(("RPAR", "RSQB"))

    def process(self, stream):
        depth = 0
        for token in stream:
            if token.type in self._OPENING:
                depth += 1
            elif token.type in self._CLOSING:
                depth = max(0, depth - 1)
            elif token.type == "_SEP" and depth and ";" not in _COMMENTS.sub("", token):
                continue
            yield token


_COMMENTS = re.compile(tokens.COMMENT)
#: What the tables' key records of the post-lexer (its behaviour is code, not data).
_POSTLEX_VERSION = "lines-in-parentheses-1"


def tables_path() -> Path:
    """The parse tables built from the grammar, beside it (``resdsl.tables.json``)."""
    return grammar_path().with_name("resdsl.tables.json")


def _tables_key(grammar: str) -> dict[str, str]:
    """What the tables were built from: stale tables are never used."""
    digest = hashlib.sha256(grammar.encode("utf-8")).hexdigest()
    return {
        "grammar_sha256": digest,
        "lark": lark.__version__,
        "options": repr(sorted(_LARK_OPTIONS.items())),
        "postlex": _POSTLEX_VERSION,
    }


def _int_keys(pairs: list[tuple[str, object]]) -> dict[object, object]:
    # JSON keys are strings; lark's parse states, token indices and memo ids are ints.
    return {int(key) if key.isdigit() else key: value for key, value in pairs}


def _load_tables(grammar: str) -> lark.Lark | None:
    """The parser from the shipped tables, or None when they are missing or were built
    from another grammar, lark or options (then the grammar is compiled instead).

    Building LALR tables took 0.04-0.2 s of every `resdsl check`; loading them takes
    a few milliseconds. The file is JSON read as data (never pickle), and lark only
    rebuilds its own objects from it.
    """
    try:
        with open(tables_path(), "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return None
            raw = handle.read(MAX_TABLES_BYTES + 1)
        if len(raw) > MAX_TABLES_BYTES:
            return None
        stored = json.loads(raw, object_pairs_hook=_int_keys)
        if stored.get("key") != _tables_key(grammar):
            return None
        return lark.Lark._load_from_dict(stored["data"], stored["memo"], postlex=_LinesInParentheses())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, lark.exceptions.LarkError):
        return None


#: The shipped tables are about 90 KB.
MAX_TABLES_BYTES = 4 * 1024 * 1024


def build_tables() -> str:
    """The JSON text of the parse tables for the current grammar."""
    from lark.grammar import Rule
    from lark.lexer import TerminalDef

    grammar = grammar_path().read_text(encoding="utf-8")
    # The post-lexer is code, given again when the tables are loaded: the tables hold none.
    built = lark.Lark(grammar, **_LARK_OPTIONS)
    data, memo = built.memo_serialize([TerminalDef, Rule])
    return json.dumps({"key": _tables_key(grammar), "data": data, "memo": memo}, sort_keys=True) + "\n"


@cache
def _parser() -> lark.Lark:
    grammar = grammar_path().read_text(encoding="utf-8")
    return _load_tables(grammar) or lark.Lark(grammar, **_LARK_OPTIONS, postlex=_LinesInParentheses())


@dataclass
class TokenBudget:
    """The tokens still allowed to the files of one spec (see MAX_TOKENS)."""

    left: int = MAX_TOKENS
    total: int = MAX_TOKENS


def parse(text: str, path: str = "<string>", budget: TokenBudget | None = None) -> ast.Module:
    """Parse the text of one file. Raises SpecSyntaxError (or LimitError).

    `budget`, shared by the files of one spec, bounds their tokens together.
    """
    source = Source(path, text)
    _prescan(source, budget or TokenBudget())
    if text.startswith("\ufeff"):
        # Editors on Windows write a byte-order mark; a space keeps every column true.
        text = " " + text[1:]
    try:
        tree = _parser().parse(text + "\n")
    except lark.exceptions.UnexpectedInput as error:
        raise _syntax_errors(_syntax_error(error, source), text, source) from None
    try:
        return _ToAst(source).transform(tree)
    except lark.exceptions.VisitError as error:
        # Lark wraps what a transformer method raises; a SpecError is the spec's fault.
        if isinstance(error.orig_exc, SpecError):
            raise error.orig_exc from None
        raise


def _prescan(source: Source, budget: TokenBudget) -> None:
    """Refuse what would make lark or the passes slow, before lark sees a byte.

    One regular-expression pass: the budget's tokens at most, names at most
    MAX_NAME_LENGTH long, parentheses and braces nested at most MAX_EXPRESSION_DEPTH
    deep. Its cost is bounded by the token count, however long the file.
    """
    depth = 0
    line, line_start = 1, 0
    for match in _PRESCAN.finditer(source.text):
        token = match.group()
        start = match.start()
        budget.left -= 1
        if budget.left < 0:
            raise LimitError(
                f"the spec holds more than {budget.total:,} tokens (words, numbers, symbols and line ends, "
                "in this file and those it uses)",
                _at(source, line, start - line_start, len(token)),
                "describe repetition with stages and blocks rather than writing it out",
            )
        if token == "\n":
            line, line_start = line + 1, start + 1
        elif token in "({":
            depth += 1
            if depth > MAX_EXPRESSION_DEPTH:
                raise LimitError(
                    f"nesting deeper than {MAX_EXPRESSION_DEPTH} levels",
                    _at(source, line, start - line_start, 1),
                    "simplify the expression",
                )
        elif token in ")}":
            depth = max(0, depth - 1)
        elif token[0] == '"' and len(token) > MAX_STRING_LENGTH + 2:
            raise LimitError(
                f"a quoted path of {len(token) - 2:,} characters; paths are at most {MAX_STRING_LENGTH:,}",
                _at(source, line, start - line_start, len(token)),
            )
        elif token[0].isdigit() and token.count("x") >= MAX_SIZE_DIMENSIONS:
            # A size token of a million dimensions once took 700 MB to turn into numbers and quote.
            raise LimitError(
                f"a size of {token.count('x') + 1:,} dimensions; sizes have at most {MAX_SIZE_DIMENSIONS}",
                _at(source, line, start - line_start, min(len(token), 40)),
                "write a kernel as KxK and an input as CxHxW",
            )
        elif len(token) > MAX_NAME_LENGTH and (token[0].isalpha() or token[0] == "_"):
            raise LimitError(
                f"a name of {len(token):,} characters; names are at most {MAX_NAME_LENGTH}",
                _at(source, line, start - line_start, len(token)),
                "choose a shorter name",
            )


def _at(source: Source, line: int, offset: int, length: int) -> Pos:
    # Columns count characters as in the editor; a tab is one, as lark counts it.
    return Pos(source, line, offset + 1, line, offset + 1 + max(1, length))


def _describe(terminals: set[str]) -> str:
    terminals = set(terminals)
    operator = {"ADD_OP", "MUL_OP"} <= terminals
    if operator:
        # Listing '*', '//' or '/', '+' or '-', comparisons, 'and'... one by one buries the other choices.
        terminals -= {"ADD_OP", "MUL_OP", "COMPARE", "AND", "OR"}
    names = sorted({_TERMINAL_NAMES.get(t, f"'{t.lower()}'") for t in terminals if not t.startswith("__")})
    if operator:
        names.append("an operator")
    if not names:
        return "something else"
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " or " + names[-1]


def _syntax_error(error: lark.exceptions.UnexpectedInput, source: Source) -> SpecSyntaxError:
    lines = source.text.splitlines() or [""]
    line = max(1, min(getattr(error, "line", 1) or 1, len(lines)))
    column = max(1, getattr(error, "column", 1) or 1)
    if isinstance(error, lark.exceptions.UnexpectedCharacters):
        allowed = _acceptable(getattr(error, "state", None), set(error.allowed))
        char = source.text[error.pos_in_stream] if error.pos_in_stream < len(source.text) else "?"
        pos = Pos(source, line, column, line, column + 1)
        shown = f"'{char}'" if char.isprintable() else repr(char)
        hint = None
        if char == "\r":
            hint = "end lines with \\n or \\r\\n (this file seems to use old Mac \\r line endings)"
        elif not char.isprintable() or char in "\u200b\u00a0":
            hint = "remove the invisible character (pasted from a web page or word processor?)"
        return SpecSyntaxError(f"unexpected character {shown}; expected {_describe(allowed)}", pos, hint)

    token = error.token if isinstance(error, lark.exceptions.UnexpectedToken) else None
    expected = set(getattr(error, "expected", ()) or ())
    # LALR merges lookaheads of similar states, so `expected` can offer ')' outside
    # any parenthesis; `accepts` tries each terminal on a copy of the parser. Best
    # effort: should it fail, the plain list is still right, only longer.
    with contextlib.suppress(Exception):
        expected = set(error.accepts or ()) or expected
    if token is None or token.type == "$END":
        line = len(lines)
        column = len(lines[-1]) + 1
        pos = Pos(source, line, column, line, column + 1)
        err = SpecSyntaxError(f"unexpected end of file; expected {_describe(expected)}", pos)
        if opening := _unclosed_brace(source):
            err.with_note("this '{' is never closed", opening)
        return err

    what = "end of line" if token.type == "_SEP" else f"'{token.value}'"
    semicolon = token.type == "_SEP" and token.value.lstrip(" \t").startswith(";")
    if semicolon:
        # A ';' where the statement cannot end (inside parentheses): point at it.
        what = "';'"
        column = token.column + len(token.value) - len(token.value.lstrip(" \t"))
        end = column + 1
    elif token.type == "_SEP":
        # A separator token starts where the line ends; point just past the text.
        column = len(lines[line - 1].rstrip()) + 1 if line <= len(lines) else column
        end = column + 1
    else:
        end = (token.end_column or column + 1) if token.end_line == token.line else column + 1
    pos = Pos(source, line, column, line, end)
    label = _match_example(error)
    message = f"unexpected {what}; expected {_describe(expected)}"
    hint = None
    if label is not None:
        # The label and its hint say what to write; LALR's merged states make the
        # full "expected" list misleading here (it offers ')' outside parentheses).
        message, hint = f"{label[0]}; unexpected {what}", label[1]
    word = (source.line(line).split() or [""])[0].rstrip(":")
    if word.isidentifier() and word not in KEYWORDS and (guess := closest(word, KEYWORDS)):
        hint = f"did you mean '{guess}'?"
    if semicolon and expected & {"RPAR", "RSQB"}:
        hint = "a ';' ends the statement; inside parentheses a line end only continues it"
    error = SpecSyntaxError(message, pos, hint)
    if word in ("stage", "stem", "head") and len(_open_braces(source, before=line)[0]) > 1:
        # A network's part inside another body: the body above it (a stem, say) lacks its '}'.
        opening = _open_braces(source, before=line)[0][-1]
        error.message = f"'{word}' inside a body whose '{{' is never closed; unexpected {what}"
        error.hint = f"close the body above with '}}' before '{word}'"
        error.with_note("this '{' is never closed", opening)
    elif word in ("use", "block", "network") and (opening := _unclosed_brace(source, before=line)):
        # A definition read as a statement: the body above it lacks its '}'.
        error.message = f"'{word}' inside a body whose '{{' is never closed; unexpected {what}"
        error.hint = f"close the body above with '}}' before '{word}'"
        error.with_note("this '{' is never closed", opening)
    return error


def _syntax_errors(first: SpecSyntaxError, text: str, source: Source) -> SpecError:
    """The first syntax error and those after it, found by recovering a line at a time.

    The line of each error is replaced by a stand-in that keeps its braces (nothing, in
    a line without any) and the file is parsed again; lines keep their numbers, so the
    next error's position is true in the original. Recovery stops at the end of the
    file, at an error on a line already replaced, and at MAX_ERRORS.
    """
    errors: list[SpecError] = [first]
    lines = text.split("\n")  # lark counts lines by \n alone
    replaced: set[int] = set()
    while len(errors) < MAX_ERRORS:
        line = errors[-1].line
        if line is None or line in replaced or not 1 <= line <= len(lines) or "end of file" in errors[-1].message:
            break
        if any("never closed" in note.message for note in errors[-1].notes):
            break  # what follows an unclosed brace is read inside it: the errors there are not independent
        lines[line - 1] = _stand_in(lines, line)
        replaced.add(line)
        attempt = "\n".join(lines)
        try:
            _parser().parse(attempt + "\n")
        except lark.exceptions.UnexpectedInput as error:
            found = _syntax_error(error, Source(source.path, attempt))
        else:
            break
        if found.line in replaced or found.line is None:
            break
        errors.append(_rebase(found, source))
    return SpecError.several(errors) if len(errors) > 1 else first


def _stand_in(lines: list[str], number: int) -> str:
    """What replaces a wrong line: its braces, with headers that parse where they stand."""
    depth = 0
    for line in lines[: number - 1]:
        code = line.split("#", 1)[0]
        depth += code.count("{") - code.count("}")
    parts: list[str] = []
    for char in lines[number - 1].split("#", 1)[0]:
        if char == "}":
            parts.append("}")
            depth -= 1
        elif char == "{":
            # A definition at the top level, an (empty) branch inside a body.
            parts.append(("; " if parts else "") + ("block recovered {" if depth <= 0 else "add {"))
            depth += 1
    return " ".join(parts)


def _rebase(error: SpecError, source: Source) -> SpecError:
    """The error with its positions in `source` (same lines and columns, other text)."""

    def moved(pos: Pos | None) -> Pos | None:
        return None if pos is None else Pos(source, pos.line, pos.column, pos.end_line, pos.end_column)

    error.pos = moved(error.pos)
    error.notes = [Note(note.message, moved(note.pos)) for note in error.notes]
    return error


def _acceptable(state, terminals: set[str]) -> set[str]:
    """The terminals that the parser in `state` can really take next (see `accepts`)."""
    if state is None:
        return terminals
    accepted = set()
    for terminal in terminals:
        try:
            trial = state.copy()
            trial.feed_token(Token(terminal, ""), terminal == "$END")
        except lark.exceptions.UnexpectedToken:
            continue
        except Exception:  # an internal change in lark: fall back to the lexer's list
            return terminals
        accepted.add(terminal)
    return accepted or terminals


@cache
def _example_errors() -> tuple[tuple[tuple[str, str | None], int, frozenset[str], str, str], ...]:
    """Each example's error: (label, the parser's state, what it accepts, token type, token text)."""
    found = []
    for label, examples in _EXAMPLES.items():
        for example in examples:
            try:
                _parser().parse(example + "\n")
            except lark.exceptions.UnexpectedToken as error:
                found.append(
                    (label, error.state.position, frozenset(error.accepts or ()), error.token.type, error.token)
                )
            except lark.exceptions.UnexpectedInput:  # pragma: no cover - every example ends in a wrong token
                continue
    return tuple(found)


def _match_example(error: lark.exceptions.UnexpectedInput) -> tuple[str, str | None] | None:
    """The label of the example whose error the parser meets in the same state, with the
    same next tokens (an exact token first, else one of the same type, else the state).

    Lark's own match_examples also compares the depth of the parser's stack, which a
    leading comment, a blank line or an earlier definition changes, so its labels
    matched only in a file that starts with the mistaken definition.
    """
    if not isinstance(error, lark.exceptions.UnexpectedToken) or error.state is None:
        return None
    try:
        position, accepts = error.state.position, frozenset(error.accepts or ())
        candidates = [entry for entry in _example_errors() if entry[1] == position and entry[2] == accepts]
    except Exception:  # best effort; never mask the real error
        return None
    for wanted in (
        lambda entry: entry[4] == error.token,
        lambda entry: entry[3] == error.token.type,
        lambda entry: True,
    ):
        for entry in candidates:
            if wanted(entry):
                return entry[0]
    return None


def _unclosed_brace(source: Source, before: int | None = None) -> Pos | None:
    """The innermost '{' never closed (at the end of the file, or open before line `before`).

    Braces pair up by nesting, but where a '}' that begins its line stands left of the
    line an open '{' is on, the indentation says which it closes: the braces opened
    further in, on more indented lines, are the ones never closed (a stem's '{' whose
    '}' is missing, so that the network's '}' closes the stem).
    """
    open_braces, skipped = _open_braces(source, before)
    if skipped:
        return skipped[-1]
    return open_braces[-1] if open_braces else None


def _open_braces(source: Source, before: int | None = None) -> tuple[list[Pos], list[Pos]]:
    """The braces still open (outermost first) and those that indentation says were never
    closed, in the order their closers were found."""
    stack: list[tuple[int, int, int]] = []  # line, column, the line's indentation
    skipped: list[Pos] = []
    lines = source.text.splitlines()
    for number, text in enumerate(lines[: None if before is None else before - 1], start=1):
        code = text.split("#", 1)[0]
        indent = len(code) - len(code.lstrip(" \t"))
        for index, char in enumerate(code, start=1):
            if char == "{":
                stack.append((number, index, indent))
            elif char == "}" and stack:
                if index == indent + 1:  # a closer that begins its line
                    while len(stack) > 1 and stack[-1][2] > indent and stack[-2][2] <= indent:
                        line, column, _ = stack.pop()
                        skipped.append(Pos(source, line, column, line, column + 1))
                stack.pop()

    def at(line: int, column: int) -> Pos:
        return Pos(source, line, column, line, column + 1)

    return [at(line, column) for line, column, _ in stack], skipped


# Tree to AST -----------------------------------------------------------------


def _args(items) -> tuple:
    return tuple(item for item in items if item is not None)


@v_args(inline=True, meta=True)
class _ToAst(Transformer_NonRecursive):
    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        # Depth of each operator node built so far, by id: the transformer runs bottom
        # up, so a parent's depth follows from its children's without recursing.
        self.depths: dict[int, int] = {}

    def _nest(self, node, *children):
        depth = 1 + max((self.depths.get(id(child), 0) for child in children), default=0)
        if depth > MAX_EXPRESSION_TREE_DEPTH:
            raise LimitError(
                f"expression nested deeper than {MAX_EXPRESSION_TREE_DEPTH} operators",
                node.pos,
                "simplify the expression",
            )
        self.depths[id(node)] = depth
        return node

    def _pos(self, meta) -> Pos:
        return Pos(self.source, meta.line, meta.column, meta.end_line, meta.end_column)

    def _tpos(self, token: Token) -> Pos:
        return Pos(self.source, token.line, token.column, token.end_line, token.end_column)

    def _plain(self, token: Token, what: str) -> str:
        """A name that is not a module path: dots are for labels and stage names only."""
        if "." in token:
            raise SpecSyntaxError(
                f"a {what} is a plain name, not a path: '{token}'",
                self._tpos(token),
                "dotted names are allowed only as labels and stage names (module paths)",
            )
        return str(token)

    def start(self, meta, *definitions):
        return ast.Module(self.source, list(definitions))

    def use(self, meta, string: Token):
        return ast.Use(string.value[1:-1], self._pos(meta))

    def block(self, meta, name: Token, params, body):
        return ast.Block(self._plain(name, "block name"), params or (), body, self._pos(meta), self._tpos(name))

    def network(self, meta, name: Token, params, body):
        return ast.Network(self._plain(name, "network name"), params or (), body, self._pos(meta), self._tpos(name))

    def network_alias(self, meta, name: Token, base: Token, args, overrides):
        return ast.NetworkAlias(
            self._plain(name, "network name"),
            self._plain(base, "network name"),
            args or (),
            overrides or (),
            self._pos(meta),
            self._tpos(name),
            self._tpos(base),
        )

    def _bounded(self, meta, items: tuple, what: str) -> tuple:
        if len(items) > MAX_ARGUMENTS:
            raise LimitError(
                f"more than {MAX_ARGUMENTS} {what}",
                self._pos(meta),
                "no layer or block takes so many; gather repeated structure into a block",
            )
        return items

    def params(self, meta, *params):
        return self._bounded(meta, _args(params), "parameters")

    def param(self, meta, name: Token, default):
        return ast.Param(self._plain(name, "parameter name"), default, self._pos(meta))

    def overrides(self, meta, *overrides):
        return self._bounded(meta, _args(overrides), "settings in one 'with'")

    def override(self, meta, name: Token, value):
        return ast.Override(str(name), value, self._pos(meta))

    def body(self, meta, *statements):
        return _args(statements)

    network_body = body

    def section(self, meta, kind: Token, body):
        return ast.Section(str(kind), body, self._pos(meta))

    def stage(self, meta, name: Token, repeat, block, args=None):
        if isinstance(block, ast.Call):
            return ast.Stage(
                str(name), repeat, block.name, block.args, self._pos(meta), self._tpos(name), block.name_pos
            )
        return ast.Stage(
            str(name), repeat, str(block), args or (), self._pos(meta), self._tpos(name), self._tpos(block)
        )

    def call(self, meta, token: Token, *args):
        name = str(token)[:-1]
        name_pos = Pos(self.source, token.line, token.column, token.line, token.column + len(name))
        return ast.Call(name, _args(args), self._pos(meta), name_pos)

    def call_statement(self, meta, label, call: ast.Call):
        return ast.Statement(
            call.name,
            call.args,
            str(label) if label is not None else None,
            self._pos(meta),
            call.name_pos,
            self._tpos(label) if label is not None else None,
            called=True,
        )

    def branch(self, meta, label, join: Token, body):
        return ast.Branch(
            str(join),
            body,
            str(label) if label is not None else None,
            self._pos(meta),
            self._tpos(join),
            self._tpos(label) if label is not None else None,
        )

    def if_statement(self, meta, _if, condition, then, _else=None, otherwise=None):
        if isinstance(otherwise, ast.If):
            otherwise = (otherwise,)
        return ast.If(condition, then, otherwise or (), self._pos(meta))

    def statement(self, meta, label, kind: Token, *args):
        return ast.Statement(
            str(kind),
            self._bounded(meta, _args(args), "arguments"),
            str(label) if label is not None else None,
            self._pos(meta),
            self._tpos(kind),
            self._tpos(label) if label is not None else None,
        )

    def call_args(self, meta, *args):
        return self._bounded(meta, _args(args), "arguments")

    def positional(self, meta, value):
        return ast.Positional(value, self._pos(meta))

    def keyword(self, meta, name: Token, value):
        return ast.Keyword(self._plain(name, "keyword"), value, self._pos(meta), self._tpos(name))

    def binop(self, meta, left, op: Token, right):
        return self._nest(ast.BinOp(str(op), left, right, self._pos(meta)), left, right)

    def unary(self, meta, op: Token, operand):
        return self._nest(ast.Unary(str(op), operand, self._pos(meta)), operand)

    def number(self, meta, token: Token):
        return ast.Number(literal(str(token), self._tpos(token)), self._tpos(token))

    def dims(self, meta, token: Token):
        pos = self._tpos(token)
        return ast.Dims(tuple(literal(part, pos) for part in str(token).split("x")), pos)

    def name(self, meta, token: Token):
        return ast.Name(str(token), self._tpos(token))

    def label(self, meta, token: Token) -> Token:
        return token

    def index(self, meta, target, index):
        return self._nest(ast.Index(target, index, self._pos(meta)), target, index)

    def list(self, meta, *items):
        items = self._bounded(meta, _args(items), "items in one list")
        return self._nest(ast.ListExpr(items, self._pos(meta)), *items)

    def for_statement(self, meta, _for, name: Token, _in, start, _range, stop, body):
        return ast.For(self._plain(name, "loop variable"), start, stop, body, self._pos(meta), self._tpos(name))

    def let_statement(self, meta, _let, name: Token, index, value):
        return ast.Let(self._plain(name, "value name"), index, value, self._pos(meta), self._tpos(name))

    def from_statement(self, meta, _from, value):
        return ast.From(value, self._pos(meta))


def write_tables() -> None:
    """Rebuild grammar/resdsl.tables.json after the grammar changed (``python grammar/build_tables.py``)."""
    from resdsl.files import write_file

    write_file(tables_path(), build_tables())
