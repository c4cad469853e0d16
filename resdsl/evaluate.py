"""Evaluate the integer (and real) expressions of a spec.

A tiny interpreter over :mod:`resdsl.syntax` expressions: numbers, names bound in an
environment, ``+ - * // /`` and parentheses. Nothing is ever handed to Python's
``eval``. Every failure is a SpecError at the expression's position.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from resdsl import syntax as ast
from resdsl.errors import Pos, SpecError, unknown

Value = int | float | bool | tuple[int, ...]

#: Every integer a spec computes lies in [INT_MIN, INT_MAX] (64 bits, as in the
#: tensors' own index type); every real is finite. Checked where each value is made,
#: so a chain of squarings stops at the first that leaves the range instead of
#: computing numbers of millions of digits.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

#: Longest run of digits read as a literal: more cannot fit in 64 bits whatever they
#: are, and Python refuses to convert over 4,300 digits at all.
MAX_LITERAL_DIGITS = 40

_RANGE_HINT = f"integers in a spec lie between {INT_MIN:,} and {INT_MAX:,}"

#: Names every expression can use unless a parameter shadows them.
CONSTANTS: dict[str, Value] = {"true": True, "false": False}


def evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    # Every result passes `bounded` at its own expression, so that the error points
    # at the operation that left the range, not at whoever used the value later.
    return bounded(_evaluate(expr, env), expr.pos)


def _evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
    match expr:
        case ast.Number(value=value):
            return value
        case ast.Dims(values=values):
            return values
        case ast.Name(id=name, pos=pos):
            if name in env:
                return env[name]
            if name in CONSTANTS:
                return CONSTANTS[name]
            raise unknown("name", name, [*env, *CONSTANTS], pos)
        case ast.Unary(op=op, operand=operand, pos=pos):
            value = _number(evaluate(operand, env), operand.pos)
            return -value if op == "-" else value
        case ast.BinOp(op=op, left=left, right=right, pos=pos):
            a = _number(evaluate(left, env), left.pos)
            b = _number(evaluate(right, env), right.pos)
            if op == "+":
                return a + b
            if op == "-":
                return a - b
            if op == "*":
                return a * b
            if b == 0:
                raise SpecError("division by zero", right.pos)
            try:
                return a // b if op == "//" else a / b
            except OverflowError:  # an int too large for a float: out of range all the same
                raise out_of_range(float("inf"), pos) from None
    raise TypeError(f"not an expression: {expr!r}")  # pragma: no cover - the parser builds only the above


def bounded(value: Value, pos: Pos | None) -> Value:
    """`value` itself if it lies in the range every spec value must keep (64-bit integers, finite reals)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise out_of_range(value, pos)
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise out_of_range(value, pos)
    elif isinstance(value, tuple):
        for item in value:
            bounded(item, pos)
    return value


def out_of_range(value: int | float, pos: Pos | None) -> SpecError:
    if isinstance(value, int):
        shown = describe(value)
        return SpecError(
            f"{shown if shown.endswith('integer') else 'the integer ' + shown} does not fit in 64 bits",
            pos,
            _RANGE_HINT,
        )
    what = "is not a number" if value != value else "overflows to infinity"
    return SpecError(f"this real number {what}", pos, f"reals in a spec are finite, at most {sys.float_info.max:.3g}")


def literal(text: str, pos: Pos) -> int | float:
    """The value of an INT or FLOAT literal, within the range (the parser's one conversion)."""
    digits = text.lstrip("0")
    if "." not in text and "e" not in text.lower():
        if len(digits) > MAX_LITERAL_DIGITS:
            raise SpecError(
                f"the integer literal has {len(digits):,} digits and does not fit in 64 bits",
                pos,
                _RANGE_HINT,
            )
        return bounded(int(text), pos)
    return bounded(float(text), pos)


def _number(value: Value, pos: Pos) -> int | float:
    if isinstance(value, tuple):
        raise SpecError("sizes such as 3x3 cannot be used in arithmetic", pos)
    return int(value) if isinstance(value, bool) else value


def describe(value: Value) -> str:
    """A value as a message shows it; never fails, whatever its size."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(describe(v) for v in value)
    if isinstance(value, int) and value.bit_length() > 128:
        # Python refuses to print integers over 4,300 digits, and a message of
        # thousands of digits says less than their count.
        return f"a {'negative ' if value < 0 else ''}{value.bit_length():,}-bit integer"
    return str(value)


def as_int(value: Value, pos: Pos, what: str, *, minimum: int | None = 1) -> int:
    """An integer argument; `minimum` (default 1) rejects zero and negative sizes."""
    if isinstance(value, float) and value.is_integer():
        if not INT_MIN <= value <= INT_MAX:
            raise SpecError(f"{what} must fit in 64 bits, got {describe(value)}", pos, _RANGE_HINT)
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        hint = None
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            hint = "'/' divides exactly; use '//' to round down to a whole number"
        raise SpecError(f"{what} must be an integer, got {describe(value)}", pos, hint)
    if minimum is not None and value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise SpecError(f"{what} must be {bound}, got {describe(value)}", pos)
    return value


def as_pair(value: Value, pos: Pos, what: str, *, minimum: int | None = 1) -> tuple[int, int]:
    """A size given as ``2`` (square) or ``2x1``."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise SpecError(f"{what} takes one size or two (HxW), got {describe(value)}", pos)
        return (as_int(value[0], pos, what, minimum=minimum), as_int(value[1], pos, what, minimum=minimum))
    size = as_int(value, pos, what, minimum=minimum)
    return (size, size)


def as_bool(value: Value, pos: Pos, what: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise SpecError(f"{what} must be true or false, got {describe(value)}", pos)


def as_probability(value: Value, pos: Pos, what: str) -> float:
    if isinstance(value, tuple | bool) or not 0 <= value < 1:
        raise SpecError(f"{what} must be a number from 0 up to (not including) 1, got {describe(value)}", pos)
    return float(value)
