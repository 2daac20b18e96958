"""Four-option exams (MMLU, C-Eval) under the three protocols of the Qwen cards.

- `base_5shot`: the subject's five dev rows as a plain-text prompt; the answer is
  the letter with the highest next-token log-probability.
- `chat_0shot`: one user turn with the question; the letter is extracted from
  the free-text reply by the benchmark's cascade (Qwen's scripts).
- `chat_5shot`: the five dev rows as alternating chat turns; the answer is the
  first capital letter of the reply (OpenCompass).

A subclass supplies the data reader, the prompt wording and the averaging rule.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource
from qwen_evals.core.metrics import Metric, macro_mean_stderr, mean_stderr
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import (
    Extraction,
    Generate,
    LogLikelihood,
    LogLikelihoodResult,
    Message,
    Output,
    Request,
    Sample,
)
from qwen_evals.scoring.choice_extraction import first_capital

SHOT_SPLIT = "dev"
LETTERS = ("A", "B", "C", "D")


def options_block(options: Mapping[str, str]) -> str:
    """`A. text` lines, each ending in a newline, in letter order."""
    return "".join(f"{letter}. {options[letter]}\n" for letter in LETTERS)


def check_answers(path: Path, rows: Sequence[dict[str, str]], column: str = "answer") -> None:
    """Every row's answer must be one of A-D."""
    for number, row in enumerate(rows, start=1):
        if row[column].strip() not in LETTERS:
            raise EvalError(f"{path}: row {number} has answer {row[column]!r}, expected one of {list(LETTERS)}")


@dataclass(frozen=True)
class Question:
    """One exam row; `answer` is None where labels are hidden (C-Eval test)."""

    subject: str
    index: str
    question: str
    options: dict[str, str]
    answer: str | None


