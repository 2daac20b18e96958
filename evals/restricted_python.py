"""A small interpreter for the restricted Python that tool-using agents write.

The HuggingFace Agent benchmark (../shared/docs/protocols.md, "HuggingFace Agent
benchmark") scores an agent's program by running it, and the reference program,
with fake tools. transformers 4.31 did that with its own `ast`-walking
interpreter; this module is a separate implementation of the same idea. Model
output is never passed to `exec`, `eval` or `compile`: the program is parsed
with `ast.parse` and its nodes are walked here, one by one.

The subset:
- statements: expressions, assignment (to names, tuples of names, or an item
  `x[k] = v`), augmented assignment to a name, `if` / `elif` / `else`, `for`,
  `while`, `break`, `continue`, `pass`;
- expressions: literals, names, calls of the given tools and builtins (by plain
  name, positional and keyword arguments), f-strings (with conversions and
  format specs), lists, tuples, dicts, subscripts and slices, arithmetic,
  comparisons (chained too), `and` / `or` / `not`, conditional expressions.
Everything else is refused with an `InterpreterError`: imports, attribute access
(dunder attributes get their own message), names starting with `__`, names that
were never assigned, function / class / lambda definitions, comprehensions,
`try` / `with` / `raise` / `del` / `global`, `*args` / `**kwargs`, %-formatting
of strings. Tools and builtins can only be called, never handled as values.

Bounds, so that any program stops: at most `max_steps` node evaluations,
`max_iterations` loop iterations in all, `max_seconds` of wall time, values
(strings, lists, dicts) of at most `max_size` items, integers of at most
`max_int_bits` bits, and `max_alloc` items created in all. Going past a bound is
an `InterpreterError` of kind "limit".

Result semantics follow transformers 4.31's `evaluate` (the benchmark's
interpreter): the program's value is the value of the last top-level statement
that produced one that is not None (an assignment produces the assigned value).
A statement that the interpreter refuses, or that hits a bound, stops the
program and the value so far is kept. An exception raised by a tool or by an
operation (a fake image tool given a non-image, 1 / 0, a bad index) makes the
value None, as 4.31's `evaluate_code` did. Known differences from 4.31: unknown
names are refused (4.31 substituted the closest assigned name), missing dict
keys are not fuzzily matched, and arithmetic, `while`, `break` / `continue`,
boolean operators and conditional expressions are supported (4.31 refused them).
"""

from __future__ import annotations

import ast
import operator
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_BUILTINS: dict[str, Callable[..., Any]] = {"range": range, "float": float, "int": int, "bool": bool, "str": str}
"""transformers 4.31's BASE_PYTHON_TOOLS, less `print` (the interpreter captures print itself)."""

MAX_CODE_CHARS = 100_000
MAX_PRINT_CHARS = 100_000


class InterpreterError(Exception):
    """The program left the subset ("refused") or went past a bound ("limit")."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


class _RuntimeFailure(Exception):
    """An exception inside a tool or an operation; carries a readable message."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


@dataclass
class RunResult:
    value: Any
    """The program's result (see the module docstring); None when it failed at run time."""
    state: dict[str, Any]
    """The variables after the run (inputs included)."""
    printed: list[str] = field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    """None, "syntax", "refused", "limit" or "runtime"."""
    steps: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


