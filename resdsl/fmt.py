"""``resdsl fmt``: one canonical layout for ``.res`` files.

The formatter works on tokens, not on the parse tree, so that it keeps up with the
grammar as the language grows and never loses a comment: its own small lexer
(:func:`tokenize`) splits the text, and :func:`format_text` lays the tokens out again:

- four spaces of indentation per open brace, one statement per line (``a; b``
  becomes two lines), ``{`` at the end of its line, ``}`` on a line of its own
  except in ``} else {``;
- one space after ``,`` and ``:`` and none before; spaces around binary operators and
  comparisons, none after a sign; ``stride=2`` in arguments and parameters, but
  ``network a = b(...)`` for an alias; no space between a name and its ``(`` in
  calls (``basic(64)``, ``min(a, b)``), except after a statement's first word, where
  ``conv (k), 64`` and ``se(64)`` differ in meaning and keep the spacing they have;
- at most one blank line in a row, none just inside braces, exactly one before each
  top-level ``block`` and ``network`` (with the comments that lead into it);
- comments stay where they stand: on their own line (re-indented) or after code
  (two spaces before the ``#``);
- ``\\`` continuations are joined, and a statement longer than :data:`LINE_WIDTH`
  columns is wrapped after its commas, greedily, continuation lines indented by
  eight more spaces.

A file is formatted only if the compiler's parser accepts it, and the result is
parsed again and compared with the original, positions aside: should the two differ
(a bug in the formatter), the file is left untouched.
"""

from __future__ import annotations

import argparse
import difflib
import re
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

from resdsl import tokens as token_patterns
from resdsl.cli_support import EXIT_OK, EXIT_SPEC, UsageError
from resdsl.errors import CompilerBug, LimitError, Pos, Source, SpecError, SpecSyntaxError, UseError
from resdsl.files import kind_of, write_file
from resdsl.frontend import decode_spec, read_spec
from resdsl.ir import Limits
from resdsl.tokens import KEYWORDS

#: Longest line the formatter writes where a statement can be wrapped after a comma.
LINE_WIDTH = 100
INDENT = "    "
CONTINUATION_INDENT = INDENT * 2

#: Exit status when the formatter itself fails (as the command line's CompilerBug).
EXIT_BUG = 3

# Token kinds.
NAME, SIZE, NUMBER, STRING, OP, EQUAL = "NAME", "SIZE", "NUMBER", "STRING", "OP", "EQUAL"
LBRACE, RBRACE, LPAR, RPAR, COMMA, COLON = "LBRACE", "RBRACE", "LPAR", "RPAR", "COMMA", "COLON"
LSQB, RSQB = "LSQB", "RSQB"
SEMI, NEWLINE, COMMENT, CONTINUATION = "SEMI", "NEWLINE", "COMMENT", "CONTINUATION"

_PUNCTUATION = {
    "{": LBRACE,
    "}": RBRACE,
    "(": LPAR,
    ")": RPAR,
    "[": LSQB,
    "]": RSQB,
    ",": COMMA,
    ":": COLON,
    ";": SEMI,
}

# Alternatives tried at each position, from resdsl/tokens.py; sizes, reals and integers
# compete by length, as they do in the compiler's lexer (3x3 is one size; 64x is 64 and then x).
_SKIP = re.compile(r"[ \t\f]+")
_CONTINUATION = re.compile(r"\\\r?\n")
_NEWLINE = re.compile(r"\r?\n")
_COMMENT = re.compile(token_patterns.COMMENT)  # as the compiler reads it: a lone CR is comment text
_STRING = re.compile(token_patterns.STRING)
_OPERATOR = re.compile(token_patterns.OPERATOR)
_NUMBERS = (
    re.compile(token_patterns.SIZE),
    re.compile(token_patterns.REAL),
    re.compile(token_patterns.INTEGER),
)
_TEMPLATE = re.compile(token_patterns.TEMPLATE)
_OUTER_LABEL = re.compile(token_patterns.OUTER_LABEL)
_NAME = re.compile(token_patterns.NAME)


@dataclass
class Token:
    kind: str
    text: str
    line: int
    column: int
    space_before: bool = False  # whitespace (or a continuation) separates it from the token before

    @property
    def is_keyword(self) -> bool:
        return self.kind == NAME and self.text in KEYWORDS

    @property
    def is_word(self) -> bool:
        return self.kind in (NAME, SIZE, NUMBER, STRING)


