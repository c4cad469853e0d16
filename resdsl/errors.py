"""Diagnostics: every error that bad input causes is a :class:`SpecError`.

A diagnostic carries the position it is about, so that ``str(error)`` reads like a
compiler's::

    specs/bad.res:7:24: unknown block 'bottlenek'
        stage conv2_x: 3 x bottlenek(64)
                           ^~~~~~~~~
      hint: did you mean 'bottleneck'?

Notes add secondary positions (the block line behind a stage line, say); the hint
says how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Longest stretch of a source line that a diagnostic quotes.
QUOTE_WIDTH = 100
#: Most errors one run reports (as compilers stop after a screenful).
MAX_ERRORS = 20


@dataclass(frozen=True)
class Source:
    """The text of one spec file, kept so that diagnostics can quote it."""

    path: str
    text: str = field(repr=False)

    def line(self, number: int) -> str:
        # Lines as the parser counts them: split at LF only (splitlines would also split at a
        # lone CR, a form feed or U+2028 inside a comment, and quote the wrong line). What
        # follows a CR is not shown: a terminal would print it over the line; outside a
        # comment the CR itself is the error, inside one the rest is comment text.
        lines = self.text.split("\n")
        if 1 <= number <= len(lines):
            return lines[number - 1].split("\r", 1)[0]
        return ""


@dataclass(frozen=True)
class Pos:
    """A span in a source file: 1-based line and column, end exclusive."""

    source: Source
    line: int
    column: int
    end_line: int
    end_column: int

    @property
    def path(self) -> str:
        return self.source.path

    def __repr__(self) -> str:
        return f"Pos({self})"

    def __str__(self) -> str:
        return f"{self.source.path}:{self.line}:{self.column}"

    def quote(self, indent: str = "    ") -> str:
        """The source line and a caret under this span."""
        text = self.source.line(self.line).expandtabs(4).rstrip()
        if not text:
            return ""
        start = self.column - 1
        width = self.end_column - self.column if self.end_line == self.line else len(text) - start
        width = max(1, min(width, len(text) - start))
        # Strip the common leading indentation so quotes line up in the message.
        stripped = text.lstrip()
        shift = len(text) - len(stripped)
        offset = max(0, start - shift)
        # A generated or pathological line (thousands of parentheses) would bury the
        # message: show a window around the caret instead of the whole line.
        if len(stripped) > QUOTE_WIDTH:
            left = max(0, min(offset - QUOTE_WIDTH // 3, len(stripped) - QUOTE_WIDTH))
            window = stripped[left : left + QUOTE_WIDTH]
            prefix = "..." if left > 0 else ""
            suffix = "..." if left + QUOTE_WIDTH < len(stripped) else ""
            width = min(width, QUOTE_WIDTH - (offset - left))
            stripped, offset = prefix + window + suffix, offset - left + len(prefix)
        caret = " " * offset + "^" + "~" * (width - 1)
        return f"{indent}{stripped}\n{indent}{caret}"


@dataclass
class Note:
    message: str
    pos: Pos | None = None


@dataclass
class SpecError(Exception):
    """The one base class of every error caused by bad input.

    ``str(e)`` is ``path:line:col: message``, then the quoted source line with a
    caret, then notes and a hint.
    """

    message: str
    pos: Pos | None = None
    hint: str | None = None
    notes: list[Note] = field(default_factory=list)
    file: str | None = None  # the file concerned, where no position in it applies
    #: Further independent errors of the same run, in the order of the file; ``str()``
    #: prints them after this one. The attributes above are the first error's.
    also: list[SpecError] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    @property
    def errors(self) -> list[SpecError]:
        """This error and every further one, each on its own (their ``also`` empty)."""
        first = _rebuild(type(self), self.message, self.pos, self.hint, self.notes, self.file)
        return [first, *self.also]

    @classmethod
    def several(cls, errors: list[SpecError]) -> SpecError:
        """One exception for independent errors: the first, carrying the rest (bounded
        by MAX_ERRORS, the same message at the same place once)."""
        unique: list[SpecError] = []
        seen: set[tuple] = set()
        for error in (one for each in errors for one in each.errors):
            key = (error.message, str(error.pos) if error.pos else error.file)
            if key not in seen:
                seen.add(key)
                unique.append(error)
        # In the order of the file, as a compiler lists them.
        unique.sort(key=lambda error: (error.path or "", error.line or 0, error.column or 0))
        first = unique[0]
        first.also = unique[1:MAX_ERRORS]
        return first

    @property
    def path(self) -> str | None:
        return self.pos.path if self.pos else self.file

    @property
    def line(self) -> int | None:
        return self.pos.line if self.pos else None

    @property
    def column(self) -> int | None:
        return self.pos.column if self.pos else None

    def with_note(self, message: str, pos: Pos | None = None) -> SpecError:
        self.notes.append(Note(message, pos))
        return self

    #: What precedes the message: nothing for an error, "warning: " for a SpecWarning.
    severity_prefix = ""

    def __str__(self) -> str:
        where = self.pos or self.file
        message = self.severity_prefix + self.message
        head = f"{where}: {message}" if where else message
        parts = [head]
        if self.pos and (quote := self.pos.quote()):
            parts.append(quote)
        for note in self.notes:
            where = f" ({note.pos})" if note.pos else ""
            parts.append(f"  note: {note.message}{where}")
            if note.pos and (quote := note.pos.quote("      ")):
                parts.append(quote)
        if self.hint:
            parts.append(f"  hint: {self.hint}")
        for other in self.also:
            parts += ["", str(other)]
        if self.also:
            parts += ["", f"{len(self.also) + 1} errors"]
        return "\n".join(parts)

    def __reduce__(self):  # keep errors picklable (multiprocessing, pytest-xdist)
        return (_rebuild, (type(self), self.message, self.pos, self.hint, self.notes, self.file, self.also))


def _rebuild(cls, message, pos, hint, notes, file, also=()):
    error = cls(message, pos, hint, list(notes), file)
    error.also = list(also)
    return error


class SpecWarning(SpecError):
    """Something a spec says that compiles but is most likely not what was meant (a block
    parameter that a caller passes and nothing reads). Never raised: the compiled network
    lists them (``Network.warnings``), the command line prints them on stderr as
    ``path:line:col: warning: ...`` and exits 0, and ``--werror`` makes them errors."""

    severity_prefix = "warning: "

    def as_error(self) -> SpecError:
        """The same diagnostic as an error (``--werror``)."""
        return SpecError(self.message, self.pos, self.hint, list(self.notes), self.file)


class SpecSyntaxError(SpecError):
    """The text does not follow the grammar."""


class UnknownNameError(SpecError):
    """A block, layer kind, parameter, setting or network that does not exist."""


class ValueNameError(SpecError):
    """A named value (``let``, ``from``, a join's operands) used wrongly: read before it
    is bound, bound twice, never read, indexed out of range. Reported where it is
    written, inside the block, not at the stage that uses the block."""


class ShapeError(SpecError):
    """Dimensions that cannot work: sizes reaching zero, channels that do not divide..."""


class UseError(SpecError):
    """A file that cannot be read or imported: missing, cyclic, not UTF-8..."""


class LimitError(SpecError):
    """A spec that would exceed a size bound (layers, parameters, nesting, file size)."""


class CompilerBug(Exception):
    """An internal error: a pass crashed on input it should have handled.

    Not a SpecError: it is our fault, not the spec's. The message names the pass.
    """


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like `name`, if any is close enough to suggest."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if not matches:
        lowered = {k.lower(): k for k in known}
        if name.lower() in lowered:
            return lowered[name.lower()]
    return matches[0] if matches else None


def unknown(
    what: str, name: str, known: Iterable[str], pos: Pos | None, of: str | None = None, guess: str | None = None
) -> UnknownNameError:
    """An UnknownNameError that suggests the closest known name, or lists them all.

    ``of`` names the owner (``block 'basic'``) after the name, so the message reads
    "unknown parameter 'strde' of block 'basic'"; ``guess`` overrides the spelling-based
    suggestion (a synonym such as batchnorm -> bn that no edit distance would find).
    """
    known = sorted(set(known))
    guess = guess or closest(name, known)
    if guess:
        hint = f"did you mean '{guess}'?"
    elif known:
        shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
        hint = f"known {what}s: {shown}"
    else:
        hint = None
    owner = f" of {of}" if of else ""
    return UnknownNameError(f"unknown {what} '{name}'{owner}", pos, hint)


class WeightsError(SpecError):
    """A checkpoint that does not fit the network, or that cannot be read safely."""
