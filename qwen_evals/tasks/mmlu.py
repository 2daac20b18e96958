"""MMLU (Hendrycks et al., 2021, arXiv:2009.03300): 57 subjects, four options.

Protocols follow ../shared/docs/protocols.md (MMLU section):
- `chat_0shot`: QwenLM/Qwen eval/evaluate_chat_mmlu.py, the Qwen-7B-Chat card's 53.9;
  English extraction cascade with fuzzy fallback; micro accuracy over questions.
- `chat_5shot`: OpenCompass `mmlu_gen_a484b3` (v1.1 card), dev rows as chat turns,
  first capital letter.
- `base_5shot`: eval/evaluate_mmlu.py, next-token log-probs of " A".." D".
`chat_0shot` reads one-letter option texts ("c", "B") as the suite does by default
(not rewritten into letters; 39 test questions have one, 7 of them read differently, see
qwen_evals/scoring/choice_extraction.py `_replaceable`); `option_rewrite=qwen` rewrites
them as Qwen's script does, which reads every reply as that script would.
Categories are the four groups of Qwen's script (STEM 19, Humanities 13, Other 13,
Social Sciences 12). Known deviation: Qwen's base script keeps only the last 2047
prompt tokens; the backend truncates to the model's own context length instead.
"""

from __future__ import annotations

from typing import Any

from qwen_evals.core.datafiles import read_rows
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import load_hub_dataset
from qwen_evals.core.types import Extraction
from qwen_evals.scoring.choice_extraction import extract_choice_en
from qwen_evals.tasks.exam import LETTERS, MultipleChoiceExam, Question, check_answers, options_block

HUB_ID = "cais/mmlu"
HUB_SPLITS = {"dev": "dev", "val": "validation", "test": "test"}
COLUMNS = ("question", "A", "B", "C", "D", "answer")

CATEGORIES = {
    "STEM": (
        "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
        "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
        "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
        "high_school_mathematics high_school_physics high_school_statistics machine_learning"
    ),
    "Humanities": (
        "formal_logic high_school_european_history high_school_us_history high_school_world_history "
        "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
        "prehistory professional_law world_religions"
    ),
    "Other": (
        "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
        "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology"
    ),
    "Social Sciences": (
        "econometrics high_school_geography high_school_government_and_politics high_school_macroeconomics "
        "high_school_microeconomics high_school_psychology human_sexuality professional_psychology "
        "public_relations security_studies sociology us_foreign_policy"
    ),
}
SUBJECT_CATEGORY = {s: cat for cat, subjects in CATEGORIES.items() for s in subjects.split()}

CHAT_0SHOT_INSTRUCTION = (
    "The following is a multiple-choice question. Please choose the most suitable one "
    "among A, B, C and D as the answer to this question.\n\n"
)
CHAT_5SHOT_HINT = "There is a single choice question about {subject}. Answer the question by replying A, B, C or D."
BASE_HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
OPTION_REWRITES = ("suite", "qwen")
"""How chat_0shot rewrites option texts quoted in a reply: one-letter texts left alone, or all (Qwen's script)."""


def _words(subject: str) -> str:
    return subject.replace("_", " ")


class MMLU(MultipleChoiceExam):
    name = "mmlu"
    splits = ("dev", "val", "test")
    averaging = "micro"
    hub_id = HUB_ID
    local_data = "data_dir=<dir with MMLU csv files>"

    def __init__(self, *args: Any, option_rewrite: str = "suite", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if option_rewrite not in OPTION_REWRITES:
            raise EvalError(f"task.option_rewrite={option_rewrite!r} is not one of {list(OPTION_REWRITES)}")
        self.option_rewrite = option_rewrite

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "option_rewrite": self.option_rewrite}

    def all_subjects(self) -> list[str]:
        return sorted(SUBJECT_CATEGORY)

    def category(self, subject: str) -> str:
        return SUBJECT_CATEGORY[subject]

    def read_questions(self, split: str, subject: str) -> list[Question]:
        if self.data_dir is None:
            return self._read_hub(split, subject)
        path = self.data_dir / split / f"{subject}_{split}.csv"
        rows = read_rows(path, COLUMNS, header=False)
        check_answers(path, rows)
        return [
            Question(subject, str(i), row["question"], {k: row[k] for k in LETTERS}, row["answer"].strip())
            for i, row in enumerate(rows)
        ]

    def _read_hub(self, split: str, subject: str) -> list[Question]:
        rows = load_hub_dataset(HUB_ID, subject, HUB_SPLITS[split], self.revision, self.local_data)
        return [
            Question(subject, str(i), row["question"], dict(zip(LETTERS, row["choices"])), LETTERS[row["answer"]])
            for i, row in enumerate(rows)
        ]

    def base_prompt(self, subject: str, shots: list[Question], question: Question) -> str:
        body = "".join(_base_example(s) + f" {s.answer}\n\n" for s in shots)
        return BASE_HEADER.format(subject=_words(subject)) + body + _base_example(question)

    def base_continuation(self, letter: str) -> str:
        return f" {letter}"

    def chat_0shot_prompt(self, question: Question) -> str:
        return CHAT_0SHOT_INSTRUCTION + question.question + "\n" + options_block(question.options)

    def extract_chat_0shot(self, response: str, question: Question) -> Extraction:
        return extract_choice_en(response, question.options, rewrite_single_letters=self.option_rewrite == "qwen")

    def chat_5shot_turn(self, question: Question, *, final: bool) -> str:
        hint = CHAT_5SHOT_HINT.format(subject=_words(question.subject))
        stem, answer = ("Q", "A") if final else ("Question", "Answer")
        return f"{hint}\n{stem}: {question.question}\n{options_block(question.options)}{answer}: "

    def chat_5shot_answer(self, letter: str) -> str:
        return f"{letter}\n"


def _base_example(q: Question) -> str:
    options = "".join(f"\n{k}. {q.options[k]}" for k in LETTERS)
    return f"Question: {q.question}{options}\nAnswer:"
