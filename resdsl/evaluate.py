"""Evaluate the integer (and real) expressions of a spec.

A tiny interpreter over :mod:`resdsl.syntax` expressions: numbers, names bound in an
environment, ``+ - * // / %``, comparisons, ``and or not``, parentheses and the pure
functions of :data:`FUNCTIONS`. Nothing is ever handed to Python's ``eval``. Every
failure is a SpecError at the expression's position.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping

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
                if "block_count" in names_in(right):
                    hint = "a network of one block has block_count - 1 == 0; guard it: max(block_count - 1, 1)"
                raise SpecError("division by zero" if op != "%" else "remainder of a division by zero", right.pos, hint)
            try:
                if op == "//":
                    return a // b
                if op == "%":
                    return a % b
                return a / b
            except OverflowError:  # an int too large for a float: out of range all the same
                raise out_of_range(float("inf"), pos) from None
        case ast.ListExpr(items=items):
            # Whole numbers from 0: sizes (a split's, checked there) or indices (take's).
            return tuple(as_int(evaluate(item, env), item.pos, "an item of a list", minimum=0) for item in items)
        case ast.Index(target=target, index=index, pos=pos):
            sizes = evaluate(target, env)
            if not isinstance(sizes, tuple):
                raise SpecError(f"only a list can be indexed, not {describe(sizes)}", target.pos)
            at = as_int(evaluate(index, env), index.pos, "an index", minimum=None)
            if not 0 <= at < len(sizes):
                raise SpecError(
                    f"index {at} is out of range: the list has {len(sizes)} items (0 to {len(sizes) - 1})", index.pos
                )
            return sizes[at]
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


def names_in(*exprs: ast.Expr) -> set[str]:
    """The names that expressions read (without evaluating them)."""
    found: set[str] = set()
    stack: list = list(exprs)
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
        elif isinstance(node, ast.Index):
            stack += [node.target, node.index]
        elif isinstance(node, ast.ListExpr):
            stack += list(node.items)
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


def _sqrt(values: list[tuple[int | float, Pos]], pos: Pos) -> float:
    (value, where), *_ = values
    if value < 0:
        raise SpecError(f"sqrt needs a number from 0 up, got {describe(value)}", where)
    return math.sqrt(value)


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
        Function("sqrt", (1, 1), _sqrt, "sqrt(x) (attention's 1 / sqrt(d))"),
    )
}


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
