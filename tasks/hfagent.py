"""HuggingFace Agent benchmark, run mode (transformers 4.31.0 `tools/evaluate_agent.py`): 27 task
phrasings of 11 problems; the agent explains which tools it will use and writes a short program.

Protocol: ../shared/docs/protocols.md, "HuggingFace Agent benchmark" (QwenLM/Qwen
eval/evaluate_plugin.py --eval-hfagent, which calls transformers 4.31.0's `evaluate_agent`).
Card numbers (Qwen-7B-Chat): tool selection 90.74, tool used 92.59, code 74.07.

- Prompt: `run_prompt_template.txt` with `<<all_tools>>` replaced by one line
  `- {name}: {description}` per tool of the default toolbox (14 tools, 4.31's order) and
  `<<prompt>>` by the phrasing; sent as one user turn of the model's chat format, greedy,
  generation stopped at `Task:` (`task.stop`). As Qwen's agent did, `Human:` / `Assistant:`
  become `_HUMAN_:` / `_ASSISTANT_:` in the prompt and back in the reply
  (`task.qwen_reserved_words`; the run template contains neither word). A trailing stop
  string is removed.
- Parsing: the reply is prefixed with `I will use the following ` and split at `Answer:`:
  before is the explanation, after is the code, with a leading ```` ``` ````/```` ```py ````/
  ```` ```python ```` line and a trailing ```` ``` ```` line removed.
- Scores per phrasing, each in [0, 1], reported as fractions (the card prints 100 x mean):
  - `tool_selection`: tool names written in backticks in the explanation against the expected
    set; 1 if equal, else max(0, 1 - 0.25 x missing - 0.25 x unexpected);
  - `tool_used`: the same with the tool names that appear anywhere in the code;
  - `code`: the agent's program and the reference program(s) run in
    `evals.restricted_python` (an `ast` interpreter, never `exec`) with fake tools that
    return fixed English sentences embedding their arguments (the image tools raise unless
    their image argument contains "image", the transcriber unless its audio contains
    "sound"); inputs are bound to `<<name>>` (or the problem's literal values). 1.0 if the
    agent's result equals a reference result, 0.75 if it is a dict holding one among its
    values, else 0.3, also when the code failed.
  The expected tool set is the tool names in the reference program; with alternatives, the
  one whose result the agent reproduced (4.31's `get_theoretical_tools`), else the first.
- Data: `data_dir` with `evaluation_tasks.json` (run mode; ../shared/data/hfagent), or the
  transformers 4.31.0 wheel (`task.wheel=`), whose `EVALUATION_TASKS` literals are read with
  `ast` without running anything. The run template comes from `data_dir` when there, else
  from the hub dataset huggingface-tools/default-prompts, where 4.31 downloaded it from
  (`task.template_revision`; the wheel has no copy).
  Tool descriptions: tasks/data/hfagent/tools.json: 10 read from the 4.31.0 wheel; the 4 that
  4.31 fetched from Hub Spaces (image_transformer, text_downloader, image_generator,
  video_generator) are not staged and were **written for this project**.

Known deviations: 4.31 crashed the whole run on a reply without `Answer:` or with two; here
that reply scores as an explanation with empty code (`parse_status` = `no_answer`), or is
split at the first `Answer:`. Qwen's agent did not pass `Task:` to generation but only cut a
trailing one; generation here stops at it. The interpreter's differences from 4.31's are
listed in evals/restricted_python.py (unknown names are refused instead of fuzzily matched,
and a few more constructs are supported).
"""

from __future__ import annotations

import ast
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from evals.errors import EvalError
from evals.hub import download_hub_file
from evals.metrics import mean_stderr
from evals.restricted_python import RunResult, run
from evals.task import Task
from evals.types import Generate, Output, Request, Sample

PACKAGE_DATA = Path(__file__).resolve().parent / "data" / "hfagent"
TASKS_FILE = "evaluation_tasks.json"
TEMPLATE_FILE = "run_prompt_template.txt"
TEMPLATE_REPO = "huggingface-tools/default-prompts"  # where transformers 4.31 fetched the run prompt from
TOOLS_FILE = "tools.json"
WHEEL_MODULE = "transformers/tools/evaluate_agent.py"
REPLY_PREFIX = "I will use the following "
SPLIT_TOKEN = "Answer:"
FENCE_OPENINGS = ("```", "```py", "```python")
RESERVED = (("Human:", "_HUMAN_:"), ("Assistant:", "_ASSISTANT_:"))
RESULT_CHARS = 2000


