"""How a program stops early: refused or past a bound (public), failed at run time, or leaving a loop (internal)."""

from __future__ import annotations


class InterpreterError(Exception):
    """The program left the subset ("refused") or went past a bound ("limit")."""

    def __init__(self, message: str, kind: str = "refused") -> None:
        super().__init__(message)
        self.kind = kind


class RuntimeFailure(Exception):
    """An exception inside a tool or an operation; carries a readable message."""


class Break(Exception):
    """A `break` on its way to the innermost loop."""


class Continue(Exception):
    """A `continue` on its way to the innermost loop."""
