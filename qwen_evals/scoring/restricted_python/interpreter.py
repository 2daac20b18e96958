"""The subset's statements (see the package docstring), run one `ast` node at a time."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import Any

from qwen_evals.scoring.restricted_python.errors import Break, Continue, InterpreterError, RuntimeFailure
from qwen_evals.scoring.restricted_python.expressions import Evaluator
from qwen_evals.scoring.restricted_python.operators import binary, hashable, truth


class Interpreter(Evaluator):
    """Runs statements; their expressions are evaluated by `Evaluator`, whose state (variables, budget) it shares."""

    def block(self, statements: list[ast.stmt]) -> Any:
        value = None
        for statement in statements:
            line_value = self.statement(statement)
            if line_value is not None:
                value = line_value
        return value

    def statement(self, node: ast.stmt) -> Any:
        self.budget.tick()
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
            value = binary(self.budget, node.op, current, self.expr(node.value))
            self.assign(node.target, value)
            return value
        if isinstance(node, ast.If):
            return self.block(node.body if truth(self.expr(node.test)) else node.orelse)
        if isinstance(node, ast.For):
            return self.loop_for(node)
        if isinstance(node, ast.While):
            return self.loop_while(node)
        if isinstance(node, ast.Break):
            raise Break()
        if isinstance(node, ast.Continue):
            raise Continue()
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
            raise RuntimeFailure(f"cannot loop over a {type(iterable).__name__}")
        return self.repeat(node.body, (self.assign(node.target, item) for item in iterable))

    def loop_while(self, node: ast.While) -> Any:
        if node.orelse:
            raise InterpreterError("while ... else is outside the supported subset")
        return self.repeat(node.body, iter(lambda: truth(self.expr(node.test)), False))

    def repeat(self, body: list[ast.stmt], passes: Iterator[Any]) -> Any:
        """Run `body` once per item of `passes` (which binds the loop variable or tests the condition)."""
        value = None
        for _ in passes:
            self.budget.iterate()
            try:
                line_value = self.block(body)
            except Break:
                break
            except Continue:
                continue
            if line_value is not None:
                value = line_value
        return value

    def assign(self, target: ast.expr, value: Any) -> None:
        if isinstance(target, ast.Name):
            self.check_name(target.id)
            self.state[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)):
            if any(isinstance(t, ast.Starred) for t in target.elts):
                raise InterpreterError("starred assignment is outside the supported subset")
            if not isinstance(value, (list, tuple, str)):
                raise RuntimeFailure(f"cannot unpack a {type(value).__name__}")
            if len(value) != len(target.elts):
                raise RuntimeFailure(f"expected {len(target.elts)} values to unpack, got {len(value)}")
            for element, item in zip(target.elts, value):
                self.assign(element, item)
        elif isinstance(target, ast.Subscript):
            container = self.expr(target.value)
            key = self.expr(target.slice)
            if isinstance(container, dict):
                hashable(key)
                container[key] = value
                self.budget.check_size(container)
            elif isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool):
                try:
                    container[key] = value
                except IndexError as error:
                    raise RuntimeFailure(f"index error: {error}") from None
            else:
                raise RuntimeFailure(f"cannot assign an item of a {type(container).__name__}")
        elif isinstance(target, ast.Attribute):
            raise InterpreterError(self.attribute_message(target))
        else:
            raise InterpreterError(f"assignment to {type(target).__name__} is outside the supported subset")
