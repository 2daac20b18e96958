"""The exam's records: Qwen's exam_plugin files, or an exam in this project's format (the builtin one)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_evals.core.datafiles import read_json, read_jsonl, read_text
from qwen_evals.core.errors import EvalError
from qwen_evals.tasks.react.parsing import ReActStep, parse_react
from qwen_evals.tasks.react.template import TEMPLATES, Tool, parse_tool, validate_arguments

PACKAGE_EXAM = Path(__file__).resolve().parents[1] / "data" / "react_exam"
EXAM_FILES = ("tools.json", "positive.jsonl", "negative.jsonl")
QWEN_FILE = "exam_plugin_{version}_react_{subset}.jsonl"
SUBSETS = ("positive", "negative")
DEFAULT_THOUGHTS = {
    "positive": {
        "en": "I should use the {name} API to help with this.",
        "zh": "我需要调用 {name} API 来完成这个请求。",
    },
    "negative": {"en": "I can answer this without using any tool.", "zh": "这个问题不需要调用工具，我可以直接回答。"},
    "no_fitting_tool": {"en": "None of the available tools can do this.", "zh": "现有的工具都无法完成这个请求。"},
}
"""Gold thoughts of records without their own: by subset (or negative kind), then language."""


@dataclass(frozen=True)
class ExamRecord:
    id: str
    subset: str
    prompt: str
    response: str
    """The gold completion."""
    gold: ReActStep
    lang: str | None = None
    tools: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    where: str = ""


def read_qwen_exam(data_dir: Path, version: str) -> list[ExamRecord]:
    """Qwen's exam_plugin_<version>_react_{positive,negative}.jsonl: `prompt` + gold `response`."""
    records = []
    for subset in SUBSETS:
        for n, (where, row) in enumerate(read_jsonl(data_dir / QWEN_FILE.format(version=version, subset=subset))):
            for key in ("prompt", "response"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise EvalError(f"{where}: the record has no {key!r} text")
            gold = parse_react(row["response"])
            if subset == "positive" and not gold.action:
                raise EvalError(f"{where}: a positive record needs a gold 'Action:' in its response")
            if subset == "negative" and gold.has_action:
                raise EvalError(f"{where}: a negative record's gold response calls a tool")
            record_id = str(row.get("id", n))
            records.append(ExamRecord(record_id, subset, row["prompt"], row["response"], gold, where=where))
    return records


def read_tool_catalogue(path: Path) -> dict[str, Tool]:
    raw = read_json(path, "the exam's tool list")
    if not isinstance(raw, list) or not raw:
        raise EvalError(f"{path}: expected a non-empty JSON list of tools")
    tools = [parse_tool(item, f"{path}: tool {i}") for i, item in enumerate(raw)]
    catalogue = {t.name_for_model: t for t in tools}
    if len(catalogue) != len(tools):
        raise EvalError(f"{path}: tool names repeat")
    return catalogue


def read_project_exam(exam_dir: Path, protocol: str = "qwen_react") -> list[ExamRecord]:
    """An exam in this project's format (tools.json, positive.jsonl, negative.jsonl), rendered."""
    catalogue = read_tool_catalogue(exam_dir / "tools.json")
    records, seen = [], set()
    for subset in SUBSETS:
        for where, row in read_jsonl(exam_dir / f"{subset}.jsonl"):
            record = _project_record(subset, row, where, catalogue, protocol)
            if record.id in seen:
                raise EvalError(f"{where}: id {record.id!r} repeats")
            seen.add(record.id)
            records.append(record)
    return records


def _project_record(
    subset: str, row: dict[str, Any], where: str, catalogue: dict[str, Tool], protocol: str
) -> ExamRecord:
    record_id = row.get("id")
    if not isinstance(record_id, str) or not record_id.strip():
        raise EvalError(f"{where}: the record has no 'id'")
    where = f"{where} (id {record_id})"
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise EvalError(f"{where}: the record has no 'query' text")
    tools = _record_tools(row.get("tools"), where, catalogue)
    names = [t.name_for_model for t in tools]
    lang = row.get("lang") if isinstance(row.get("lang"), str) else "en"
    defaults = DEFAULT_THOUGHTS[subset]
    if subset == "negative":
        defaults = DEFAULT_THOUGHTS.get(str(row.get("kind")), defaults)
    thoughts = defaults.get(lang, defaults["en"])
    if subset == "positive":
        action = row.get("action")
        if not isinstance(action, str) or not action.strip():
            raise EvalError(f"{where}: a positive record needs a gold 'action'")
        if action not in names:
            raise EvalError(f"{where}: the gold action {action!r} is not among the record's tools {names}")
        if "action_input" not in row:
            raise EvalError(f"{where}: a positive record needs a gold 'action_input'")
        tool = next(t for t in tools if t.name_for_model == action)
        validate_arguments(tool, row["action_input"], where)
        thought = row.get("thought") or thoughts.format(name=tool.name_for_human)
        response = (
            f"Thought: {thought}\nAction: {action}\nAction Input: {json.dumps(row['action_input'], ensure_ascii=False)}"
        )
        tags = row.get("tags", [])
    else:
        if row.get("action"):
            raise EvalError(f"{where}: a negative record must not have a gold 'action'")
        final = row.get("final_answer")
        if not isinstance(final, str) or not final.strip():
            raise EvalError(f"{where}: a negative record needs a 'final_answer' text")
        response = f"Thought: {row.get('thought') or thoughts}\nFinal Answer: {final}"
        tags = [row["kind"]] if isinstance(row.get("kind"), str) else []
    if not (isinstance(tags, list) and all(isinstance(t, str) for t in tags)):
        raise EvalError(f"{where}: 'tags' must be a list of strings")
    prompt = TEMPLATES[protocol](query, tools)
    return ExamRecord(
        record_id, subset, prompt, response, parse_react(response), lang, tuple(names), tuple(tags), where
    )


def _record_tools(raw: Any, where: str, catalogue: dict[str, Tool]) -> list[Tool]:
    """The offered tools: names from tools.json or inline definitions; a JSON string is accepted."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise EvalError(f"{where}: the tool list is not valid JSON ({error})") from error
    if not isinstance(raw, list) or not raw:
        raise EvalError(f"{where}: 'tools' must be a non-empty list of tool names or tool definitions")
    tools = []
    for i, item in enumerate(raw):
        if isinstance(item, str):
            if item not in catalogue:
                raise EvalError(f"{where}: unknown tool {item!r} (not in tools.json)")
            tools.append(catalogue[item])
        else:
            tools.append(parse_tool(item, f"{where}: tool {i}"))
    names = [t.name_for_model for t in tools]
    if len(set(names)) != len(names):
        raise EvalError(f"{where}: the record offers a tool twice: {names}")
    return tools


def exam_version(exam_dir: Path) -> str | None:
    path = exam_dir / "VERSION"
    return read_text(path).strip() if path.is_file() else None


def files_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
