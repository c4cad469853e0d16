"""Positions between the compiler and an LSP client, which count lines and characters differently.

The compiler counts lines at LF only (a lone CR inside a comment is comment text) and
columns in code points, from 1. The protocol counts lines at CR LF, CR or LF, and
characters from 0 in the position encoding the server announced at ``initialize``:
UTF-16 code units unless the client offered UTF-32 or UTF-8 (an emoji is two UTF-16
units). Both sides meet at an offset into the document's text.
"""

from __future__ import annotations

import bisect
import re
from functools import lru_cache

_CLIENT_LINE_END = re.compile(r"\r\n|\r|\n")

#: Width of a code point in each encoding's units, by the encoding's LSP name.
_UNITS = {
    "utf-8": lambda char: len(char.encode("utf-8", "surrogatepass")),
    "utf-16": lambda char: 2 if ord(char) > 0xFFFF else 1,
    "utf-32": lambda char: 1,
}


class LineMap:
    """One document text's positions, both ways."""

    def __init__(self, text: str, encoding: str = "utf-16") -> None:
        self.text = text
        self.width = _UNITS.get(str(encoding), _UNITS["utf-16"])
        self.ascii = text.isascii()
        self.compiler_starts = [0] + [match.end() for match in re.finditer("\n", text)]
        self.client_starts = [0]
        self.client_ends: list[int] = []  # where each client line's content ends (before its line end)
        for match in _CLIENT_LINE_END.finditer(text):
            self.client_ends.append(match.start())
            self.client_starts.append(match.end())
        self.client_ends.append(len(text))

    # -- the compiler's side ---------------------------------------------------

    def offset_of(self, line: int, column: int) -> int:
        """The offset of a compiler position (1-based), clamped into the text."""
        index = min(max(line, 1), len(self.compiler_starts)) - 1
        start = self.compiler_starts[index]
        end = self.compiler_starts[index + 1] - 1 if index + 1 < len(self.compiler_starts) else len(self.text)
        return min(start + max(column, 1) - 1, end)

    def compiler_position(self, offset: int) -> tuple[int, int]:
        """(line, column), 1-based, of an offset."""
        offset = min(max(offset, 0), len(self.text))
        index = bisect.bisect_right(self.compiler_starts, offset) - 1
        return index + 1, offset - self.compiler_starts[index] + 1

    # -- the client's side -------------------------------------------------------

    def client_position(self, offset: int) -> tuple[int, int]:
        """(line, character), 0-based in the negotiated units, of an offset."""
        offset = min(max(offset, 0), len(self.text))
        index = bisect.bisect_right(self.client_starts, offset) - 1
        start = self.client_starts[index]
        offset = min(offset, self.client_ends[index])  # inside a CR LF: the line's end
        if self.ascii:
            return index, offset - start
        return index, sum(self.width(char) for char in self.text[start:offset])

    def offset_at(self, line: int, character: int) -> int:
        """The offset of a client position; past a line's end is its end, past the last line the text's end."""
        if line < 0:
            return 0
        if line >= len(self.client_starts):
            return len(self.text)
        start, end = self.client_starts[line], self.client_ends[line]
        if character <= 0:
            return start
        if self.ascii:
            return min(start + character, end)
        units = 0
        for offset in range(start, end):
            units += self.width(self.text[offset])
            if units > character:
                return offset
            if units == character:
                return offset + 1
        return end

    def end(self) -> tuple[int, int]:
        """The client position of the text's end."""
        return self.client_position(len(self.text))

    # -- both ------------------------------------------------------------------------

    def to_client(self, line: int, column: int) -> tuple[int, int]:
        return self.client_position(self.offset_of(line, column))

    def to_compiler(self, line: int, character: int) -> tuple[int, int]:
        return self.compiler_position(self.offset_at(line, character))


@lru_cache(maxsize=16)
def line_map(text: str, encoding: str = "utf-16") -> LineMap:
    return LineMap(text, encoding)


__all__ = ["LineMap", "line_map"]
