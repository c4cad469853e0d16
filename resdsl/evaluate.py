"""Evaluate the integer (and real) expressions of a spec.

A tiny interpreter over :mod:`resdsl.syntax` expressions: numbers, names bound in an
environment, ``+ - * // /`` and parentheses. Nothing is ever handed to Python's
``eval``. Every failure is a SpecError at the expression's position.
"""

from __future__ import annotations

from collections.abc import Mapping

from resdsl import syntax as ast
from resdsl.errors import Pos, SpecError, unknown

Value = int | float | bool | tuple[int, ...]

#: Names every expression can use unless a parameter shadows them.
CONSTANTS: dict[str, Value] = {"true": True, "false": False}


def evaluate(expr: ast.Expr, env: Mapping[str, Value]) -> Value:
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
            if op == "//":
                return a // b
            return a / b
    raise TypeError(f"not an expression: {expr!r}")  # pragma: no cover - the parser builds only the above


def _number(value: Value, pos: Pos) -> int | float:
    if isinstance(value, tuple):
        raise SpecError("sizes such as 3x3 cannot be used in arithmetic", pos)
    return int(value) if isinstance(value, bool) else value


def describe(value: Value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def as_int(value: Value, pos: Pos, what: str, *, minimum: int | None = 1) -> int:
    """An integer argument; `minimum` (default 1) rejects zero and negative sizes."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        hint = None
        if isinstance(value, float) and value == value and abs(value) != float("inf"):
            hint = "'/' divides exactly; use '//' to round down to a whole number"
        raise SpecError(f"{what} must be an integer, got {describe(value)}", pos, hint)
    if minimum is not None and value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise SpecError(f"{what} must be {bound}, got {value}", pos)
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
