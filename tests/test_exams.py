"""MMLU and C-Eval on the real data: oracle scores 1.0, always-wrong 0.0, bad files fail loudly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from qwen_evals.backends.chat_format import LETTERS
from qwen_evals.backends.fake import FakeBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Generate
from qwen_evals.tasks.ceval import SUBJECTS, CEval
from qwen_evals.tasks.mmlu import MMLU


def wrong_letter(request: Generate) -> str:
    return LETTERS[(LETTERS.index(request.reference) + 1) % 4]


@pytest.mark.parametrize(
    "make, n_samples",
    [
        (lambda d: MMLU("chat_0shot", "test", str(d / "mmlu")), 14042),
        (lambda d: CEval("chat_0shot", "val", str(d / "ceval")), 1346),
    ],
    ids=["mmlu-test", "ceval-val"],
)
def test_oracle_scores_one_and_wrong_answers_zero_on_the_full_split(shared_data, make, n_samples):
    task = make(shared_data)
    oracle = evaluate(task, FakeBackend(policy="oracle"))
    assert len(oracle.records) == n_samples
    assert oracle.summary["metrics"]["accuracy"] == 1.0
    assert oracle.summary["metrics"]["unparsed_rate"] == 0.0
    wrong = evaluate(task, FakeBackend(policy="script", script=wrong_letter))
    assert wrong.summary["metrics"]["accuracy"] == 0.0
    assert (wrong.records["prediction"] != wrong.records["target"]).all()


@pytest.mark.parametrize("protocol", ["base_5shot", "chat_5shot"])
@pytest.mark.parametrize("exam", [MMLU, CEval])
def test_few_shot_protocols_oracle_and_worst(shared_data, exam, protocol):
    task = exam(protocol, "val", str(shared_data / exam.name), subjects=None)
    assert evaluate(task, FakeBackend(policy="oracle")).summary["metrics"]["accuracy"] == 1.0
    worst = FakeBackend(policy="worst" if protocol == "base_5shot" else "script", script=wrong_letter)
    assert evaluate(task, worst).summary["metrics"]["accuracy"] == 0.0


def test_mmlu_is_micro_averaged_with_qwen_categories(shared_data):
    task = MMLU("chat_0shot", "val", str(shared_data / "mmlu"))
    # Right on every professional_law question (170 of 1531), wrong elsewhere.
    script = lambda r: r.reference if "professional_law" in task_of(r) else wrong_letter(r)  # noqa: E731
    task_of = _subject_lookup(task)
    report = evaluate(task, FakeBackend(policy="script", script=script))
    assert report.summary["metrics"]["accuracy"] == pytest.approx(170 / 1531)
    categories = {row["category"]: row for row in report.summary["tables"]["category"]}
    assert set(categories) == {"STEM", "Humanities", "Social Sciences", "Other"}
    assert categories["Humanities"]["accuracy"] == pytest.approx(170 / categories["Humanities"]["n"])
    assert categories["STEM"]["accuracy"] == 0.0
    assert len(report.summary["tables"]["subject"]) == 57


def test_ceval_is_macro_averaged_with_categories_and_hard_set(shared_data):
    task = CEval("chat_0shot", "val", str(shared_data / "ceval"))
    task_of = _subject_lookup(task)
    right = {"logic", "advanced_mathematics"}
    script = lambda r: r.reference if task_of(r) in right else wrong_letter(r)  # noqa: E731
    report = evaluate(task, FakeBackend(policy="script", script=script))
    metrics = report.summary["metrics"]
    assert metrics["accuracy"] == pytest.approx(2 / 52)
    assert metrics["hard_accuracy"] == pytest.approx(1 / 8)
    categories = {row["category"]: row["accuracy"] for row in report.summary["tables"]["category"]}
    assert categories == pytest.approx({"STEM": 1 / 20, "Humanities": 1 / 11, "Social Science": 0.0, "Other": 0.0})


def test_ceval_builtin_subject_table_equals_the_official_mapping(shared_data):
    official = json.loads((shared_data / "ceval" / "subject_mapping.json").read_text(encoding="utf-8"))
    assert SUBJECTS == {k: (v[1], v[2]) for k, v in official.items()}


def test_ceval_test_split_writes_the_leaderboard_submission(shared_data, tmp_path):
    task = CEval("chat_0shot", "test", str(shared_data / "ceval"), subjects=["logic", "law"])
    report = evaluate(task, FakeBackend(policy="script", script=lambda r: "答案是C"))
    summary = report.save(tmp_path)
    assert summary["metrics"]["accuracy"] is None  # hidden labels: no score, and the summary says why
    assert summary["metric_notes"]["accuracy"] == "425 of 425 samples have no 'correct' value"
    submission = json.loads((tmp_path / "ceval_submission.json").read_text(encoding="utf-8"))
    assert set(submission) == {"logic", "law"}
    assert len(submission["logic"]) == 204 and len(submission["law"]) == 221
    assert set(submission["logic"].values()) == {"C"}


def test_prompts_follow_the_protocols(shared_data):
    mmlu = MMLU("base_5shot", "test", str(shared_data / "mmlu"), subjects=["astronomy"])
    [first] = mmlu.load(limit=1)
    requests = mmlu.requests(first)
    prompt = requests[0].prompt
    assert prompt.startswith("The following are multiple choice questions (with answers) about astronomy.\n\nQuestion: ")
    assert prompt.count("\nAnswer: ") == 5 and prompt.endswith("\nAnswer:")
    assert [r.continuation for r in requests] == [" A", " B", " C", " D"]
    ceval = CEval("chat_5shot", "val", str(shared_data / "ceval"), subjects=["logic"])
    [sample] = ceval.load(limit=1)
    [request] = ceval.requests(sample)
    assert [m["role"] for m in request.prompt] == ["user", "assistant"] * 5 + ["user"]
    assert request.prompt[0]["content"].startswith("以下是中国关于逻辑学考试的单项选择题，请选出其中的正确答案。\n")
    assert request.prompt[-1]["content"].endswith("答案: ")


def _subject_lookup(task):
    by_prompt = {}
    for sample in task.load():
        [request] = task.requests(sample)
        by_prompt[request.prompt[-1]["content"]] = sample.metadata["subject"]
    return lambda request: by_prompt[request.prompt[-1]["content"]]


# ---- bad input -------------------------------------------------------------------


@pytest.fixture
def mmlu_copy(shared_data, tmp_path) -> Path:
    root = tmp_path / "mmlu"
    for split in ("dev", "test"):
        (root / split).mkdir(parents=True)
        shutil.copy(shared_data / "mmlu" / split / f"anatomy_{split}.csv", root / split)
    return root


def load_anatomy(root: Path) -> None:
    MMLU("chat_0shot", "test", str(root), subjects=["anatomy"]).load()


def test_answer_outside_a_to_d_names_file_and_row(mmlu_copy):
    path = mmlu_copy / "test" / "anatomy_test.csv"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[2] = lines[2].rstrip("\r\n")[:-1] + "E\n"
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(EvalError, match=r"anatomy_test.csv: row 3 has answer 'E'"):
        load_anatomy(mmlu_copy)


def test_missing_empty_and_short_files_are_errors(mmlu_copy):
    path = mmlu_copy / "test" / "anatomy_test.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(EvalError, match="anatomy_test.csv: the file has no data rows"):
        load_anatomy(mmlu_copy)
    path.write_text("q,a,b,c,d,A\nq2,a,b,c,A\n", encoding="utf-8")
    with pytest.raises(EvalError, match="anatomy_test.csv: row 2 has 5 fields, expected 6"):
        load_anatomy(mmlu_copy)
    path.unlink()
    with pytest.raises(EvalError, match="Missing data file: .*anatomy_test.csv"):
        load_anatomy(mmlu_copy)


def test_a_non_utf8_byte_names_file_line_and_byte(mmlu_copy):
    path = mmlu_copy / "test" / "anatomy_test.csv"
    data = path.read_bytes()
    third = data.index(b"\n", data.index(b"\n") + 1) + 1
    path.write_bytes(data[: third + 3] + "é".encode("latin-1") + data[third + 3 :])
    with pytest.raises(EvalError, match=rf"anatomy_test.csv: line 3 is not UTF-8 text \(byte {third + 3}: "):
        load_anatomy(mmlu_copy)


def test_ceval_missing_column_is_named(shared_data, tmp_path):
    root = tmp_path / "ceval"
    (root / "val").mkdir(parents=True)
    shutil.copy(shared_data / "ceval" / "subject_mapping.json", root)
    text = (shared_data / "ceval" / "val" / "logic_val.csv").read_text(encoding="utf-8")
    (root / "val" / "logic_val.csv").write_text(text.replace(",answer", ",solution", 1), encoding="utf-8")
    with pytest.raises(EvalError, match=r"logic_val.csv: missing column\(s\) \['answer'\]"):
        CEval("chat_0shot", "val", str(root), subjects=["logic"]).load()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"protocol": "cot"}, "task.protocol='cot' is not a mmlu protocol"),
        ({"split": "train"}, "task.split='train' is not a mmlu split"),
        ({"subjects": ["astrology"]}, r"unknown mmlu subject\(s\) \['astrology'\]"),
    ],
)
def test_unknown_options_are_named(shared_data, kwargs, message):
    options = {"protocol": "chat_0shot", "split": "test", "data_dir": str(shared_data / "mmlu"), **kwargs}
    with pytest.raises(EvalError, match=message):
        MMLU(**options)
