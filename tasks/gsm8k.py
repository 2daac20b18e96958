"""GSM8K (Cobbe et al., 2021, arXiv:2110.14168): 1319 grade-school math word problems.

Protocols follow ../shared/docs/protocols.md (GSM8K section):
- `chat_0shot`: the question alone as one user turn, QwenLM/Qwen
  eval/evaluate_chat_gsm8k.py; the Qwen-7B-Chat card's 41.1.
- `chat_4shot`: the same script with `--use-fewshot`, the card's 43.5: four fixed
  *train* exemplars (Angelo and Melanie, Mark's basketball, Bella's marbles, the
  four fruit baskets) concatenated into one user message, each
  `Question: {q}\\nLet's think step by step\\n{rationale}\\nThe answer is {N}\\n\\n`,
  then `Question: {q}\\nLet's think step by step`. The exemplars are looked up in
  the train split by their text; their rationale is the train answer without
  its `<<...>>` calculator annotations, which gives the script's text exactly.
- `chat_8shot`: the eight exemplars of Qwen's `gsm8k_prompt.txt` as alternating
  user / assistant turns (OpenCompass's multi-turn form, with Qwen's shots).
- `base_8shot`: eval/evaluate_gsm8k.py: `gsm8k_prompt.txt`, then
  `\\nQuestion: {q}\\nLet's think step by step\\n`; generation stops at a blank
  line or at "Question:".

Answers are read two ways and reported side by side (evals/numbers.py):
`strict`, the protocol's own cue ("The answer is N", or "#### N"), and
`flexible`, the last number in the reply with signs, thousands separators and
decimals, compared numerically (Qwen's rule at HEAD). The headline `accuracy` is
the flexible one. Qwen's scripts at the card's version took the last run of digits
of the reply and of the gold alike (`1,000` read as `000`, `-3` as `3`); that
reading is reported too, as `card_rule_accuracy`, so a run can be set against the
card's 41.1 / 43.5 under the rule that produced them.
The gold answer is the number on the reference's `#### N` line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from evals.errors import EvalError
from evals.hub import load_hub_dataset
from evals.jsonl_files import read_jsonl
from evals.metrics import mean_stderr
from evals.numbers import format_number, last_digit_run, last_number, parse_number, same_number, strict_answer
from evals.task import Task
from evals.types import Generate, Message, Output, Request, Sample

HUB_ID = "openai/gsm8k"
HUB_CONFIG = "main"
PROMPT_FILE = "gsm8k_prompt.txt"
SPLITS = ("test", "train")
STEP_BY_STEP = "Let's think step by step"
BASE_STOP = ("\n\n", "Question:")
ANNOTATION = re.compile(r"<<[^>]*>>")

# The exemplars, identified by how their questions start (each prefix is unique in train).
FOUR_SHOT = (
    "Angelo and Melanie want to plan how many hours",
    "Mark's basketball team scores 25 2 pointers",
    "Bella has two times as many marbles as frisbees",
    "A group of 4 fruit baskets contains 9 apples",
)
# The questions of gsm8k_prompt.txt, used to rebuild it from the hub's train split.
EIGHT_SHOT = (
    "In 2004, there were 60 kids at a",
    "Zilla spent 7% of her monthly earnings on",
    "If Buzz bought a pizza with 78 slices",
    "Jame gets a raise to $20 per hour",
    "Mr. Gardner bakes 20 cookies, 25 cupcakes, and",
    "A used car lot has 24 cars and",
    "Norma takes her clothes to the laundry. She",
    "Adam has an orchard. Every day for 30",
)


@dataclass(frozen=True)
class Problem:
    index: int
    question: str
    rationale: str  # the worked solution without annotations and without the "#### N" line
    answer_text: str  # the gold number as written, e.g. "1,600"
    answer: Decimal


def parse_problem(index: int, row: dict[str, Any], where: str) -> Problem:
    """One GSM8K row; `where` ("<file>: line N") goes into every error."""
    for field in ("question", "answer"):
        if not isinstance(row.get(field), str) or not row[field].strip():
            raise EvalError(f"{where} has no {field!r} text")
    rationale, cue, gold = row["answer"].rpartition("####")
    if not cue:
        raise EvalError(f"{where}: the answer has no '#### N' line")
    value = parse_number(gold)
    if value is None:
        raise EvalError(f"{where}: the '####' line holds {gold.strip()!r}, not a number")
    return Problem(index, row["question"], ANNOTATION.sub("", rationale).strip("\n"), gold.strip(), value)


def solution(problem: Problem) -> str:
    """The reply a perfect model gives under the few-shot format."""
    return f"{problem.rationale}\nThe answer is {problem.answer_text}"


def question_turn(question: str) -> str:
    return f"Question: {question}\n{STEP_BY_STEP}"


def parse_shots(text: str, where: str) -> list[tuple[str, str]]:
    """(question, solution) pairs of a plain-text few-shot prompt such as gsm8k_prompt.txt."""
    shots, line = [], 1
    for block in text.rstrip("\n").split("\n\n"):
        lines = block.split("\n")
        if not (len(lines) >= 4 and lines[0].startswith("Question: ") and lines[1] == STEP_BY_STEP):
            raise EvalError(f"{where}: line {line}: expected 'Question: ...' then {STEP_BY_STEP!r} and a solution")
        if strict_answer(lines[-1]) is None or not lines[-1].startswith("The answer is "):
            raise EvalError(f"{where}: line {line + len(lines) - 1}: a shot must end with 'The answer is N'")
        shots.append((lines[0].removeprefix("Question: "), "\n".join(lines[2:])))
        line += len(lines) + 1
    return shots


def build_prompt_file(train: list[Problem]) -> str:
    """gsm8k_prompt.txt rebuilt from the train split (byte-identical to the staged file)."""
    shots = _find_exemplars(train, EIGHT_SHOT)
    return "\n\n".join(f"{question_turn(p.question)}\n{solution(p)}" for p in shots) + "\n"


def four_shot_block(train: list[Problem]) -> str:
    """The chat_4shot exemplars as one block, each ending in a blank line."""
    return "".join(f"{question_turn(p.question)}\n{solution(p)}\n\n" for p in _find_exemplars(train, FOUR_SHOT))


class GSM8K(Task):
    name = "gsm8k"
    protocols = ("chat_0shot", "chat_4shot", "chat_8shot", "base_8shot")
    main_metric = "accuracy"
    sample_metrics: ClassVar[dict[str, str]] = {
        "accuracy": "correct",
        "flexible_accuracy": "correct",
        "strict_accuracy": "strict_correct",
        "card_rule_accuracy": "card_rule_correct",
    }
    """summary metric -> the per-sample column it averages."""

    def __init__(
        self,
        protocol: str,
        split: str = "test",
        data_dir: str | None = None,
        revision: str = "main",
        max_new_tokens: int = 512,
    ) -> None:
        super().__init__(protocol)
        if split not in SPLITS:
            raise EvalError(f"task.split={split!r} is not a gsm8k split; choose one of {list(SPLITS)}")
        self.split = split
        self.data_dir = Path(data_dir) if data_dir else None
        self.revision = revision
        self.max_new_tokens = max_new_tokens
        self._few_shot = ""  # chat_4shot: the exemplar block; the 8-shot protocols: the prompt file
        self._turns: list[Message] = []  # the 8-shot prompt file as chat turns (chat_8shot)

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "split": self.split,
            "source": str(self.data_dir) if self.data_dir else f"hub:{HUB_ID}@{self.revision}",
            "headline": "flexible",
        }

    # ---- data --------------------------------------------------------------------

    def read_split(self, split: str) -> list[Problem]:
        if self.data_dir is not None:
            path = self.data_dir / f"{split}.jsonl"
            rows: Iterable[tuple[str, dict[str, Any]]] = read_jsonl(path)
        else:
            data = load_hub_dataset(HUB_ID, HUB_CONFIG, split, self.revision, "data_dir=<dir with GSM8K test.jsonl>")
            rows = ((f"{HUB_ID} {split} row {n}", dict(row)) for n, row in enumerate(data, start=1))
        return [parse_problem(i, row, where) for i, (where, row) in enumerate(rows)]

    def prompt_file_text(self) -> str:
        """Qwen's 8-shot prompt: the staged file, or the same text rebuilt from the train split."""
        if self.data_dir is not None:
            path = self.data_dir / PROMPT_FILE
            if not path.is_file():
                raise EvalError(f"Missing data file: {path} (the {self.protocol} protocol needs it)")
            return path.read_text(encoding="utf-8")
        return build_prompt_file(self.read_split("train"))

    def load(self, limit: int | None = None) -> list[Sample]:
        problems = self.read_split(self.split)[:limit]
        if self.protocol == "chat_4shot":
            self._few_shot = four_shot_block(self.read_split("train"))
        elif self.protocol in ("base_8shot", "chat_8shot"):
            self._few_shot = self.prompt_file_text()
            where = str(self.data_dir / PROMPT_FILE) if self.data_dir else "rebuilt prompt"
            self._turns = []
            for question, answer in parse_shots(self._few_shot, where):
                self._turns += [
                    {"role": "user", "content": question_turn(question)},
                    {"role": "assistant", "content": answer},
                ]
        return [Sample(id=str(p.index), target=format_number(p.answer), metadata={"problem": p}) for p in problems]

    # ---- the Task contract -------------------------------------------------------

    def requests(self, sample: Sample) -> list[Request]:
        p: Problem = sample.metadata["problem"]
        stop: tuple[str, ...] = ()
        if self.protocol == "base_8shot":
            prompt: Any = f"{self._few_shot}\n{question_turn(p.question)}\n"
            stop = BASE_STOP
        elif self.protocol == "chat_0shot":
            prompt = [{"role": "user", "content": p.question}]
        elif self.protocol == "chat_4shot":
            prompt = [{"role": "user", "content": self._few_shot + question_turn(p.question)}]
        else:
            prompt = [*self._turns, {"role": "user", "content": question_turn(p.question)}]
        return [Generate(prompt, max_new_tokens=self.max_new_tokens, stop=stop, reference=solution(p))]

    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        p: Problem = sample.metadata["problem"]
        output = str(outputs[0])
        strict, flexible, card_rule = strict_answer(output), last_number(output), last_digit_run(output)
        if strict is not None:
            status, rule = "strict", "answer_cue"
        elif flexible is not None:
            status, rule = "flexible", "last_number"
        else:
            status, rule = "unparsed", "none"
        return {
            "output": output,
            "target": format_number(p.answer),
            "prediction": flexible.canonical if flexible else None,
            "correct": same_number(flexible.value if flexible else None, p.answer),
            "strict_prediction": strict.canonical if strict else None,
            "strict_correct": same_number(strict.value if strict else None, p.answer),
            "card_rule_prediction": card_rule,
            "card_rule_correct": card_rule is not None and card_rule == last_digit_run(p.answer_text),
            "parse_status": status,
            "parse_rule": rule,
        }

    def summarize(self, records: pd.DataFrame) -> dict[str, Any]:
        flexible, flexible_se = mean_stderr([float(v) for v in records["correct"]])
        strict, strict_se = mean_stderr([float(v) for v in records["strict_correct"]])
        card_rule, card_rule_se = mean_stderr([float(v) for v in records["card_rule_correct"]])
        metrics = {
            "accuracy": flexible,
            "accuracy_stderr": flexible_se,
            "strict_accuracy": strict,
            "strict_accuracy_stderr": strict_se,
            "flexible_accuracy": flexible,
            "flexible_accuracy_stderr": flexible_se,
            "card_rule_accuracy": card_rule,
            "card_rule_accuracy_stderr": card_rule_se,
            "unparsed_rate": float((records["parse_status"] == "unparsed").mean()),
            "strict_unparsed_rate": float(records["strict_prediction"].isna().mean()),
        }
        return {"metrics": metrics, "parse_status": records["parse_status"].value_counts().to_dict(), "tables": {}}


def _find_exemplars(train: list[Problem], prefixes: tuple[str, ...]) -> list[Problem]:
    found = []
    for prefix in prefixes:
        matches = [p for p in train if p.question.startswith(prefix)]
        if len(matches) != 1:
            raise EvalError(f"gsm8k train split: expected one exemplar starting {prefix!r}, found {len(matches)}")
        found.append(matches[0])
    return found
