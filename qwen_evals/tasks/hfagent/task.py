"""The HF Agent task: the run prompt with the toolbox, each reply's explanation and program scored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.datafiles import read_json, read_text
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource, download_hub_file
from qwen_evals.core.metrics import Metric
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import Generate, Output, Request, Sample
from qwen_evals.tasks.hfagent.replies import code_score, expected_tools, oracle_reply, parse_reply, set_score
from qwen_evals.tasks.hfagent.source import (
    PACKAGE_DATA,
    TASKS_FILE,
    TOOLS_FILE,
    WHEEL_MODULE,
    Problem,
    parse_problems,
    read_tool_descriptions,
    read_wheel,
    render_tools,
)
from qwen_evals.tasks.hfagent.tools import FAKE_TOOLS, run_program, tools_in_code, tools_in_explanation

TEMPLATE_FILE = "run_prompt_template.txt"
TEMPLATE_REPO = "huggingface-tools/default-prompts"  # where transformers 4.31 fetched the run prompt from
RESERVED = (("Human:", "_HUMAN_:"), ("Assistant:", "_ASSISTANT_:"))
RESULT_CHARS = 2000


class HFAgent(Task):
    name = "hfagent"

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

    def hub_resources(self) -> list[HubResource]:
        if self.data_dir and (self.data_dir / TEMPLATE_FILE).is_file():
            return []
        return [HubResource("dataset", TEMPLATE_REPO, f"data_dir=<dir with {TEMPLATE_FILE}>")]

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
            raw = read_json(tasks_path)
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
            (needed,) = self.hub_resources()
            path = download_hub_file(TEMPLATE_REPO, TEMPLATE_FILE, "dataset", self.template_revision, needed.local_option)
        text = read_text(path)
        for placeholder in ("<<all_tools>>", "<<prompt>>"):
            if placeholder not in text:
                raise EvalError(f"{path}: the run template has no {placeholder} placeholder")
        self.template_source = str(path)
        return text

    def read_samples(self, limit: int | None = None) -> list[Sample]:
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
        return self.protect(text)

    def protect(self, text: str) -> str:
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

    def metrics(self) -> Sequence[Metric]:
        return (
            Metric("tool_selection", "tool_selection", compared=True,
                   description="tools named in the explanation vs expected"),
            Metric("tool_used", "tool_used", compared=True, description="tools used in the code vs expected"),
            Metric("code", "code", headline=True, description="the program's result against the reference's"),
            Metric("unparsed_rate", "parse_status", equals="no_answer", higher_is_better=False,
                   description="replies without 'Answer:'"),
            Metric("code_error_rate", "code_failed", higher_is_better=False,
                   description="programs that failed in the interpreter"),
        )  # fmt: skip

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
            "code_failed": agent.error is not None,
            "code_error_kind": agent.error_kind,
            "printed": "".join(agent.printed)[:RESULT_CHARS],
        }

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
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
            "points": {  # transformers' evaluate_agent output: 100 x mean
                "tool selection score": 100 * metrics["tool_selection"],
                "tool used score": 100 * metrics["tool_used"],
                "code score": 100 * metrics["code"],
            },
            "parse_status": records["parse_status"].value_counts().to_dict(),
            "code_error_kinds": records["code_error_kind"].dropna().value_counts().to_dict(),
            "tables": {"problem": by_problem.to_dict(orient="records")},
        }


def _run(task: HFAgent, sample: Sample) -> list[Request]:
    problem: Problem = sample.metadata["problem"]
    return [
        Generate(
            [{"role": "user", "content": task.prompt(sample.metadata["phrasing"])}],
            max_new_tokens=task.max_new_tokens,
            stop=tuple(task.protect(s) for s in task.stop),
            reference=oracle_reply(problem.answers[0]),
        )
    ]


HFAgent.protocols = protocol_table(
    EvalProtocol("run", "generate", _run, description="transformers 4.31 evaluate_agent, run mode"),
)


def _short(value: Any) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS] + "..."
