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

Answers are read two ways and reported side by side (qwen_evals/scoring/numbers.py):
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.datafiles import read_jsonl, read_text
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource, load_hub_dataset
from qwen_evals.core.metrics import Metric
from qwen_evals.core.task import EvalProtocol, Task, protocol_table
from qwen_evals.core.types import Generate, Message, Output, Request, Sample
from qwen_evals.scoring.numbers import (
    format_number,
    last_digit_run,
    last_number,
    parse_number,
    same_number,
    strict_answer,
)

HUB_ID = "openai/gsm8k"
LOCAL_DATA = "data_dir=<dir with GSM8K test.jsonl>"
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

    def hub_resources(self) -> list[HubResource]:
        return [] if self.data_dir else [HubResource("dataset", HUB_ID, LOCAL_DATA)]

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
            data = load_hub_dataset(HUB_ID, HUB_CONFIG, split, self.revision, LOCAL_DATA)
            rows = ((f"{HUB_ID} {split} row {n}", dict(row)) for n, row in enumerate(data, start=1))
        return [parse_problem(i, row, where) for i, (where, row) in enumerate(rows)]

    @cached_property
    def prompt_file(self) -> str:
        """Qwen's 8-shot prompt: the staged file, or the same text rebuilt from the train split."""
        if self.data_dir is not None:
            return read_text(self.data_dir / PROMPT_FILE, f"the {self.protocol} protocol needs it")
        return build_prompt_file(self.read_split("train"))

    @cached_property
    def prompt_file_turns(self) -> list[Message]:
        """The 8-shot prompt file as alternating user / assistant turns."""
        where = str(self.data_dir / PROMPT_FILE) if self.data_dir else "rebuilt prompt"
        turns: list[Message] = []
        for question, answer in parse_shots(self.prompt_file, where):
            turns += [{"role": "user", "content": question_turn(question)}, {"role": "assistant", "content": answer}]
        return turns

    @cached_property
    def four_shot(self) -> str:
        """The chat_4shot exemplar block, from the train split."""
        return four_shot_block(self.read_split("train"))

    def read_samples(self, limit: int | None = None) -> list[Sample]:
        problems = self.read_split(self.split)[:limit]
        return [Sample(id=str(p.index), target=format_number(p.answer), metadata={"problem": p}) for p in problems]

    # ---- the Task contract -------------------------------------------------------

    def metrics(self) -> Sequence[Metric]:
        return (
            Metric("accuracy", "correct", headline=True, description="flexible reading (last number), as headline"),
            Metric("strict_accuracy", "strict_correct", description="'The answer is N' / '#### N' only"),
            Metric("flexible_accuracy", "correct", description="last number, signs, separators, decimals"),
            Metric("card_rule_accuracy", "card_rule_correct", description="last run of digits (the card-era scripts)"),
            Metric("unparsed_rate", "parse_status", equals="unparsed", higher_is_better=False),
            Metric("strict_unparsed_rate", "strict_unparsed", higher_is_better=False),
        )

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
            "strict_unparsed": strict is None,
            "card_rule_prediction": card_rule,
            "card_rule_correct": card_rule is not None and card_rule == last_digit_run(p.answer_text),
            "parse_status": status,
            "parse_rule": rule,
        }

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        return {"parse_status": records["parse_status"].value_counts().to_dict(), "tables": {}}


# ---- the protocols -------------------------------------------------------------------


def _request(task: GSM8K, sample: Sample, prompt: Any, stop: tuple[str, ...] = ()) -> list[Request]:
    return [Generate(prompt, max_new_tokens=task.max_new_tokens, stop=stop, reference=solution(sample.metadata["problem"]))]


def _chat_0shot(task: GSM8K, sample: Sample) -> list[Request]:
    return _request(task, sample, [{"role": "user", "content": sample.metadata["problem"].question}])


def _chat_4shot(task: GSM8K, sample: Sample) -> list[Request]:
    turn = task.four_shot + question_turn(sample.metadata["problem"].question)
    return _request(task, sample, [{"role": "user", "content": turn}])


def _chat_8shot(task: GSM8K, sample: Sample) -> list[Request]:
    turn = {"role": "user", "content": question_turn(sample.metadata["problem"].question)}
    return _request(task, sample, [*task.prompt_file_turns, turn])


def _base_8shot(task: GSM8K, sample: Sample) -> list[Request]:
    prompt = f"{task.prompt_file}\n{question_turn(sample.metadata['problem'].question)}\n"
    return _request(task, sample, prompt, BASE_STOP)


def _read_four_shot(task: GSM8K, samples: list[Sample]) -> None:
    task.four_shot  # noqa: B018 - read (and checked) at load time


def _read_prompt_file(task: GSM8K, samples: list[Sample]) -> None:
    task.prompt_file_turns  # noqa: B018 - read (and checked) at load time


GSM8K.protocols = protocol_table(
    EvalProtocol("chat_0shot", "generate", _chat_0shot, description="evaluate_chat_gsm8k.py; card 41.1"),
    EvalProtocol("chat_4shot", "generate", _chat_4shot, description="evaluate_chat_gsm8k.py --use-fewshot; card 43.5",
                 prepare=_read_four_shot),
    EvalProtocol("chat_8shot", "generate", _chat_8shot, description="gsm8k_prompt.txt as chat turns",
                 prepare=_read_prompt_file),
    EvalProtocol("base_8shot", "generate", _base_8shot, description="evaluate_gsm8k.py: gsm8k_prompt.txt as text",
                 prepare=_read_prompt_file),
)  # fmt: skip


def _find_exemplars(train: list[Problem], prefixes: tuple[str, ...]) -> list[Problem]:
    found = []
    for prefix in prefixes:
        matches = [p for p in train if p.question.startswith(prefix)]
        if len(matches) != 1:
            raise EvalError(f"gsm8k train split: expected one exemplar starting {prefix!r}, found {len(matches)}")
        found.append(matches[0])
    return found
