"""The bounds that make any program stop, and the accounting of one run against them.

At most `max_steps` node evaluations, `max_iterations` loop iterations in all, `max_seconds` of wall time, values
(strings, lists, dicts) of at most `max_size` items, integers of at most `max_int_bits` bits, and `max_alloc` items
created in all. Going past a bound is an `InterpreterError` of kind "limit".
"""

from __future__ import annotations

import ast
import re
import time
from dataclasses import dataclass
from typing import Any

from qwen_evals.scoring.restricted_python.errors import InterpreterError

MAX_CODE_CHARS = 100_000
MAX_PRINT_CHARS = 100_000

_SPEC_NUMBER = re.compile(r"\d+")


@dataclass
class Budget:
    """The bounds of one run and what the run has used of them so far."""

    max_steps: int
    max_iterations: int
    deadline: float
    """A `time.monotonic()` value."""
    max_size: int
    max_int_bits: int
    max_alloc: int
    steps: int = 0
    iterations: int = 0
    allocated: int = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise InterpreterError(f"stopped after {self.max_steps} evaluation steps", "limit")
        if self.steps % 256 == 0 and time.monotonic() > self.deadline:
            raise InterpreterError("stopped: time limit reached", "limit")

    def iterate(self) -> None:
        self.iterations += 1
        if self.iterations > self.max_iterations:
            raise InterpreterError(f"stopped after {self.max_iterations} loop iterations", "limit")

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

    def check_format_spec(self, spec: Any) -> None:
        """Refuse a format spec that asks for a wider or longer text than `max_size` (f"{x:>999999999}")."""
        if any(int(n) > self.max_size for n in _SPEC_NUMBER.findall(str(spec))):
            raise InterpreterError(f"format spec {spec!r} asks for more than {self.max_size} characters", "limit")

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
