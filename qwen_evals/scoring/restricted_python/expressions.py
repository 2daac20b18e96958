"""The subset's expressions (see the package docstring), evaluated one `ast` node at a time."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from qwen_evals.scoring.restricted_python.bounds import MAX_PRINT_CHARS, Budget
from qwen_evals.scoring.restricted_python.errors import InterpreterError, RuntimeFailure
from qwen_evals.scoring.restricted_python.operators import COMPARE, UNARY, binary, hashable, operate, truth


class Evaluator:
    """The state of one run (variables, tools, printed text, the budget) and the evaluation of expressions."""

    def __init__(
        self,
        tools: dict[str, Callable[..., Any]],
        builtins: dict[str, Callable[..., Any]],
        state: dict[str, Any],
        budget: Budget,
    ) -> None:
        self.tools = tools
        self.builtins = builtins
        self.state = state
        self.budget = budget
        self.printed: list[str] = []
        self.printed_chars = 0

    def expr(self, node: ast.expr) -> Any:
        self.budget.tick()
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bytes) or node.value is Ellipsis:
                raise InterpreterError(f"{type(node.value).__name__} literals are outside the supported subset")
            return node.value
        if isinstance(node, ast.Name):
            return self.load_name(node.id)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.JoinedStr):
            text = "".join(self.formatted(part) for part in node.values)
            return self.budget.created(text)
        if isinstance(node, ast.FormattedValue):
            return self.formatted(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise InterpreterError("starred expressions are outside the supported subset")
            items = [self.expr(e) for e in node.elts]
            return self.budget.created(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise InterpreterError("** unpacking is outside the supported subset")
            result = {}
            for key_node, value_node in zip(node.keys, node.values):
                key = self.expr(key_node)
                hashable(key)
                result[key] = self.expr(value_node)
            return self.budget.created(result)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BinOp):
            return binary(self.budget, node.op, self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand)
            return operate(UNARY[type(node.op)], operand)
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:
                value = self.expr(operand)
                if isinstance(node.op, ast.And) and not truth(value):
                    return value
                if isinstance(node.op, ast.Or) and truth(value):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self.expr(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = self.expr(right_node)
                if not truth(operate(COMPARE[type(op)], left, right)):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.expr(node.body) if truth(self.expr(node.test)) else self.expr(node.orelse)
        if isinstance(node, ast.Attribute):
            raise InterpreterError(self.attribute_message(node))
        if isinstance(node, ast.Slice):
            raise InterpreterError("a slice outside a subscript is outside the supported subset")
        raise InterpreterError(f"{type(node).__name__} expressions are outside the supported subset")

    def load_name(self, name: str) -> Any:
        self.check_name(name)
        if name in self.state:
            return self.state[name]
        if name in self.tools or name in self.builtins or name == "print":
            raise InterpreterError(f"`{name}` can only be called, not used as a value")
        raise InterpreterError(f"the name `{name}` is not defined")

    @staticmethod
    def check_name(name: str) -> None:
        if name.startswith("__"):
            raise InterpreterError(f"the name `{name}` is refused (names starting with __)")

    @staticmethod
    def attribute_message(node: ast.Attribute) -> str:
        if node.attr.startswith("__") or node.attr.startswith("_"):
            return f"access to the attribute `{node.attr}` is refused (dunder / private attribute)"
        return f"attribute access (`.{node.attr}`) is outside the supported subset"

    def call(self, node: ast.Call) -> Any:
        if isinstance(node.func, ast.Attribute):
            raise InterpreterError(self.attribute_message(node.func))
        if not isinstance(node.func, ast.Name):
            raise InterpreterError("only tools and builtins can be called, by their plain name")
        name = node.func.id
        self.check_name(name)
        if name == "print":
            function: Callable[..., Any] = self.print
        elif name in self.tools:
            function = self.tools[name]
        elif name in self.builtins:
            function = self.builtins[name]
        else:
            raise InterpreterError(f"`{name}` is not one of the available tools")
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise InterpreterError("*args is outside the supported subset")
            args.append(self.expr(arg))
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise InterpreterError("**kwargs is outside the supported subset")
            kwargs[keyword.arg] = self.expr(keyword.value)
        for value in (*args, *kwargs.values()):  # tools and print turn their arguments into text
            self.budget.check_text_size(value)
        try:
            value = function(*args, **kwargs)
        except InterpreterError:
            raise
        except Exception as error:  # noqa: BLE001 - any error of a tool fails the program at run time
            raise RuntimeFailure(f"{name}() raised {type(error).__name__}: {error}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            self.budget.check_int(value)
        if isinstance(value, (str, list, tuple, dict)):
            return self.budget.created(value)
        return value

    def print(self, *args: Any, sep: Any = " ", end: Any = "\n") -> None:
        text = str(sep).join(str(a) for a in args) + str(end)
        room = MAX_PRINT_CHARS - self.printed_chars
        if room > 0:
            self.printed.append(text[:room])
            self.printed_chars += min(len(text), room)

    def formatted(self, node: ast.expr) -> str:
        if isinstance(node, ast.Constant):
            return str(node.value)
        if not isinstance(node, ast.FormattedValue):
            return str(self.expr(node))
        value = self.expr(node.value)
        self.budget.check_text_size(value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = self.expr(node.format_spec) if node.format_spec is not None else ""
        self.budget.check_format_spec(spec)
        try:
            text = format(value, spec)
        except Exception as error:  # noqa: BLE001 - a bad format spec fails the program at run time
            raise RuntimeFailure(f"cannot format a {type(value).__name__} with {spec!r}: {error}") from None
        return self.budget.created(text)

    def subscript(self, node: ast.Subscript) -> Any:
        container = self.expr(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else self.expr(p) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
                raise RuntimeFailure("slice bounds must be integers")
            if not isinstance(container, (str, list, tuple)):
                raise RuntimeFailure(f"cannot slice a {type(container).__name__}")
            try:
                return self.budget.created(container[slice(*parts)])
            except ValueError as error:
                raise RuntimeFailure(str(error)) from None
        key = self.expr(node.slice)
        if isinstance(container, dict):
            hashable(key)
            if key not in container:
                raise InterpreterError(f"could not index the dict with {key!r}")
            return container[key]
        if isinstance(container, (str, list, tuple, range)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise RuntimeFailure(f"indices must be integers, not {type(key).__name__}")
            try:
                return container[key]
            except IndexError:
                raise RuntimeFailure(f"index {key} is out of range") from None
        raise RuntimeFailure(f"cannot index a {type(container).__name__}")