class MultipleChoiceExam(Task):
    splits: ClassVar[tuple[str, ...]]
    averaging: ClassVar[str]
    """"micro" (over questions) or "macro" (over subjects), as the card computes it."""
    n_shots: ClassVar[int] = 5
    hub_id: ClassVar[str]
    local_data: ClassVar[str]
    """The override that points at local files instead of the hub dataset `hub_id`."""

    def __init__(
        self,
        protocol: str,
        split: str,
        data_dir: str | None = None,
        revision: str = "main",
        subjects: list[str] | None = None,
        max_new_tokens: int = 512,
    ) -> None:
        super().__init__(protocol)
        if split not in self.splits:
            raise EvalError(f"task.split={split!r} is not a {self.name} split; choose one of {list(self.splits)}")
        self.split = split
        self.data_dir = Path(data_dir) if data_dir else None
        self.revision = revision
        known = self.all_subjects()
        unknown = sorted(set(subjects or ()) - set(known))
        if unknown:
            raise EvalError(f"task.subjects has unknown {self.name} subject(s) {unknown}")
        self.subjects = list(subjects) if subjects else known
        self.max_new_tokens = max_new_tokens
        self._shots: dict[str, list[Question]] = {}

    # ---- what a benchmark supplies -------------------------------------------------

    @abstractmethod
    def all_subjects(self) -> list[str]: ...

    @abstractmethod
    def category(self, subject: str) -> str: ...

    @abstractmethod
    def read_questions(self, split: str, subject: str) -> list[Question]: ...

    @abstractmethod
    def base_prompt(self, subject: str, shots: list[Question], question: Question) -> str:
        """Plain-text few-shot prompt ending where the answer letter goes."""

    @abstractmethod
    def base_continuation(self, letter: str) -> str:
        """The scored continuation for a letter (e.g. " A" after "Answer:")."""

    @abstractmethod
    def chat_0shot_prompt(self, question: Question) -> str: ...

    @abstractmethod
    def extract_chat_0shot(self, response: str, question: Question) -> Extraction: ...

    @abstractmethod
    def chat_5shot_turn(self, question: Question, *, final: bool) -> str: ...

    @abstractmethod
    def chat_5shot_answer(self, letter: str) -> str: ...

    # ---- the Task contract ---------------------------------------------------------

    def hub_resources(self) -> list[HubResource]:
        return [] if self.data_dir else [HubResource("dataset", self.hub_id, self.local_data)]

    def restrictions(self) -> dict[str, Any]:
        return {} if self.subjects == self.all_subjects() else {"subjects": list(self.subjects)}

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "split": self.split,
            "averaging": self.averaging,
            "source": str(self.data_dir) if self.data_dir else f"hub@{self.revision}",
            "n_subjects": len(self.subjects),
        }

    def read_samples(self, limit: int | None = None) -> list[Sample]:
        samples = []
        for subject in self.subjects:
            questions = self.read_questions(self.split, subject)
            if limit is not None:
                questions = questions[:limit]
            samples += [
                Sample(
                    id=f"{subject}/{q.index}",
                    target=q.answer,
                    metadata={"subject": subject, "category": self.category(subject), "question": q},
                )
                for q in questions
            ]
        return samples

    def shots(self, subject: str) -> list[Question]:
        """The subject's first `n_shots` dev rows (read once)."""
        if subject not in self._shots:
            shots = self.read_questions(SHOT_SPLIT, subject)[: self.n_shots]
            if len(shots) < self.n_shots:
                raise EvalError(f"{self.name} {subject}: {self.protocol} needs {self.n_shots} dev rows, found {len(shots)}")
            self._shots[subject] = shots
        return self._shots[subject]

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        q: Question = sample.metadata["question"]
        found = self.read(sample, outputs)
        raw: Any = _letter_logprobs(outputs) if self.spec.kind == "loglikelihood" else outputs[0]
        return {
            "subject": q.subject,
            "category": self.category(q.subject),
            "output": raw,
            "prediction": found.answer,
            "target": q.answer,
            "correct": None if q.answer is None else found.answer == q.answer,
            "parse_status": found.status,
            "parse_rule": found.rule,
            **self.extra_columns(q),
        }

    def metrics(self) -> Sequence[Metric]:
        macro = {"averaging": "macro", "group": "subject"} if self.averaging == "macro" else {}
        return (
            Metric("accuracy", "correct", headline=True, **macro, description="share of questions answered right"),
            Metric("unparsed_rate", "parse_status", equals="unparsed", higher_is_better=False,
                   description="share of replies with no readable letter"),  # fmt: skip
            *self.extra_metrics(),
        )

    def extra_metrics(self) -> Sequence[Metric]:
        """Benchmark-specific metrics beyond accuracy (e.g. C-Eval Hard)."""
        return ()

    def extra_columns(self, question: Question) -> dict[str, Any]:
        """Benchmark-specific per-sample columns that its extra metrics average (e.g. C-Eval's `hard`)."""
        return {}

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        status_counts = records["parse_status"].value_counts().to_dict()
        if records["target"].isna().any():
            # Hidden labels: predictions only, scored by the benchmark's leaderboard.
            return {"parse_status": status_counts, "tables": {}}
        frame = records.assign(correct=records["correct"].astype(float))
        by_subject = grouped_accuracy(frame, "subject")
        by_subject.insert(1, "category", [self.category(s) for s in by_subject["subject"]])
        if self.averaging == "macro":
            by_category = pd.DataFrame(
                [
                    {"category": cat, "n_subjects": len(part), **_macro_row(frame[frame["category"] == cat])}
                    for cat, part in by_subject.groupby("category", sort=True)
                ]
            )
        else:
            by_category = grouped_accuracy(frame, "category")
        return {
            "parse_status": status_counts,
            "tables": {
                "category": by_category.to_dict(orient="records"),
                "subject": by_subject.to_dict(orient="records"),
            },
        }


# ---- the protocols -------------------------------------------------------------------


