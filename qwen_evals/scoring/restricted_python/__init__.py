"""A small interpreter for the restricted Python that tool-using agents write.

The HuggingFace Agent benchmark (../shared/docs/protocols.md, "HuggingFace Agent
benchmark") scores an agent's program by running it, and the reference program,
with fake tools. transformers 4.31 did that with its own `ast`-walking
interpreter; this package is a separate implementation of the same idea. Model
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

Modules: `program` (`run`, and the program's value: transformers 4.31's result
semantics, and the known differences from 4.31), `interpreter` (statements),
`expressions`, `operators`, `bounds` (the bounds that make any program stop),
`errors`.
"""

from qwen_evals.scoring.restricted_python.bounds import MAX_CODE_CHARS, MAX_PRINT_CHARS
from qwen_evals.scoring.restricted_python.errors import InterpreterError
from qwen_evals.scoring.restricted_python.program import DEFAULT_BUILTINS, RunResult, run

__all__ = ["DEFAULT_BUILTINS", "MAX_CODE_CHARS", "MAX_PRINT_CHARS", "InterpreterError", "RunResult", "run"]
