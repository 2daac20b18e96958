"""Python's operators, applied under the bounds; an error of the operation is a run-time failure of the program."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

from qwen_evals.scoring.restricted_python.bounds import Budget
from qwen_evals.scoring.restricted_python.errors import InterpreterError, RuntimeFailure

BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
UNARY: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


def binary(budget: Budget, op: ast.operator, left: Any, right: Any) -> Any:
    kind = type(op)
    if kind not in BINARY:
        raise InterpreterError(f"the operator {kind.__name__} is outside the supported subset")
    if kind is ast.Mod and isinstance(left, (str, bytes)):
        raise InterpreterError("%-formatting of strings is outside the supported subset; use an f-string")
    budget.predict_size(kind, left, right)
    value = operate(BINARY[kind], left, right)
    if isinstance(value, int) and not isinstance(value, bool):
        budget.check_int(value)
    if isinstance(value, (str, list, tuple)):
        return budget.created(value)
    return value


def operate(function: Callable[..., Any], *operands: Any) -> Any:
    try:
        return function(*operands)
    except (TypeError, ValueError, ArithmeticError) as error:
        raise RuntimeFailure(f"{type(error).__name__}: {error}") from None


def truth(value: Any) -> bool:
    try:
        return bool(value)
    except Exception as error:  # noqa: BLE001
        raise RuntimeFailure(f"truth value of a {type(value).__name__}: {error}") from None


def hashable(key: Any) -> None:
    try:
        hash(key)
    except TypeError:
        raise RuntimeFailure(f"a {type(key).__name__} cannot be a dict key") from None
