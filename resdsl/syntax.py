"""The abstract syntax tree of a .res file.

One class per ``-> alias`` (or rule) of grammar/resdsl.lark; resdsl/parser.py builds
them. Every node carries the :class:`~resdsl.errors.Pos` it was parsed from.
Nothing here is evaluated: expressions are evaluated by :mod:`resdsl.evaluate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from resdsl.errors import Pos, Source

# Expressions ----------------------------------------------------------------


@dataclass(frozen=True)
class Number:
    value: int | float
    pos: Pos


@dataclass(frozen=True)
class Dims:
    """``3x3`` or ``3x224x224``: a tuple of sizes written as one token."""

    values: tuple[int, ...]
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * // / % == != < <= > >= and or
    left: Expr
    right: Expr
    pos: Pos


@dataclass(frozen=True)
class Unary:
    op: str  # + - not
    operand: Expr
    pos: Pos


@dataclass(frozen=True)
class Call:
    """``min(a, b)`` in an expression, ``gn(32)`` as a setting's value, ``se(256)`` as a statement."""

    name: str
    args: tuple[Arg, ...]
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class Index:
    """``s[i]``: one element of a list (of named values, or of sizes)."""

    target: Expr
    index: Expr
    pos: Pos


@dataclass(frozen=True)
class ListExpr:
    """``[p0, p1]`` or ``[64, 64]``: a list written out."""

    items: tuple[Expr, ...]
    pos: Pos


Expr = Number | Dims | Name | BinOp | Unary | Call | Index | ListExpr

# Arguments, statements and definitions ---------------------------------------


@dataclass(frozen=True)
class Positional:
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    pos: Pos
    name_pos: Pos


Arg = Positional | Keyword


@dataclass(frozen=True)
class Param:
    name: str
    default: Expr | None
    pos: Pos


@dataclass(frozen=True)
class Statement:
    """``[label:] kind arg, arg, name=arg``: a layer, a block used in place (``se(256)``,
    written with parentheses), or in a network body a setting."""

    kind: str
    args: tuple[Arg, ...]
    label: str | None
    pos: Pos
    kind_pos: Pos
    label_pos: Pos | None = None
    called: bool = False  # written as a call, ``kind(args)``


@dataclass(frozen=True)
class Branch:
    """``[label:] mul { ... }``: a side branch that reads the current value and is joined
    back to it by ``join`` (``mul``, ``add`` or ``cat``)."""

    join: str
    body: tuple[BodyItem, ...]
    label: str | None
    pos: Pos
    join_pos: Pos
    label_pos: Pos | None = None


@dataclass(frozen=True)
class If:
    """``if EXPR { ... } else { ... }``: statements chosen when the network is compiled."""

    condition: Expr
    then: tuple[BodyItem, ...]
    otherwise: tuple[BodyItem, ...]
    pos: Pos


@dataclass(frozen=True)
class For:
    """``for i in A .. B { ... }``: the body unrolled once per value of ``i`` (B exclusive)."""

    name: str
    start: Expr
    stop: Expr
    body: tuple[BodyItem, ...]
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class Let:
    """``let x`` (the current value), ``let o[i]`` (one element of a list) or
    ``let y = s[1]`` (another value), named for the rest of the block."""

    name: str
    index: Expr | None
    value: Expr | None
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class From:
    """``from x``: a named value becomes the current value."""

    value: Expr
    pos: Pos


BodyItem = Statement | Branch | If | For | Let | From


@dataclass(frozen=True)
class Override:
    """``with shortcut none``: one setting replaced in an aliased network."""

    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Section:
    """``stem { ... }`` or ``head { ... }``."""

    kind: str  # "stem" | "head"
    body: tuple[BodyItem, ...]
    pos: Pos


@dataclass(frozen=True)
class Stage:
    """``stage NAME: REPEAT x BLOCK(args)``."""

    name: str
    repeat: Expr | None
    block: str
    args: tuple[Arg, ...]
    pos: Pos
    name_pos: Pos
    block_pos: Pos


@dataclass(frozen=True)
class Use:
    path: str
    pos: Pos


@dataclass(frozen=True)
class Block:
    name: str
    params: tuple[Param, ...]
    body: tuple[BodyItem, ...]
    pos: Pos
    name_pos: Pos


NetworkItem = Statement | Branch | If | For | Let | From | Section | Stage


@dataclass(frozen=True)
class Network:
    name: str
    params: tuple[Param, ...]
    body: tuple[NetworkItem, ...]
    pos: Pos
    name_pos: Pos


@dataclass(frozen=True)
class NetworkAlias:
    """``network NAME = BASE(args) with SETTING VALUE, ...``."""

    name: str
    base: str
    args: tuple[Arg, ...]
    overrides: tuple[Override, ...]
    pos: Pos
    name_pos: Pos
    base_pos: Pos


Definition = Use | Block | Network | NetworkAlias


@dataclass
class Module:
    """One parsed file."""

    source: Source
    definitions: list[Definition] = field(default_factory=list)