_BINARY: dict[type, Callable[[Any, Any], Any]] = {
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
_UNARY: dict[type, Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
    ast.Not: operator.not_,
    ast.Invert: operator.invert,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
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
_SPEC_NUMBER = re.compile(r"\d+")


def run(
    code: str,
    tools: Mapping[str, Callable[..., Any]],
    inputs: Mapping[str, Any] | None = None,
    *,
    builtins: Mapping[str, Callable[..., Any]] | None = None,
    max_steps: int = 100_000,
    max_iterations: int = 10_000,
    max_seconds: float = 5.0,
    max_size: int = 100_000,
    max_int_bits: int = 10_000,
    max_alloc: int = 10_000_000,
) -> RunResult:
    """Run `code` with `tools` (name -> function) and the variables `inputs`; never raises."""
    interpreter = _Interpreter(
        tools=dict(tools),
        builtins=dict(DEFAULT_BUILTINS if builtins is None else builtins),
        state=dict(inputs or {}),
        max_steps=max_steps,
        max_iterations=max_iterations,
        deadline=time.monotonic() + max_seconds,
        max_size=max_size,
        max_int_bits=max_int_bits,
        max_alloc=max_alloc,
    )
    return interpreter.run(code)


class _Interpreter:
    def __init__(
        self,
        tools: dict[str, Callable[..., Any]],
        builtins: dict[str, Callable[..., Any]],
        state: dict[str, Any],
        max_steps: int,
        max_iterations: int,
        deadline: float,
        max_size: int,
        max_int_bits: int,
        max_alloc: int,
    ) -> None:
        self.tools = tools
        self.builtins = builtins
        self.state = state
        self.max_steps = max_steps
        self.max_iterations = max_iterations
        self.deadline = deadline
        self.max_size = max_size
        self.max_int_bits = max_int_bits
        self.max_alloc = max_alloc
        self.steps = 0
        self.iterations = 0
        self.allocated = 0
        self.printed: list[str] = []
        self.printed_chars = 0

    # ---- the program -----------------------------------------------------------------

    def run(self, code: str) -> RunResult:
        def result(value: Any, error: str | None = None, kind: str | None = None) -> RunResult:
            return RunResult(value, self.state, self.printed, error, kind, self.steps)

        if not isinstance(code, str):
            return result(None, "the program is not text", "syntax")
        if len(code) > MAX_CODE_CHARS:
            return result(None, f"the program is longer than {MAX_CODE_CHARS} characters", "limit")
        try:
            tree = ast.parse(code, mode="exec")
        except SyntaxError as error:
            return result(None, f"syntax error: {error.msg} (line {error.lineno})", "syntax")
        except (ValueError, RecursionError, MemoryError) as error:
            return result(None, f"unparsable program: {type(error).__name__}", "syntax")
        value = None
        for number, statement in enumerate(tree.body, start=1):
            try:
                line_value = self.statement(statement)
            except InterpreterError as error:
                return result(value, f"line {statement.lineno}: {error}", error.kind)
            except (_Break, _Continue):
                return result(value, f"line {statement.lineno}: break/continue outside a loop", "refused")
            except RecursionError:
                return result(value, f"line {statement.lineno}: expression nested too deeply", "limit")
            except _RuntimeFailure as error:
                return result(None, f"line {statement.lineno}: {error}", "runtime")
            if line_value is not None:
                value = line_value
        return result(value)

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise InterpreterError(f"stopped after {self.max_steps} evaluation steps", "limit")
        if self.steps % 256 == 0 and time.monotonic() > self.deadline:
            raise InterpreterError("stopped: time limit reached", "limit")

    # ---- statements ------------------------------------------------------------------

    def block(self, statements: list[ast.stmt]) -> Any:
        value = None
        for statement in statements:
            line_value = self.statement(statement)
            if line_value is not None:
                value = line_value
        return value

    def statement(self, node: ast.stmt) -> Any:
        self.tick()
        if isinstance(node, ast.Expr):
            return self.expr(node.value)
        if isinstance(node, ast.Assign):
            value = self.expr(node.value)
            for target in node.targets:
                self.assign(target, value)
            return value
        if isinstance(node, ast.AugAssign):
            if not isinstance(node.target, ast.Name):
                raise InterpreterError("augmented assignment works on plain names only")
            current = self.load_name(node.target.id)
            value = self.binary(node.op, current, self.expr(node.value))
            self.assign(node.target, value)
            return value
        if isinstance(node, ast.If):
            return self.block(node.body if self.truth(self.expr(node.test)) else node.orelse)
        if isinstance(node, ast.For):
            return self.loop_for(node)
        if isinstance(node, ast.While):
            return self.loop_while(node)
        if isinstance(node, ast.Break):
            raise _Break()
        if isinstance(node, ast.Continue):
            raise _Continue()
        if isinstance(node, ast.Pass):
            return None
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            raise InterpreterError("import is refused")
        raise InterpreterError(f"{type(node).__name__} statements are outside the supported subset")

    def loop_for(self, node: ast.For) -> Any:
        if node.orelse:
            raise InterpreterError("for ... else is outside the supported subset")
        iterable = self.expr(node.iter)
        if not isinstance(iterable, (list, tuple, str, range, dict)):
            raise _RuntimeFailure(f"cannot loop over a {type(iterable).__name__}")
        return self.repeat(node.body, (self.assign(node.target, item) for item in iterable))

    def loop_while(self, node: ast.While) -> Any:
        if node.orelse:
            raise InterpreterError("while ... else is outside the supported subset")
        return self.repeat(node.body, iter(lambda: self.truth(self.expr(node.test)), False))

    def repeat(self, body: list[ast.stmt], passes: Iterator[Any]) -> Any:
        """Run `body` once per item of `passes` (which binds the loop variable or tests the condition)."""
        value = None
        for _ in passes:
            self.iterate()
            try:
                line_value = self.block(body)
            except _Break:
                break
            except _Continue:
                continue
            if line_value is not None:
                value = line_value
        return value

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise InterpreterError(f"stopped after {self.max_iterations} loop iterations", "limit")

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.check_name(target.id)
            self.state[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if any(isinstance(t, ast.Starred) for t in target.elts):
                raise InterpreterError("starred assignment is outside the supported subset")
            if not isinstance(value, (list, tuple, str)):
                raise _RuntimeFailure(f"cannot unpack a {type(value).__name__}")
            if len(value) != len(target.elts):
                raise _RuntimeFailure(f"expected {len(target.elts)} values to unpack, got {len(value)}")
            for element, item in zip(target.elts, value):
                self.assign(element, item)
        elif isinstance(target, ast.Subscript):
            container = self.expr(target.value)
            key = self.expr(target.slice)
            if isinstance(container, dict):
                self.hashable(key)
                container[key] = value
                self.check_size(container)
            elif isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool):
                try:
                    container[key] = value
                except IndexError as error:
                    raise _RuntimeFailure(f"index error: {error}") from None
            else:
                raise _RuntimeFailure(f"cannot assign an item of a {type(container).__name__}")
        elif isinstance(target, ast.Attribute):
            raise InterpreterError(self.attribute_message(target))
        else:
            raise InterpreterError(f"assignment to {type(target).__name__} is outside the supported subset")

    # ---- expressions -----------------------------------------------------------------

    def expr(self, node: ast.expr) -> Any:
        self.tick()
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
            return self.created(text)
        if isinstance(node, ast.FormattedValue):
            return self.formatted(node)
        if isinstance(node, (ast.List, ast.Tuple)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise InterpreterError("starred expressions are outside the supported subset")
            items = [self.expr(e) for e in node.elts]
            return self.created(items if isinstance(node, ast.List) else tuple(items))
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise InterpreterError("** unpacking is outside the supported subset")
            result = {}
            for key_node, value_node in zip(node.keys, node.values):
                key = self.expr(key_node)
                self.hashable(key)
                result[key] = self.expr(value_node)
            return self.created(result)
        if isinstance(node, ast.Subscript):
            return self.subscript(node)
        if isinstance(node, ast.BinOp):
            return self.binary(node.op, self.expr(node.left), self.expr(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand)
            return self.operate(_UNARY[type(node.op)], operand)
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:
                value = self.expr(operand)
                if isinstance(node.op, ast.And) and not self.truth(value):
                    return value
                if isinstance(node.op, ast.Or) and self.truth(value):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self.expr(node.left)
            for op, right_node in zip(node.ops, node.comparators):
                right = self.expr(right_node)
                if not self.truth(self.operate(_COMPARE[type(op)], left, right)):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return self.expr(node.body) if self.truth(self.expr(node.test)) else self.expr(node.orelse)
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
            self.check_text_size(value)
        try:
            value = function(*args, **kwargs)
        except InterpreterError:
            raise
        except Exception as error:  # noqa: BLE001 - any error of a tool fails the program at run time
            raise _RuntimeFailure(f"{name}() raised {type(error).__name__}: {error}") from None
        if isinstance(value, int) and not isinstance(value, bool):
            self.check_int(value)
        if isinstance(value, (str, list, tuple, dict)):
            return self.created(value)
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
        self.check_text_size(value)
        if node.conversion == ord("r"):
            value = repr(value)
        elif node.conversion == ord("a"):
            value = ascii(value)
        elif node.conversion == ord("s"):
            value = str(value)
        spec = self.expr(node.format_spec) if node.format_spec is not None else ""
        if any(int(n) > self.max_size for n in _SPEC_NUMBER.findall(str(spec))):
            raise InterpreterError(f"format spec {spec!r} asks for more than {self.max_size} characters", "limit")
        try:
            text = format(value, spec)
        except Exception as error:  # noqa: BLE001 - a bad format spec fails the program at run time
            raise _RuntimeFailure(f"cannot format a {type(value).__name__} with {spec!r}: {error}") from None
        return self.created(text)

    def subscript(self, node: ast.Subscript) -> Any:
        container = self.expr(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [None if p is None else self.expr(p) for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            if not all(p is None or (isinstance(p, int) and not isinstance(p, bool)) for p in parts):
                raise _RuntimeFailure("slice bounds must be integers")
            if not isinstance(container, (str, list, tuple)):
                raise _RuntimeFailure(f"cannot slice a {type(container).__name__}")
            try:
                return self.created(container[slice(*parts)])
            except ValueError as error:
                raise _RuntimeFailure(str(error)) from None
        key = self.expr(node.slice)
        if isinstance(container, dict):
            self.hashable(key)
            if key not in container:
                raise InterpreterError(f"could not index the dict with {key!r}")
            return container[key]
        if isinstance(container, (str, list, tuple, range)):
            if not isinstance(key, int) or isinstance(key, bool):
                raise _RuntimeFailure(f"indices must be integers, not {type(key).__name__}")
            try:
                return container[key]
            except IndexError:
                raise _RuntimeFailure(f"index {key} is out of range") from None
        raise _RuntimeFailure(f"cannot index a {type(container).__name__}")

    # ---- operations with bounds ------------------------------------------------------

    def binary(self, op: ast.operator, left: Any, right: Any) -> Any:
        kind = type(op)
        if kind not in _BINARY:
            raise InterpreterError(f"the operator {kind.__name__} is outside the supported subset")
        if kind is ast.Mod and isinstance(left, (str, bytes)):
            raise InterpreterError("%-formatting of strings is outside the supported subset; use an f-string")
        self.predict_size(kind, left, right)
        value = self.operate(_BINARY[kind], left, right)
        if isinstance(value, int) and not isinstance(value, bool):
            self.check_int(value)
        if isinstance(value, (str, list, tuple)):
            return self.created(value)
        return value

    def predict_size(self, kind: type, left: Any, right: Any) -> None:
        """Refuse an operation whose result would pass a bound, before computing it."""
        sequences = (str, list, tuple)
        if (
            kind is ast.Add
            and isinstance(left, sequences)
            and isinstance(right, sequences)
            and len(left) + len(right) > self.max_size
        ):
            raise InterpreterError(f"a value would exceed {self.max_size} items", "limit")
        if kind is ast.Mult:
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, sequences) and isinstance(count, int) and len(seq) * max(count, 0) > self.max_size:
                    raise InterpreterError(f"a value would exceed {self.max_size} items", "limit")
        if not (isinstance(left, int) and isinstance(right, int)):
            return  # float arithmetic: overflow raises OverflowError, a run-time failure
        if kind is ast.Mult and abs(left).bit_length() + abs(right).bit_length() > self.max_int_bits:
            raise InterpreterError(f"an integer would exceed {self.max_int_bits} bits", "limit")
        if kind is ast.Pow and right > 0 and abs(left) > 1 and abs(left).bit_length() * right > self.max_int_bits:
            raise InterpreterError(f"an integer would exceed {self.max_int_bits} bits", "limit")
        if kind is ast.LShift and right > 0 and abs(left).bit_length() + right > self.max_int_bits:
            raise InterpreterError(f"an integer would exceed {self.max_int_bits} bits", "limit")

    def operate(self, function: Callable[..., Any], *operands: Any) -> Any:
        try:
            return function(*operands)
        except (TypeError, ValueError, ArithmeticError) as error:
            raise _RuntimeFailure(f"{type(error).__name__}: {error}") from None

    def check_int(self, value: int) -> None:
        if abs(value).bit_length() > self.max_int_bits:
            raise InterpreterError(f"an integer exceeds {self.max_int_bits} bits", "limit")

    def check_text_size(self, value: Any) -> None:
        """Refuse a value whose text form would exceed `max_size` (a list of 10^5 long strings...)."""
        total, stack = 0, [value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                total += len(item) + 2
            elif isinstance(item, (list, tuple)):
                total += 2 + len(item)
                stack.extend(item)
            elif isinstance(item, dict):
                total += 2 + 2 * len(item)
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, int) and not isinstance(item, bool):
                total += item.bit_length() // 3 + 2
            else:
                total += 32
            if total > self.max_size:
                raise InterpreterError(f"a value's text would exceed {self.max_size} characters", "limit")

    def check_size(self, value: Any) -> None:
        if isinstance(value, (str, list, tuple, dict)) and len(value) > self.max_size:
            raise InterpreterError(f"a value exceeds {self.max_size} items", "limit")

    def created(self, value: Any) -> Any:
        """Account for a newly created value against the size and allocation bounds."""
        self.check_size(value)
        self.allocated += len(value) if isinstance(value, (str, list, tuple, dict)) else 1
        if self.allocated > self.max_alloc:
            raise InterpreterError(f"the program created more than {self.max_alloc} items in all", "limit")
        return value

    def truth(self, value: Any) -> bool:
        try:
            return bool(value)
        except Exception as error:  # noqa: BLE001
            raise _RuntimeFailure(f"truth value of a {type(value).__name__}: {error}") from None

    @staticmethod
    def hashable(key: Any) -> None:
        try:
            hash(key)
        except TypeError:
            raise _RuntimeFailure(f"a {type(key).__name__} cannot be a dict key") from None


__all__ = ["DEFAULT_BUILTINS", "InterpreterError", "RunResult", "run"]