def tokenize(text: str, path: str = "<string>") -> list[Token]:
    """Split .res text into tokens, comments and line ends included."""
    source = Source(path, text)
    if text.startswith("\ufeff"):
        text = text[1:]
    tokens: list[Token] = []
    position, line, line_start = 0, 1, 0
    space = False
    while position < len(text):
        column = position - line_start + 1
        if match := _SKIP.match(text, position):
            space, position = True, match.end()
            continue
        if match := _CONTINUATION.match(text, position):
            space, position = True, match.end()
            line, line_start = line + 1, position
            continue
        if match := _NEWLINE.match(text, position):
            tokens.append(Token(NEWLINE, "\n", line, column, space))
            space, position = False, match.end()
            line, line_start = line + 1, position
            continue
        char = text[position]
        kind = None
        match = None
        if char == "#":
            kind, match = COMMENT, _COMMENT.match(text, position)
        elif char == '"':
            kind, match = STRING, _STRING.match(text, position)
        elif char == "{" and (match := _TEMPLATE.match(text, position)):
            kind = NAME  # a label that starts with an interpolation, such as {i} or {i}.conv
        elif char in _PUNCTUATION:
            kind, match = _PUNCTUATION[char], re.compile(re.escape(char)).match(text, position)
        elif char.isdigit() or (char == "." and text[position + 1 : position + 2].isdigit()):
            candidates = [found for pattern in _NUMBERS if (found := pattern.match(text, position))]
            match = max(candidates, key=lambda found: found.end())
            kind = SIZE if "x" in match.group() else NUMBER
        elif match := _OUTER_LABEL.match(text, position):
            kind = NAME  # a label such as ..convShortcut
        elif match := _OPERATOR.match(text, position):
            kind = OP
        elif char == "=":
            kind, match = EQUAL, re.compile("=").match(text, position)
        elif match := _TEMPLATE.match(text, position):
            kind = NAME  # a label such as convs.{i}
        elif match := _NAME.match(text, position):
            kind = NAME
        if kind is None or match is None:
            pos = Pos(source, line, column, line, column + 1)
            raise SpecSyntaxError(f"unexpected character {char!r}; the formatter does not know it", pos)
        tokens.append(Token(kind, match.group().rstrip("\r"), line, column, space))
        space, position = False, match.end()
    return tokens


# Layout ---------------------------------------------------------------------------


@dataclass
class _Line:
    depth: int
    tokens: list[Token] = field(default_factory=list)
    comment: str | None = None
    blank_before: bool = False
    last_source_line: int = 0  # the source line of its last token: where a trailing comment belongs

    @property
    def is_comment(self) -> bool:
        return not self.tokens and self.comment is not None

    @property
    def first(self) -> str | None:
        return self.tokens[0].text if self.tokens else None


def _lay_out(tokens: list[Token]) -> list[_Line]:
    """Group tokens into output lines, with their depth, comments and blank lines."""
    lines: list[_Line] = []
    current: _Line | None = None
    depth = parens = 0
    newlines = 0  # line ends since the last token or comment: 2 or more make a blank line
    last: _Line | None = None  # the line that holds the last code token written

    def start() -> _Line:
        nonlocal current, newlines
        if current is None:
            current = _Line(depth, blank_before=newlines >= 2)
            lines.append(current)
        newlines = 0
        return current

    def finish() -> None:
        nonlocal current
        current = None

    for index, token in enumerate(tokens):
        if token.kind == NEWLINE:
            if parens > 0:
                continue  # a newline inside parentheses, where a grammar allows one, is only a space
            if current is not None:
                finish()
                newlines = 1
            else:
                newlines += 1
            continue
        if token.kind == SEMI and parens == 0:
            finish()
            continue
        if token.kind == COMMENT:
            text = token.text.rstrip()
            if last is not None and last.last_source_line == token.line:
                last.comment = text if last.comment is None else f"{last.comment} {text}"
                continue
            finish()
            line = start()
            line.comment = text
            finish()
            continue
        if token.kind == RBRACE:
            finish()
            depth = max(0, depth - 1)
        line = start()
        line.tokens.append(token)
        line.last_source_line = token.line
        last = line
        if token.kind == LPAR:
            parens += 1
        elif token.kind == RPAR:
            parens = max(0, parens - 1)
        elif token.kind == LBRACE:
            depth += 1
            finish()
        elif token.kind == RBRACE:
            following = tokens[index + 1] if index + 1 < len(tokens) else None
            # `} else {` stays on one line; anything else after a brace starts a new one.
            if following is None or following.kind in (NEWLINE, SEMI, COMMENT, RBRACE):
                finish()
    return lines


