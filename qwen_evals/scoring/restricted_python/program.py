"""Running a whole program: `run`, its `RunResult`, and what the program's value is.

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
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qwen_evals.scoring.restricted_python.bounds import MAX_CODE_CHARS, Budget
from qwen_evals.scoring.restricted_python.errors import Break, Continue, InterpreterError, RuntimeFailure
from qwen_evals.scoring.restricted_python.interpreter import Interpreter

DEFAULT_BUILTINS: dict[str, Callable[..., Any]] = {"range": range, "float": float, "int": int, "bool": bool, "str": str}
"""transformers 4.31's BASE_PYTHON_TOOLS, less `print` (the interpreter captures print itself)."""


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
    interpreter = Interpreter(
        tools=dict(tools),
        builtins=dict(DEFAULT_BUILTINS if builtins is None else builtins),
        state=dict(inputs or {}),
        budget=Budget(
            max_steps=max_steps,
            max_iterations=max_iterations,
            deadline=time.monotonic() + max_seconds,
            max_size=max_size,
            max_int_bits=max_int_bits,
            max_alloc=max_alloc,
        ),
    )
    return _run_program(interpreter, code)


def _run_program(interpreter: Interpreter, code: str) -> RunResult:
    """Parse `code` and run its top-level statements in order, keeping the value of the last one that has one."""

    def result(value: Any, error: str | None = None, kind: str | None = None) -> RunResult:
        return RunResult(value, interpreter.state, interpreter.printed, error, kind, interpreter.budget.steps)

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
    for statement in tree.body:
        try:
            line_value = interpreter.statement(statement)
        except InterpreterError as error:
            return result(value, f"line {statement.lineno}: {error}", error.kind)
        except (Break, Continue):
            return result(value, f"line {statement.lineno}: break/continue outside a loop", "refused")
        except RecursionError:
            return result(value, f"line {statement.lineno}: expression nested too deeply", "limit")
        except RuntimeFailure as error:
            return result(None, f"line {statement.lineno}: {error}", "runtime")
        if line_value is not None:
            value = line_value
    return result(value)