def _base_5shot(task: MultipleChoiceExam, sample: Sample) -> list[Request]:
    q: Question = sample.metadata["question"]
    prompt = task.base_prompt(q.subject, task.shots(q.subject), q)
    return [LogLikelihood(prompt, task.base_continuation(letter), is_reference=letter == q.answer) for letter in LETTERS]


def _chat_0shot(task: MultipleChoiceExam, sample: Sample) -> list[Request]:
    q: Question = sample.metadata["question"]
    messages: list[Message] = [{"role": "user", "content": task.chat_0shot_prompt(q)}]
    return [Generate(messages, max_new_tokens=task.max_new_tokens, reference=q.answer)]


def _chat_5shot(task: MultipleChoiceExam, sample: Sample) -> list[Request]:
    q: Question = sample.metadata["question"]
    messages: list[Message] = []
    for shot in task.shots(q.subject):
        messages.append({"role": "user", "content": task.chat_5shot_turn(shot, final=False)})
        messages.append({"role": "assistant", "content": task.chat_5shot_answer(shot.answer)})
    messages.append({"role": "user", "content": task.chat_5shot_turn(q, final=True)})
    return [Generate(messages, max_new_tokens=task.max_new_tokens, reference=q.answer)]


def _letter_logprobs(outputs: list[Output]) -> dict[str, float]:
    return {letter: out.logprob for letter, out in zip(LETTERS, outputs) if isinstance(out, LogLikelihoodResult)}


def _max_logprob(task: MultipleChoiceExam, sample: Sample, outputs: list[Output]) -> Extraction:
    logprobs = _letter_logprobs(outputs)
    return Extraction(max(logprobs, key=logprobs.__getitem__), "strict", "max_logprob")


def _cascade(task: MultipleChoiceExam, sample: Sample, outputs: list[Output]) -> Extraction:
    return task.extract_chat_0shot(str(outputs[0]), sample.metadata["question"])


def _first_capital(task: MultipleChoiceExam, sample: Sample, outputs: list[Output]) -> Extraction:
    return first_capital(str(outputs[0]))


def _read_shots(task: MultipleChoiceExam, samples: list[Sample]) -> None:
    for subject in dict.fromkeys(s.metadata["subject"] for s in samples):
        task.shots(subject)


PROTOCOLS = protocol_table(
    EvalProtocol("base_5shot", "loglikelihood", _base_5shot, _max_logprob,
                 "the subject's five dev rows as a plain-text prompt; the letter with the highest log-prob",
                 prepare=_read_shots),
    EvalProtocol("chat_0shot", "generate", _chat_0shot, _cascade,
                 "one user turn; the letter read by the benchmark's extraction cascade (Qwen's scripts)"),
    EvalProtocol("chat_5shot", "generate", _chat_5shot, _first_capital,
                 "five dev rows as chat turns; the first capital letter of the reply (OpenCompass)",
                 prepare=_read_shots),
)  # fmt: skip
MultipleChoiceExam.protocols = PROTOCOLS


def grouped_accuracy(frame: pd.DataFrame, by: str, value: str = "correct") -> pd.DataFrame:
    """Per-group table: n, accuracy, stderr and unparsed rate (rows sorted by group)."""
    rows = []
    for key, part in frame.groupby(by, sort=True):
        acc, se = mean_stderr([float(v) for v in part[value]])
        rows.append(
            {
                by: key,
                "n": len(part),
                "accuracy": acc,
                "stderr": se,
                "unparsed_rate": float((part["parse_status"] == "unparsed").mean()),
            }
        )
    return pd.DataFrame(rows)


def _macro_row(frame: pd.DataFrame) -> dict[str, float]:
    accuracy, stderr = macro_mean_stderr(frame, "subject", "correct")
    unparsed = float((frame["parse_status"] == "unparsed").mean())
    return {"n": len(frame), "accuracy": accuracy, "stderr": stderr, "unparsed_rate": unparsed}