_DEFINITIONS = ("block", "network")


def _space_lines(lines: list[_Line]) -> None:
    """Blank lines: none just inside braces, one before each top-level definition."""
    for index, line in enumerate(lines):
        previous = lines[index - 1] if index else None
        if previous is None or line.first == "}" or (previous.tokens and previous.tokens[-1].kind == LBRACE):
            line.blank_before = False
    seen_definition = False
    for index, line in enumerate(lines):
        if line.depth != 0 or line.first not in (*_DEFINITIONS, "use"):
            continue
        if seen_definition and not (line.first == "use" and _previous_definition(lines, index) == "use"):
            lead = index
            # The comments right above a definition lead into it: the blank line goes above them.
            while lead > 0 and not lines[lead].blank_before and _top_comment(lines[lead - 1]):
                lead -= 1
            if lead > 0:
                lines[lead].blank_before = True
        seen_definition = True


def _top_comment(line: _Line) -> bool:
    return line.is_comment and line.depth == 0


def _previous_definition(lines: list[_Line], index: int) -> str | None:
    for line in reversed(lines[:index]):
        if line.depth == 0 and line.first in (*_DEFINITIONS, "use"):
            return line.first
    return None


# Spacing within a line ---------------------------------------------------------------


def _head_words(tokens: list[Token]) -> set[int]:
    """Indexes of the words that begin a statement (a layer kind, a setting, a block).

    After such a word, ``-1`` is an argument, not a subtraction, and a ``(`` may open
    an argument or a call, so the source's spacing decides.
    """
    heads: set[int] = set()
    if not tokens:
        return heads
    first = tokens[0]
    if first.kind == NAME and not first.is_keyword:
        if len(tokens) > 2 and tokens[1].kind == COLON and tokens[2].kind == NAME and not tokens[2].is_keyword:
            heads.add(2)
        elif not (len(tokens) > 1 and tokens[1].kind == COLON):
            heads.add(0)
    parens = 0
    in_with = False
    for index, token in enumerate(tokens):
        if token.kind == LPAR:
            parens += 1
        elif token.kind == RPAR:
            parens -= 1
        elif token.kind == NAME and token.text == "with":
            in_with = True
        elif in_with and parens == 0 and token.kind == NAME and not token.is_keyword:
            previous = tokens[index - 1]
            if previous.text == "with" or previous.kind == COMMA:
                heads.add(index)
    return heads


def _render(tokens: list[Token]) -> tuple[str, list[int]]:
    """The line's text, and the offsets just after each comma (where it may wrap)."""
    heads = _head_words(tokens)
    # `network a = b(...)` and `let last = s[3]` space their '='; arguments (stride=2) do not.
    alias = bool(tokens) and tokens[0].text in ("network", "let")
    out: list[str] = []
    breaks: list[int] = []
    parens = 0
    unary = False  # the previous token was a sign
    length = 0
    for index, token in enumerate(tokens):
        previous = tokens[index - 1] if index else None
        is_sign = token.kind == OP and token.text in "+-" and _starts_operand(tokens, index, heads)
        if previous is not None:
            gap = _gap(previous, token, index - 1 in heads, unary, alias and parens == 0, is_sign)
            out.append(gap)
            length += len(gap)
            if previous.kind == COMMA:
                breaks.append(length)
        out.append(token.text)
        length += len(token.text)
        unary = is_sign
        if token.kind == LPAR:
            parens += 1
        elif token.kind == RPAR:
            parens -= 1
    return "".join(out), breaks


def _starts_operand(tokens: list[Token], index: int, heads: set[int]) -> bool:
    """Whether the sign at `index` is unary: nothing it could subtract from stands before it."""
    if index == 0:
        return True
    previous = tokens[index - 1]
    if index - 1 in heads:
        return True
    if previous.kind in (OP, LPAR, LSQB, COMMA, EQUAL, COLON, LBRACE):
        return True
    return previous.is_keyword and previous.text not in ("true", "false")


