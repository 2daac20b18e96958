"""The restricted-Python interpreter: the subset, 4.31's result semantics, refusals and bounds."""

from __future__ import annotations

import ast
import builtins
import time

import pytest

from qwen_evals.scoring.restricted_python import run


def echo(text, mode="plain"):
    return f"echo({text}, {mode})"


def picky(image):
    if "image" not in image:
        raise ValueError(f"{image} is not an image")
    return f"seen {image}"


TOOLS = {"echo": echo, "picky": picky}


def test_the_subset_runs_and_the_value_is_the_last_non_none_statement():
    code = """
greeting = echo(text, mode="loud")
print(f"got {greeting!r} and {1 + 2:03d}")
items = [1, 2, 3]
items[0] = 10
total = 0
for n in items:
    if n > 2 and not n == 3:
        total += n
    elif n == 2:
        continue
    else:
        break
pair = (total, "x")
a, b = pair
d = {"k": a, "v": [b] * 2}
d["w"] = items[1:] + [str(7 // 2), int("4"), float(1) / 4, bool(0), len_ok] if False else items[-1]
while a > 5:
    a -= 3
label = "big" if 1 < a <= 5 else "small"
echo(f"{label}-{d['k']}")
print("done")
"""
    result = run(code, TOOLS, {"text": "<<text>>"})
    assert result.ok, result.error
    assert result.value == "echo(big-10, plain)"  # print() gives None, so the value stays
    assert result.state["greeting"] == "echo(<<text>>, loud)"
    assert result.state["total"] == 10 and result.state["a"] == 4 and result.state["d"]["w"] == 3
    assert result.printed == ["got 'echo(<<text>>, loud)' and 003\n", "done\n"]


def test_refused_statement_keeps_the_value_so_far_and_a_tool_error_gives_none():
    partial = run("x = echo('a')\ny = x.upper()\nz = echo('b')", TOOLS)
    assert partial.value == "echo(a, plain)" and partial.error_kind == "refused"
    assert "z" not in partial.state
    failed = run("x = echo('a')\ny = picky(x)", TOOLS)
    assert failed.value is None and failed.error_kind == "runtime" and "not an image" in failed.error
    assert run("x = echo(", TOOLS).error_kind == "syntax"


@pytest.mark.parametrize(
    "code, message",
    [
        ("__import__('os')", "__import__"),
        ("__import__('os').system('echo pwned')", "`.system`"),
        ("import os", "import is refused"),
        ("from os import path", "import is refused"),
        ("x = text.__class__", "__class__"),
        ("x = text.__class__.__mro__[1].__subclasses__()", "__subclasses__"),
        ("x = ().__class__", "__class__"),
        ("x = text._private", "_private"),
        ("x = __builtins__", "__builtins__"),
        ("__dict__ = 1", "__dict__"),
        ("x = text.upper()", "attribute access"),
        ("eval('1 + 1')", "`eval` is not one of the available tools"),
        ("exec('x = 1')", "`exec` is not one of the available tools"),
        ("open('/etc/passwd')", "`open` is not one of the available tools"),
        ("getattr(text, '__class__')", "`getattr` is not one of the available tools"),
        ("x = undefined_name", "not defined"),
        ("f = echo", "can only be called"),
        ("f = print", "can only be called"),
        ("x = lambda: 1", "Lambda"),
        ("def f():\n    pass", "FunctionDef"),
        ("class A:\n    pass", "ClassDef"),
        ("x = [i for i in range(3)]", "ListComp"),
        ("with text as t:\n    pass", "With"),
        ("try:\n    x = 1\nexcept Exception:\n    pass", "Try"),
        ("del text", "Delete"),
        ("global text", "Global"),
        ("echo(*[1])", "*args"),
        ("echo(**{'text': 1})", "**kwargs"),
        ("x = '%s' % text", "%-formatting"),
        ("break", "outside a loop"),
    ],
)
def test_outside_the_subset_is_refused(code, message):
    result = run(code, TOOLS, {"text": "<<text>>"})
    assert result.error_kind == "refused", result
    assert message in result.error


def test_never_calls_exec_or_eval_and_compiles_only_to_an_ast(monkeypatch):
    real_compile = builtins.compile

    def forbidden(*args, **kwargs):
        raise AssertionError("the interpreter must not call exec/eval")

    def ast_only(source, filename, mode, flags=0, *args, **kwargs):
        assert flags & ast.PyCF_ONLY_AST, "compile() may only build an AST (ast.parse)"
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "compile", ast_only)
    result = run("x = echo(f'{text}!')\nif x:\n    y = [x, 1 + 2]", TOOLS, {"text": "t"})
    assert result.ok and result.value == ["echo(t!, plain)", 3]


@pytest.mark.parametrize(
    "code",
    [
        "while True:\n    pass",
        "x = 0\nwhile x >= 0:\n    x += 1",
        "for i in range(10 ** 12):\n    pass",
        "for i in range(10 ** 6):\n    for j in range(10 ** 6):\n        pass",
        "while True:\n    continue",
    ],
)
def test_infinite_loops_are_stopped(code):
    start = time.perf_counter()
    result = run(code, TOOLS)
    assert result.error_kind == "limit" and "stopped" in result.error
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    "code",
    [
        "x = 'a' * 10 ** 9",
        "x = [0] * 10 ** 9",
        "x = 2 ** 10 ** 9",
        "x = 1 << 10 ** 9",
        "s = 'ab'\nwhile True:\n    s = s + s",
        "x = 7\nwhile True:\n    x = x * x",
        "x = f'{1:>{10 ** 9}}'",
        "big = ['a' * 1000] * 1000\nprint(big)",
        "l = [1]\nl[0] = l\nx = echo(l)",
    ],
)
def test_memory_and_cpu_bombs_hit_a_bound(code):
    start = time.perf_counter()
    result = run(code, TOOLS)
    assert result.error_kind == "limit", result.error
    assert time.perf_counter() - start < 2.0


def test_runtime_errors_of_operations_are_contained():
    for code in ("x = 1 / 0", "x = [1][5]", "x = 'a' + 1", "x = {'a': 1}\ny = {x: 1}", "a, b = (1, 2, 3)"):
        result = run(code, TOOLS)
        assert result.error_kind == "runtime" and result.value is None, code
    assert run("d = {'a': 1}\nv = d['missing']", TOOLS).error_kind == "refused"


def test_tools_stay_callable_when_a_variable_shadows_their_name():
    assert run("echo = 'x'\nresult = echo('y')", TOOLS).value == "echo(y, plain)"
