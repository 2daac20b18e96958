"""C-Eval (Huang et al., 2023, arXiv:2305.08322): 52 Chinese exam subjects, four options.

Protocols follow ../shared/docs/protocols.md (C-Eval section):
- `chat_0shot`: QwenLM/Qwen eval/evaluate_chat_ceval.py, the Qwen-7B-Chat card's 54.2 (val)
  and 54.6 (test); Chinese extraction cascade with fuzzy fallback.
- `chat_5shot`: OpenCompass `ceval_gen_5f30c7` (v1.1 card), dev rows as chat turns,
  first capital letter.
- `base_5shot`: eval/evaluate_ceval.py, next-token log-probs of "A".."D".
Scores are macro averages over subjects (overall, per category, and the 8-subject
Hard set), as the card computes them. Test labels are hidden: `split=test` writes
the leaderboard submission file `ceval_submission.json` ({subject: {id: letter}}).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core.datafiles import read_json, read_rows
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import load_hub_dataset
from qwen_evals.core.metrics import Metric
from qwen_evals.core.types import Extraction
from qwen_evals.scoring.choice_extraction import extract_choice_zh
from qwen_evals.tasks.exam import LETTERS, MultipleChoiceExam, Question, check_answers, options_block

HUB_ID = "ceval/ceval-exam"
MAPPING_FILE = "subject_mapping.json"
CATEGORIES = ("STEM", "Social Science", "Humanities", "Other")
HARD_SUBJECTS = (
    "advanced_mathematics discrete_mathematics probability_and_statistics college_physics "
    "college_chemistry high_school_mathematics high_school_physics high_school_chemistry"
).split()

# subject -> (Chinese name, category): hkust-nlp/ceval subject_mapping.json, used
# when the data comes from the hub (which does not ship the mapping).
SUBJECTS = {
    "computer_network": ("计算机网络", "STEM"),
    "operating_system": ("操作系统", "STEM"),
    "computer_architecture": ("计算机组成", "STEM"),
    "college_programming": ("大学编程", "STEM"),
    "college_physics": ("大学物理", "STEM"),
    "college_chemistry": ("大学化学", "STEM"),
    "advanced_mathematics": ("高等数学", "STEM"),
    "probability_and_statistics": ("概率统计", "STEM"),
    "discrete_mathematics": ("离散数学", "STEM"),
    "electrical_engineer": ("注册电气工程师", "STEM"),
    "metrology_engineer": ("注册计量师", "STEM"),
    "high_school_mathematics": ("高中数学", "STEM"),
    "high_school_physics": ("高中物理", "STEM"),
    "high_school_chemistry": ("高中化学", "STEM"),
    "high_school_biology": ("高中生物", "STEM"),
    "middle_school_mathematics": ("初中数学", "STEM"),
    "middle_school_biology": ("初中生物", "STEM"),
    "middle_school_physics": ("初中物理", "STEM"),
    "middle_school_chemistry": ("初中化学", "STEM"),
    "veterinary_medicine": ("兽医学", "STEM"),
    "college_economics": ("大学经济学", "Social Science"),
    "business_administration": ("工商管理", "Social Science"),
    "marxism": ("马克思主义基本原理", "Social Science"),
    "mao_zedong_thought": ("毛泽东思想和中国特色社会主义理论体系概论", "Social Science"),
    "education_science": ("教育学", "Social Science"),
    "teacher_qualification": ("教师资格", "Social Science"),
    "high_school_politics": ("高中政治", "Social Science"),
    "high_school_geography": ("高中地理", "Social Science"),
    "middle_school_politics": ("初中政治", "Social Science"),
    "middle_school_geography": ("初中地理", "Social Science"),
    "modern_chinese_history": ("近代史纲要", "Humanities"),
    "ideological_and_moral_cultivation": ("思想道德修养与法律基础", "Humanities"),
    "logic": ("逻辑学", "Humanities"),
    "law": ("法学", "Humanities"),
    "chinese_language_and_literature": ("中国语言文学", "Humanities"),
    "art_studies": ("艺术学", "Humanities"),
    "professional_tour_guide": ("导游资格", "Humanities"),
    "legal_professional": ("法律职业资格", "Humanities"),
    "high_school_chinese": ("高中语文", "Humanities"),
    "high_school_history": ("高中历史", "Humanities"),
    "middle_school_history": ("初中历史", "Humanities"),
    "civil_servant": ("公务员", "Other"),
    "sports_science": ("体育学", "Other"),
    "plant_protection": ("植物保护", "Other"),
    "basic_medicine": ("基础医学", "Other"),
    "clinical_medicine": ("临床医学", "Other"),
    "urban_and_rural_planner": ("注册城乡规划师", "Other"),
    "accountant": ("注册会计师", "Other"),
    "fire_engineer": ("注册消防工程师", "Other"),
    "environmental_impact_assessment_engineer": ("环境影响评价工程师", "Other"),
    "tax_accountant": ("税务师", "Other"),
    "physician": ("医师资格", "Other"),
}

CHAT_5SHOT_TURN = "以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n{question}\n{options}答案: "


def read_subject_mapping(path: Path) -> dict[str, tuple[str, str]]:
    """subject -> (Chinese name, category) from the benchmark's subject_mapping.json."""
    raw = read_json(path)
    mapping = {}
    for subject, entry in raw.items():
        if not (isinstance(entry, list) and len(entry) == 3 and entry[2] in CATEGORIES):
            raise EvalError(f"{path}: entry {subject!r} must be [English name, Chinese name, one of {list(CATEGORIES)}]")
        mapping[subject] = (entry[1], entry[2])
    return mapping