def _gap(previous: Token, token: Token, previous_is_head: bool, unary: bool, spaced_equal: bool, sign: bool) -> str:
    """The space between two tokens on one line."""
    if token.kind in (COMMA, RPAR, RSQB, COLON, SEMI):
        return ""
    if previous.kind in (LPAR, LSQB):
        return ""
    if token.kind == LSQB:
        # `s[i]` indexes; `split [64, 64]` and `, [p0, p1]` write a list.
        if previous.kind in (RSQB, RPAR) or (previous.kind == NAME and not previous.is_keyword):
            return "" if not previous_is_head else " "
        return " "
    if previous.kind == EQUAL or token.kind == EQUAL:
        return " " if spaced_equal else ""
    if unary:
        # `- -1` keeps its space: `--` might lex as one operator.
        return " " if token.kind == OP else ""
    if token.kind == LPAR:
        if previous.kind == NAME and not previous.is_keyword:
            if previous_is_head:
                return " " if token.space_before else ""
            return ""
        return " " if previous.kind in (NAME, OP, COMMA, COLON, RBRACE, SIZE, NUMBER, STRING) else ""
    if token.kind == OP and sign:
        return " " if previous.kind not in (LPAR,) else ""
    return " "


def _wrap(indent: str, text: str, breaks: list[int], comment: str | None) -> list[str]:
    """The line, wrapped after commas if it is too long."""
    suffix = f"  {comment}" if comment else ""
    if len(indent) + len(text) <= LINE_WIDTH or not breaks:
        return [f"{indent}{text}{suffix}".rstrip()]
    pieces = []
    start = 0
    for offset in breaks:
        pieces.append(text[start:offset].rstrip())
        start = offset
    pieces.append(text[start:])
    lines: list[str] = []
    current = indent + pieces[0]
    for piece in pieces[1:]:
        candidate = f"{current} {piece}"
        limit = LINE_WIDTH if piece is pieces[-1] else LINE_WIDTH - 2  # room for " \"
        if len(candidate) <= limit:
            current = candidate
        else:
            lines.append(f"{current} \\")
            current = indent + CONTINUATION_INDENT + piece
    lines.append(f"{current}{suffix}".rstrip())
    return lines


def format_tokens(tokens: list[Token]) -> str:
    lines = _lay_out(tokens)
    _space_lines(lines)
    out: list[str] = []
    for line in lines:
        if line.blank_before:
            out.append("")
        indent = INDENT * line.depth
        if line.is_comment:
            out.append(f"{indent}{line.comment}")
            continue
        text, breaks = _render(line.tokens)
        out.extend(_wrap(indent, text, breaks, line.comment))
    return "\n".join(out) + "\n" if out else ""


# Meaning --------------------------------------------------------------------------


def _shape(node: object) -> object:
    """An AST without its positions: what two layouts of one file must share."""
    if isinstance(node, (Pos, Source)):
        return None
    if is_dataclass(node) and not isinstance(node, type):
        values = vars(node)  # the AST's dataclasses keep their fields in __dict__
        return (
            type(node).__name__,
            tuple(
                (item.name, _shape(values[item.name]))
                for item in fields(node)
                if not isinstance(values[item.name], (Pos, Source))
            ),
        )
    if isinstance(node, (list, tuple)):
        return tuple(_shape(item) for item in node)
    if isinstance(node, dict):
        return tuple(sorted((key, _shape(value)) for key, value in node.items()))
    return node


def _parse(text: str, path: str):
    from resdsl.parser import parse

    return parse(text, path)


def format_text(text: str, path: str = "<string>") -> str:
    """The canonical layout of `text`.

    Raises the parser's SpecError if the text does not parse, and CompilerBug if the
    layout would parse to something else (then nothing should be written).
    """
    before = _parse(text, path)
    formatted = format_tokens(tokenize(text, path))
    try:
        after = _parse(formatted, path)
    except SpecError as error:
        raise CompilerBug(f"resdsl fmt: the formatted {path} would not parse ({error.message})") from None
    if _shape(before) != _shape(after):
        raise CompilerBug(f"resdsl fmt: formatting {path} would change its meaning; it is left as it was")
    return formatted


# Command line ---------------------------------------------------------------------


def spec_files(paths: list[str], refused: Callable[[Path, str], None] | None = None) -> Iterator[Path]:
    """The .res files named, folders searched recursively, each once, in order.

    In a folder, only regular files are taken: a FIFO, a device or a folder named
    ``*.res`` is passed to `refused` with the reason, and so is a link that leads
    out of the folder (formatting it would rewrite a file elsewhere). A link inside
    the folder is followed to its file, which is formatted once.
    """
    seen: set[Path] = set()
    for name in paths:
        path = Path(name)
        try:
            is_dir, exists = path.is_dir(), path.exists() or path.is_symlink()
        except OSError as error:  # a name too long for the OS
            raise UseError(f"cannot read: {error.strerror or error}", file=name[:300]) from None
        if is_dir:
            found = _folder_files(path, refused)
        elif exists:
            found = [path]
        else:
            raise UseError(f"no such file or folder: {name[:300]}", file=name[:300])
        for item in found:
            try:
                key = item.resolve()
            except (OSError, RuntimeError):  # a link loop: read_spec reports it
                key = item.absolute()
            if key not in seen:
                seen.add(key)
                yield item


