"""Evaluate the integer (and real) expressions of a spec.

A tiny interpreter over :mod:`resdsl.syntax` expressions: numbers, names bound in an
environment, ``+ - * // / %``, comparisons, ``and or not``, parentheses and the pure
functions of :data:`FUNCTIONS`. Nothing is ever handed to Python's ``eval``. Every
failure is a SpecError at the expression's position.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

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
        case ast.Unary(op="not", operand=operand):
            return not as_bool(evaluate(operand, env), operand.pos, "the operand of 'not'")
        case ast.Unary(op=op, operand=operand, pos=pos):
            value = _number(evaluate(operand, env), operand.pos)
            return -value if op == "-" else value
        case ast.BinOp(op="and" | "or", left=left, right=right):
            # Short-circuit, as the words promise: `block_count > 1 and x / (block_count - 1) > 0`.
            first = as_bool(evaluate(left, env), left.pos, f"the left side of '{expr.op}'")
            if first == (expr.op == "or"):
                return first
            return as_bool(evaluate(right, env), right.pos, f"the right side of '{expr.op}'")
        case ast.BinOp(op=op, left=left, right=right, pos=pos) if op in _COMPARISONS:
            a, b = evaluate(left, env), evaluate(right, env)
            if isinstance(a, tuple) or isinstance(b, tuple):
                if op not in ("==", "!="):
                    raise SpecError(f"sizes such as 3x3 can only be compared with == and !=, not {op}", pos)
                return (a == b) == (op == "==")
            return _COMPARISONS[op](_number(a, left.pos), _number(b, right.pos))
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
                hint = None
                if "block_count" in _names_in(right):
                    hint = "a network of one block has block_count - 1 == 0; guard it: max(block_count - 1, 1)"
                raise SpecError("division by zero" if op != "%" else "remainder of a division by zero", right.pos, hint)
            if op == "//":
                return a // b
            if op == "%":
                return a % b
            return a / b
        case ast.Call(name=name, args=args, pos=pos, name_pos=name_pos):
            function = FUNCTIONS.get(name)
            if function is None:
                raise unknown("function", name, FUNCTIONS, name_pos)
            values = []
            for arg in args:
                if isinstance(arg, ast.Keyword):
                    raise SpecError(f"{name}() takes no keyword arguments", arg.name_pos)
                values.append((_number(evaluate(arg.value, env), arg.value.pos), arg.value.pos))
            return function.apply(values, pos)
    raise TypeError(f"not an expression: {expr!r}")  # pragma: no cover - the parser builds only the above


def _names_in(expr: ast.Expr) -> set[str]:
    found: set[str] = set()
    stack: list = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.BinOp):
            stack += [node.left, node.right]
        elif isinstance(node, ast.Unary):
            stack.append(node.operand)
        elif isinstance(node, ast.Call):
            stack += [arg.value for arg in node.args]
    return found


_COMPARISONS: dict[str, Callable[[int | float, int | float], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class Function:
    """A pure function a spec may call: its arity and its rule."""

    def __init__(self, name: str, arity: tuple[int, int | None], rule: Callable, usage: str) -> None:
        self.name, self.arity, self.rule, self.usage = name, arity, rule, usage

    def apply(self, values: list[tuple[int | float, Pos]], pos: Pos) -> Value:
        low, high = self.arity
        if len(values) < low or (high is not None and len(values) > high):
            raise SpecError(
                f"{self.name}() takes {_arity_text(self.arity)}, got {len(values)}", pos, f"write: {self.usage}"
            )
        return self.rule(values, pos)


def _arity_text(arity: tuple[int, int | None]) -> str:
    low, high = arity
    if high is None:
        return f"at least {low} arguments"
    return f"{low} argument{'s' if low != 1 else ''}" if low == high else f"{low} to {high} arguments"


def _log2(values: list[tuple[int | float, Pos]], pos: Pos) -> float:
    (value, where), *_ = values
    if value <= 0:
        raise SpecError(f"log2 needs a positive number, got {describe(value)}", where)
    return math.log2(value)


def _int(values: list[tuple[int | float, Pos]], pos: Pos) -> int:
    (value, where), *_ = values
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"int() needs a finite number, got {describe(value)}", where)
    return int(value)  # toward zero, as Python's int() and timm's kernel-size rules do


#: The functions expressions may call. All are pure and total on their domain.
FUNCTIONS: dict[str, Function] = {
    f.name: f
    for f in (
        Function("min", (2, None), lambda values, pos: min(v for v, _ in values), "min(a, b, ...)"),
        Function("max", (2, None), lambda values, pos: max(v for v, _ in values), "max(a, b, ...)"),
        Function("abs", (1, 1), lambda values, pos: abs(values[0][0]), "abs(x)"),
        Function("int", (1, 1), _int, "int(x) (rounds toward zero)"),
        Function("log2", (1, 1), _log2, "log2(x)"),
    )
}


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


def as_float(value: Value, pos: Pos, what: str, *, minimum: float | None = None) -> float:
    if isinstance(value, tuple | bool) or not isinstance(value, int | float):
        raise SpecError(f"{what} must be a number, got {describe(value)}", pos)
    if minimum is not None and value < minimum:
        raise SpecError(f"{what} must be at least {describe(minimum)}, got {describe(value)}", pos)
    return float(value)


def as_probability(value: Value, pos: Pos, what: str) -> float:
    if isinstance(value, tuple | bool) or not 0 <= value < 1:
        raise SpecError(f"{what} must be a number from 0 up to (not including) 1, got {describe(value)}", pos)
    return float(value)