class CEval(MultipleChoiceExam):
    name = "ceval"
    splits = ("dev", "val", "test")
    averaging = "macro"
    hub_id = HUB_ID
    local_data = "data_dir=<dir with C-Eval csv files>"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        data_dir = kwargs.get("data_dir")
        self._mapping = read_subject_mapping(Path(data_dir) / MAPPING_FILE) if data_dir else SUBJECTS
        super().__init__(*args, **kwargs)

    def all_subjects(self) -> list[str]:
        return sorted(self._mapping)

    def category(self, subject: str) -> str:
        return self._mapping[subject][1]

    def read_questions(self, split: str, subject: str) -> list[Question]:
        columns = ["id", "question", *LETTERS] + (["answer"] if split != "test" else [])
        if self.data_dir is None:
            rows = load_hub_dataset(HUB_ID, subject, split, self.revision, self.local_data)
            rows = [{c: str(row[c]) for c in columns} for row in rows]
        else:
            path = self.data_dir / split / f"{subject}_{split}.csv"
            rows = read_rows(path, columns, header=True)
            if split != "test":
                check_answers(path, rows)
        return [
            Question(subject, row["id"], row["question"], {k: row[k] for k in LETTERS}, row.get("answer", "").strip() or None)
            for row in rows
        ]

    def base_prompt(self, subject: str, shots: list[Question], question: Question) -> str:
        return "".join(_base_example(s) + f"{s.answer}\n\n" for s in shots) + _base_example(question)

    def base_continuation(self, letter: str) -> str:
        return letter

    def chat_0shot_prompt(self, question: Question) -> str:
        return question.question + "\n\n" + options_block(question.options)

    def extract_chat_0shot(self, response: str, question: Question) -> Extraction:
        return extract_choice_zh(response, question.question, question.options)

    def chat_5shot_turn(self, question: Question, *, final: bool) -> str:
        return CHAT_5SHOT_TURN.format(
            subject=self._mapping[question.subject][0], question=question.question, options=options_block(question.options)
        )

    def chat_5shot_answer(self, letter: str) -> str:
        return letter

    def extra_metrics(self) -> Sequence[Metric]:
        return (
            Metric("hard_accuracy", "correct", averaging="macro", group="subject", subset=("hard", True),
                   description="accuracy on the 8 C-Eval Hard subjects"),
        )  # fmt: skip

    def extra_columns(self, question: Question) -> dict[str, Any]:
        return {"hard": question.subject in HARD_SUBJECTS}

    def write_artifacts(self, records: pd.DataFrame, out_dir: Path) -> list[str]:
        if self.split != "test":
            return []
        submission: dict[str, dict[str, str]] = {}
        for row in records.itertuples():
            subject, index = row.id.split("/", 1)
            submission.setdefault(subject, {})[index] = row.prediction or ""
        name = "ceval_submission.json"
        (out_dir / name).write_text(json.dumps(submission, ensure_ascii=False, indent=1), encoding="utf-8")
        return [name]


def _base_example(q: Question) -> str:
    options = "".join(f"\n{k}. {q.options[k]}" for k in LETTERS)
    return f"问题：{q.question}{options}\n答案："