def _folder_files(folder: Path, refused: Callable[[Path, str], None] | None) -> Iterator[Path]:
    root = folder.resolve()
    for item in sorted(folder.rglob("*.res")):
        try:
            mode = item.stat().st_mode
            target = item.resolve()
        except (OSError, RuntimeError) as error:
            reason = getattr(error, "strerror", None) or "a link that leads nowhere (or loops)"
            if refused:
                refused(item, f"skipped: {reason}")
            continue
        if not stat.S_ISREG(mode):
            if refused:
                refused(item, f"skipped: {kind_of(mode)}, not a regular file")
            continue
        if item.is_symlink() and not target.is_relative_to(root):
            if refused:
                refused(item, f"skipped: a link to {target}, outside {folder} (name that file itself to format it)")
            continue
        yield target if item.is_symlink() else item


def cmd_fmt(args: argparse.Namespace) -> int:
    if args.paths == ["-"]:
        return _format_stdin(args)
    if "-" in args.paths:
        raise UsageError("'-' (standard input) cannot be mixed with paths")
    status = EXIT_OK
    changed: list[Path] = []

    def refuse(path: Path, reason: str) -> None:
        nonlocal status
        print(f"{path}: {reason}", file=sys.stderr)
        status = max(status, EXIT_SPEC)

    for path in spec_files(args.paths, refuse):
        try:
            # Read exactly as the compiler reads (bytes, strict UTF-8, line ends as they are,
            # regular files within the size bound), so that what is formatted is what compiles.
            text = read_spec(path, Limits()).text
            formatted = format_text(text, str(path))
        except SpecError as error:
            print(error, file=sys.stderr)
            status = max(status, EXIT_SPEC)
            continue
        except CompilerBug as error:
            # Our fault, not the spec's: say so, keep the file, go on with the others.
            print(f"{error}\n(this is a bug in resdsl, not in your spec: please report it)", file=sys.stderr)
            status = EXIT_BUG
            continue
        if formatted == text:
            continue
        changed.append(path)
        if args.diff:
            sys.stdout.writelines(_diff(text, formatted, str(path)))
        if args.check:
            print(f"would reformat {path}", file=sys.stderr)
        elif not args.diff:
            try:
                # A link named on the command line: its file is rewritten, never the link replaced by a copy.
                write_file(path.resolve() if path.is_symlink() else path, formatted)
            except SpecError as error:
                print(error, file=sys.stderr)
                status = max(status, EXIT_SPEC)
                continue
            print(f"reformatted {path}", file=sys.stderr)
    if args.check and changed:
        status = max(status, EXIT_SPEC)
    return status


def _diff(text: str, formatted: str, name: str) -> Iterator[str]:
    return difflib.unified_diff(text.splitlines(keepends=True), formatted.splitlines(keepends=True), name, name)


def _format_stdin(args: argparse.Namespace) -> int:
    limit = Limits().max_file_bytes
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read(limit + 1) if stream is not None else sys.stdin.read(limit + 1).encode("utf-8", "surrogatepass")
    if len(data) > limit:
        raise LimitError(f"the spec is larger than the limit of {limit:,} bytes", file="<stdin>")
    text = decode_spec(data, "<stdin>")
    formatted = format_text(text, "<stdin>")
    if args.check:
        return EXIT_SPEC if formatted != text else EXIT_OK
    if args.diff:
        sys.stdout.writelines(_diff(text, formatted, "<stdin>"))
    else:
        sys.stdout.write(formatted)
    return EXIT_OK


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "fmt",
        help="lay out .res files in the canonical style",
        description="Rewrite .res files in one canonical layout (indentation, spacing, one statement per "
        "line, comments kept where they stand). Folders are searched for .res files; '-' formats standard "
        "input to standard output. A file that does not parse is reported and left untouched.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a .res file, a folder of them, or - for stdin")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and name the files that would change"
    )
    parser.add_argument("--diff", action="store_true", help="change nothing; print a unified diff of the changes")
    parser.set_defaults(run=cmd_fmt)


__all__ = ["LINE_WIDTH", "Token", "format_text", "register", "spec_files", "tokenize"]