# ---- the fake tools (transformers 4.31's test tools: fixed sentences embedding the arguments) ----


def _classifier(text: Any, labels: Any) -> str:
    return f"This is the classification of {text} along {labels}."


def _translator(text: Any, src_lang: Any, tgt_lang: Any) -> str:
    return f"This is the translation of {text} from {src_lang} to {tgt_lang}."


def _speaker(text: Any) -> str:
    return f"This is actually a sound reading {text}."


def _transcriber(audio: Any) -> str:
    if "sound" not in audio:
        raise ValueError(f"`audio` ({audio}) is not a sound.")
    return f"This is the transcribed text from {audio}."


def _image_generator(prompt: Any) -> str:
    return f"This is actually an image representing {prompt}."


def _image_captioner(image: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is a description of {image}."


def _image_transformer(image: Any, prompt: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is a transformation of {image} according to {prompt}."


def _question_answerer(text: Any, question: Any) -> str:
    return f"This is the answer to {question} from {text}."


def _image_qa(image: Any, question: Any) -> str:
    if "image" not in image:
        raise ValueError(f"`image` ({image}) is not an image.")
    return f"This is the answer to {question} from {image}."


def _text_downloader(url: Any) -> str:
    return f"This is the content of {url}."


def _summarizer(text: Any) -> str:
    return f"This is a summary of {text}."


def _video_generator(prompt: Any, seconds: Any = 2) -> str:
    return f"A video of {prompt}"


def _document_qa(image: Any, question: Any) -> str:
    return f"This is the answer to {question} from the document {image}."


def _image_segmenter(image: Any, prompt: Any) -> str:
    return f"This is the mask of {prompt} in {image}"


FAKE_TOOLS: dict[str, Callable[..., str]] = {
    "text_classifier": _classifier,
    "translator": _translator,
    "text_reader": _speaker,
    "summarizer": _summarizer,
    "transcriber": _transcriber,
    "image_generator": _image_generator,
    "image_captioner": _image_captioner,
    "image_transformer": _image_transformer,
    "text_qa": _question_answerer,
    "text_downloader": _text_downloader,
    "image_qa": _image_qa,
    "video_generator": _video_generator,
    "document_qa": _document_qa,
    "image_segmenter": _image_segmenter,
}
"""Tool name -> fake, in 4.31's TEST_TOOLS order (the order tool names are searched in)."""


@dataclass(frozen=True)
class Problem:
    index: int
    phrasings: tuple[str, ...]
    inputs: dict[str, str]
    answers: tuple[str, ...]
    """Reference programs (accepted alternatives)."""


@dataclass(frozen=True)
class AgentReply:
    explanation: str
    code: str
    status: str
    """"answer" (one `Answer:`), "multiple_answers" (split at the first) or "no_answer"."""


def run_program(code: str, inputs: dict[str, str]) -> RunResult:
    """A program with the fake tools, the inputs as variables, and 4.31's builtins."""
    return run(code, FAKE_TOOLS, inputs)


def tools_in_code(code: str) -> set[str]:
    """Tool names appearing anywhere in the code (a substring test, as 4.31 does)."""
    return {name for name in FAKE_TOOLS if name in code}


def tools_in_explanation(explanation: str) -> set[str]:
    return {name for name in FAKE_TOOLS if f"`{name}`" in explanation}


def set_score(found: set[str], expected: set[str]) -> float:
    if found == expected:
        return 1.0
    return max(0.0, 1.0 - 0.25 * len(expected - found) - 0.25 * len(found - expected))


def _contains(values: list[Any], value: Any) -> bool:
    try:
        return any(value == v for v in values)
    except RecursionError:
        return False


def code_score(result: Any, references: list[Any]) -> float:
    if _contains(references, result):
        return 1.0
    if isinstance(result, dict) and any(_contains(references, v) for v in list(result.values())):
        return 0.75
    return 0.3


def expected_tools(result: Any, references: list[Any], answers: tuple[str, ...]) -> set[str]:
    """The tools of the reference program the agent matched (4.31's get_theoretical_tools)."""
    if len(answers) == 1:
        return tools_in_code(answers[0])
    if isinstance(result, dict):
        for reference, answer in zip(references, answers):
            if _contains(list(result.values()), reference):
                return tools_in_code(answer)
    for reference, answer in zip(references, answers):
        if _contains([result], reference):
            return tools_in_code(answer)
    return tools_in_code(answers[0])


def parse_reply(reply: str, stop: tuple[str, ...] = ()) -> AgentReply:
    """Explanation and code of a run-mode reply (4.31's clean_code_for_run)."""
    for s in stop:
        if s and reply.endswith(s):
            reply = reply[: -len(s)]
    text = REPLY_PREFIX + reply
    explanation, found, code = text.partition(SPLIT_TOKEN)
    if not found:
        return AgentReply(explanation.strip(), "", "no_answer")
    status = "multiple_answers" if SPLIT_TOKEN in code else "answer"
    lines = code.strip().split("\n")
    if lines[0] in FENCE_OPENINGS:
        lines = lines[1:]
    if lines and lines[-1] == "```":
        lines = lines[:-1]
    return AgentReply(explanation.strip(), "\n".join(lines), status)


def oracle_reply(answer: str) -> str:
    """What a perfect agent writes after "I will use the following": its tools, then the program."""
    names = sorted(tools_in_code(answer), key=answer.index)
    listing = ", ".join(f"`{n}`" for n in names)
    noun = "tool" if len(names) == 1 else "tools"
    return f"{noun}: {listing}.\n\n{SPLIT_TOKEN}\n```py\n{answer}\n```"


def read_tool_descriptions(path: Path = PACKAGE_DATA / TOOLS_FILE) -> list[tuple[str, str]]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        tools = [(t["name"], t["description"]) for t in raw["tools"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
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


class HFAgent(Task):
    name = "hfagent"
    protocols = ("run",)
    main_metric = "code"
    sample_metrics: ClassVar[dict[str, str]] = {
        "tool_selection": "tool_selection",
        "tool_used": "tool_used",
        "code": "code",
    }
    """summary metric -> the per-sample column it averages."""

    def __init__(
        self,
        protocol: str = "run",
        data_dir: str | None = None,
        wheel: str | None = None,
        max_new_tokens: int = 512,
        stop: list[str] | tuple[str, ...] = ("Task:",),
        qwen_reserved_words: bool = True,
        template_revision: str = "main",
    ) -> None:
        super().__init__(protocol)
        self.data_dir = Path(data_dir) if data_dir else None
        self.wheel = Path(wheel) if wheel else None
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(stop or ())
        self.qwen_reserved_words = qwen_reserved_words
        self.template_revision = template_revision
        self.source = ""
        self.template_source = ""
        self.template = ""
        self.tools = read_tool_descriptions()
        self.problems: list[Problem] = []
        self._references: dict[int, list[Any]] = {}

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "source": self.source,
            "template": self.template_source,
            "tool_descriptions": f"{PACKAGE_DATA / TOOLS_FILE} (10 from the transformers 4.31.0 wheel, "
            "4 written for this project: image_transformer, text_downloader, image_generator, video_generator)",
            "n_problems": len(self.problems),
            "stop": list(self.stop),
            "qwen_reserved_words": self.qwen_reserved_words,
        }

    # ---- data ----------------------------------------------------------------------

    def read_source(self) -> tuple[list[str], list[Problem]]:
        tasks_path = self.data_dir / TASKS_FILE if self.data_dir else None
        if tasks_path is not None and tasks_path.is_file():
            try:
                raw = json.loads(tasks_path.read_text(encoding="utf-8"))
            except ValueError as error:
                raise EvalError(f"{tasks_path}: not valid JSON ({error})") from error
            self.source = str(tasks_path)
            return parse_problems(raw, str(tasks_path))
        if self.wheel is not None:
            raw = read_wheel(self.wheel)
            self.source = f"{self.wheel} ({raw['wheel']})"
            return parse_problems(raw, f"{self.wheel}!{WHEEL_MODULE}")
        if tasks_path is not None:
            raise EvalError(
                f"Missing data file: {tasks_path} (or give task.wheel=<transformers-4.31.0-py3-none-any.whl>)"
            )
        raise EvalError(
            "hfagent needs its task list: data_dir=<dir with hfagent/evaluation_tasks.json> "
            "or task.wheel=<path to transformers-4.31.0-py3-none-any.whl>"
        )

    def read_template(self) -> str:
        """The run prompt: data_dir's copy, else the hub file transformers 4.31 itself downloaded."""
        path = self.data_dir / TEMPLATE_FILE if self.data_dir else None
        if path is None or not path.is_file():
            path = download_hub_file(
                TEMPLATE_REPO, TEMPLATE_FILE, "dataset", self.template_revision, f"data_dir=<dir with {TEMPLATE_FILE}>"
            )
        text = path.read_text(encoding="utf-8")
        for placeholder in ("<<all_tools>>", "<<prompt>>"):
            if placeholder not in text:
                raise EvalError(f"{path}: the run template has no {placeholder} placeholder")
        self.template_source = str(path)
        return text

    def load(self, limit: int | None = None) -> list[Sample]:
        tool_names, self.problems = self.read_source()
        toolbox = [name for name, _ in self.tools]
        if set(tool_names) != set(toolbox) or set(toolbox) != set(FAKE_TOOLS):
            raise EvalError(
                f"{self.source}: the benchmark's tools {sorted(tool_names)} differ from the toolbox {sorted(toolbox)}"
            )
        self.template = self.read_template()
        samples = []
        for problem in self.problems:
            references = []
            for k, answer in enumerate(problem.answers):
                result = run_program(answer, problem.inputs)
                if not result.ok or result.value is None:
                    raise EvalError(
                        f"{self.source}: problem {problem.index}, reference program {k} does not run: "
                        f"{result.error or 'no result'}"
                    )
                references.append(result.value)
            self._references[problem.index] = references
            phrasings = problem.phrasings[:limit] if limit is not None else problem.phrasings
            for k, phrasing in enumerate(phrasings):
                samples.append(
                    Sample(
                        id=f"problem{problem.index:02d}/{k}",
                        target=list(problem.answers),
                        metadata={"problem": problem, "phrasing": phrasing},
                    )
                )
        return samples

    def prompt(self, phrasing: str) -> str:
        text = self.template.replace("<<all_tools>>", render_tools(self.tools)).replace("<<prompt>>", phrasing)
        return self._protect(text)

    def _protect(self, text: str) -> str:
        if self.qwen_reserved_words:
            for word, stand_in in RESERVED:
                text = text.replace(word, stand_in)
        return text

    def _restore(self, text: str) -> str:
        if self.qwen_reserved_words:
            for word, stand_in in RESERVED:
                text = text.replace(stand_in, word)
        return text

    # ---- the Task contract -----------------------------------------------------------

    def requests(self, sample: Sample) -> list[Request]:
        problem: Problem = sample.metadata["problem"]
        return [
            Generate(
                [{"role": "user", "content": self.prompt(sample.metadata["phrasing"])}],
                max_new_tokens=self.max_new_tokens,
                stop=tuple(self._protect(s) for s in self.stop),
                reference=oracle_reply(problem.answers[0]),
            )
        ]

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        problem: Problem = sample.metadata["problem"]
        output = self._restore(str(outputs[0]))
        reply = parse_reply(output, self.stop)
        agent = run_program(reply.code, problem.inputs)
        references = self._references[problem.index]
        expected = expected_tools(agent.value, references, problem.answers)
        selected, used = tools_in_explanation(reply.explanation), tools_in_code(reply.code)
        return {
            "problem": problem.index,
            "phrasing": sample.metadata["phrasing"],
            "output": output,
            "explanation": reply.explanation,
            "program": reply.code,
            "parse_status": reply.status,
            "tools_expected": sorted(expected),
            "tools_selected": sorted(selected),
            "tools_used": sorted(used),
            "tool_selection": set_score(selected, expected),
            "tool_used": set_score(used, expected),
            "code": code_score(agent.value, references),
            "result": _short(agent.value),
            "reference_results": [_short(r) for r in references],
            "code_error": agent.error,
            "code_error_kind": agent.error_kind,
            "printed": "".join(agent.printed)[:RESULT_CHARS],
        }

    def summarize(self, records: pd.DataFrame) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for column in ("tool_selection", "tool_used", "code"):
            metrics[column], metrics[f"{column}_stderr"] = mean_stderr([float(v) for v in records[column]])
        metrics["unparsed_rate"] = float((records["parse_status"] == "no_answer").mean())
        metrics["code_error_rate"] = float(records["code_error"].notna().mean())
        by_problem = (
            records.groupby("problem", sort=True)
            .agg(
                n=("code", "size"),
                tool_selection=("tool_selection", "mean"),
                tool_used=("tool_used", "mean"),
                code=("code", "mean"),
            )
            .reset_index()
        )
        return {
            "metrics": metrics,
            "points": {  # transformers' evaluate_agent output: 100 x mean
                "tool selection score": 100 * metrics["tool_selection"],
                "tool used score": 100 * metrics["tool_used"],
                "code score": 100 * metrics["code"],
            },
            "parse_status": records["parse_status"].value_counts().to_dict(),
            "code_error_kinds": records["code_error_kind"].dropna().value_counts().to_dict(),
            "tables": {"problem": by_problem.to_dict(orient="records")},
        }


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + "..."
