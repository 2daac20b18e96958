"""The benchmark's problems (evaluation_tasks.json, or read out of the transformers 4.31.0 wheel) and tool descriptions."""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_evals.core.datafiles import read_json
from qwen_evals.core.errors import EvalError

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data" / "hfagent"
TASKS_FILE = "evaluation_tasks.json"
TOOLS_FILE = "tools.json"
WHEEL_MODULE = "transformers/tools/evaluate_agent.py"


@dataclass(frozen=True)
class Problem:
    index: int
    phrasings: tuple[str, ...]
    inputs: dict[str, str]
    answers: tuple[str, ...]
    """Reference programs (accepted alternatives)."""


def read_tool_descriptions(path: Path = PACKAGE_DATA / TOOLS_FILE) -> list[tuple[str, str]]:
    raw = read_json(path, "the agent's tool list")
    try:
        tools = [(t["name"], t["description"]) for t in raw["tools"]]
    except (KeyError, TypeError) as error:
        raise EvalError(f"{path}: not a tool list ({error})") from error
    return tools


def render_tools(tools: list[tuple[str, str]]) -> str:
    return "\n".join(f"- {name}: {description}" for name, description in tools)


# ---- reading the benchmark -----------------------------------------------------------


def parse_problems(raw: Any, where: str) -> tuple[list[str], list[Problem]]:
    """(tool names, problems) from evaluation_tasks.json's content; errors name the problem."""
    if not isinstance(raw, dict) or not isinstance(raw.get("problems"), list) or not raw["problems"]:
        raise EvalError(f"{where}: expected an object with a non-empty 'problems' list")
    tool_names = raw.get("tool_names")
    if not (isinstance(tool_names, list) and all(isinstance(n, str) for n in tool_names)):
        raise EvalError(f"{where}: 'tool_names' must be a list of tool names")
    problems = [_parse_problem(i, item, f"{where}: problem {i}") for i, item in enumerate(raw["problems"])]
    return tool_names, problems


def _parse_problem(index: int, item: Any, where: str) -> Problem:
    if not isinstance(item, dict):
        raise EvalError(f"{where} is not an object")
    task, inputs, answer = item.get("task"), item.get("inputs"), item.get("answer")
    phrasings = [task] if isinstance(task, str) else task
    if not (isinstance(phrasings, list) and phrasings and all(isinstance(p, str) and p.strip() for p in phrasings)):
        raise EvalError(f"{where}: 'task' must be a phrasing or a non-empty list of phrasings")
    if isinstance(inputs, list) and all(isinstance(n, str) for n in inputs):
        bound = {name: f"<<{name}>>" for name in inputs}
    elif isinstance(inputs, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in inputs.items()):
        bound = dict(inputs)
    else:
        raise EvalError(f"{where}: 'inputs' must be a list of names or a dict of string values")
    answers = [answer] if isinstance(answer, str) else answer
    if not (isinstance(answers, list) and answers and all(isinstance(a, str) and a.strip() for a in answers)):
        raise EvalError(f"{where}: 'answer' must be a reference program or a non-empty list of them")
    return Problem(index, tuple(phrasings), bound, tuple(answers))


def read_wheel(path: Path) -> dict[str, Any]:
    """evaluation_tasks.json's content, read from transformers' evaluate_agent.py inside a wheel.

    The module is parsed, never imported: `EVALUATION_TASKS = [Problem(task=..., inputs=...,
    answer=...), ...]` and the keys of `TEST_TOOLS` are read as literals.
    """
    try:
        with zipfile.ZipFile(path) as wheel:
            source = wheel.read(WHEEL_MODULE).decode("utf-8")
            version = next((n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA")), None)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise EvalError(f"task.wheel={str(path)!r}: cannot read {WHEEL_MODULE} from it ({error})") from error
    where = f"{path}!{WHEEL_MODULE}"
    problems: list[dict[str, Any]] | None = None
    tool_names: list[str] | None = None
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise EvalError(f"{where}: not parsable ({error.msg})") from error
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if name == "TEST_TOOLS" and isinstance(node.value, ast.Dict):
            tool_names = [ast.literal_eval(k) for k in node.value.keys if k is not None]
        elif name == "EVALUATION_TASKS" and isinstance(node.value, ast.List):
            problems = []
            for i, element in enumerate(node.value.elts):
                if not isinstance(element, ast.Call):
                    raise EvalError(f"{where}: EVALUATION_TASKS[{i}] is not a Problem(...)")
                try:
                    problems.append({k.arg: ast.literal_eval(k.value) for k in element.keywords})
                except ValueError as error:
                    raise EvalError(f"{where}: EVALUATION_TASKS[{i}] holds a non-literal ({error})") from error
    if problems is None or tool_names is None:
        raise EvalError(f"{where}: no EVALUATION_TASKS / TEST_TOOLS literals (is this transformers 4.31.0?)")
    return {"tool_names": tool_names, "problems": problems, "wheel": version}
