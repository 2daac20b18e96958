"""GSM8K on the real data: the four protocols, strict and flexible extraction, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from qwen_evals.backends.fake import FakeBackend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.types import Generate, Sample
from qwen_evals.scoring.numbers import last_number, parse_number, same_number, strict_answer
from qwen_evals.tasks.gsm8k import BASE_STOP, GSM8K, build_prompt_file, four_shot_block, parse_problem
from tests.conftest import REPO


@pytest.fixture(scope="module")
def gsm8k_dir(shared_data) -> Path:
    return shared_data / "gsm8k"


def one_more(request: Generate) -> str:
    """A confident, well-formatted, wrong answer."""
    gold = strict_answer(request.reference)
    return f"Let me compute.\nThe answer is {gold.value + 1}"


# ---- the full test split under each protocol ---------------------------------------


@pytest.mark.parametrize("protocol", GSM8K.protocols)
def test_oracle_scores_one_and_wrong_answers_zero_on_all_1319(gsm8k_dir, protocol):
    task = GSM8K(protocol, data_dir=str(gsm8k_dir))
    oracle = evaluate(task, FakeBackend(policy="oracle"))
    metrics = oracle.summary["metrics"]
    assert len(oracle.records) == 1319
    assert metrics["strict_accuracy"] == metrics["flexible_accuracy"] == metrics["accuracy"] == 1.0
    assert metrics["card_rule_accuracy"] == 1.0
    assert metrics["unparsed_rate"] == metrics["strict_unparsed_rate"] == 0.0
    wrong = evaluate(task, FakeBackend(policy="script", script=one_more)).summary["metrics"]
    assert wrong["strict_accuracy"] == wrong["flexible_accuracy"] == wrong["card_rule_accuracy"] == 0.0


@pytest.mark.parametrize(
    "reply, gold, card_rule, flexible",
    [
        ("The answer is 1,000.", "1000", False, True),  # the card's rule reads "000"
        ("So 1,000 in all.", "1,000", True, True),  # ...and so does its gold
        ("It drops to -10", "-10", True, True),
        ("It drops to 10", "-10", True, False),  # signs are ignored by the card's rule
        ("3.5 each", "3.5", True, True),
    ],
)
def test_the_card_era_rule_is_reported_beside_the_others(reply, gold, card_rule, flexible):
    task = GSM8K("chat_0shot")
    problem = parse_problem(0, {"question": "q?", "answer": f"work\n#### {gold}"}, "test.jsonl: line 1")
    row = task.score(Sample(id="0", target=gold, metadata={"problem": problem}), [reply])
    assert (row["card_rule_correct"], row["correct"]) == (card_rule, flexible)


def test_empty_replies_are_unparsed_not_errors(gsm8k_dir):
    report = evaluate(GSM8K("chat_0shot", data_dir=str(gsm8k_dir)), FakeBackend(policy="worst"), limit=20)
    assert report.summary["metrics"]["unparsed_rate"] == 1.0
    assert report.summary["parse_status"] == {"unparsed": 20}
    assert report.records["prediction"].isna().all()


def test_strict_and_flexible_are_reported_side_by_side(gsm8k_dir, tmp_path):
    task = GSM8K("chat_0shot", data_dir=str(gsm8k_dir))
    golds = {}

    def reply(request: Generate) -> str:
        gold = strict_answer(request.reference).value
        kind = len(golds) % 4
        golds[len(golds)] = gold
        if kind == 0:
            return f"The answer is {gold}."  # strict and flexible right
        if kind == 1:
            return f"So it is {gold} dollars."  # no cue: strict unparsed, flexible right
        if kind == 2:
            return f"The answer is {gold}. Hope these 2 steps helped!"  # strict right, flexible wrong
        return "I cannot tell."  # nothing

    report = evaluate(task, FakeBackend(policy="script", script=reply), limit=8)
    metrics = report.summary["metrics"]
    assert metrics["strict_accuracy"] == pytest.approx(4 / 8)
    assert metrics["flexible_accuracy"] == metrics["accuracy"] == pytest.approx(4 / 8)
    assert metrics["unparsed_rate"] == pytest.approx(2 / 8)
    assert metrics["strict_unparsed_rate"] == pytest.approx(4 / 8)
    assert report.summary["parse_status"] == {"strict": 4, "flexible": 2, "unparsed": 2}
    table = report.table()
    assert {"overall", "strict", "flexible"} <= set(table.index)
    report.save(tmp_path)
    row = json.loads((tmp_path / "samples.jsonl").read_text().splitlines()[2])
    assert {
        "output",
        "target",
        "prediction",
        "correct",
        "strict_prediction",
        "strict_correct",
        "parse_status",
        "parse_rule",
    } <= set(row)
    assert (row["strict_correct"], row["correct"], row["prediction"]) == (True, False, "2")


# ---- prompts ----------------------------------------------------------------------------


def test_chat_4shot_is_qwens_single_message(gsm8k_dir):
    task = GSM8K("chat_4shot", data_dir=str(gsm8k_dir))
    [sample] = task.load(limit=1)
    [request] = task.requests(sample)
    [message] = request.prompt
    text = message["content"]
    assert message["role"] == "user" and request.stop == ()
    assert text.startswith("Question: Angelo and Melanie want to plan how many hours")
    assert [line for line in text.split("\n") if line.startswith("The answer is")] == [
        "The answer is 4", "The answer is 201", "The answer is 140", "The answer is 146",
    ]  # fmt: skip
    assert text.count("Let's think step by step") == 5 and "<<" not in text and "####" not in text
    assert text.endswith("\n\nQuestion: " + sample.metadata["problem"].question + "\nLet's think step by step")
    assert (
        "His team also scores 6 3 pointers, meaning they scored 8*3= 24 points" in text
    )  # train's text, typo included


def test_chat_8shot_is_multi_turn_and_base_8shot_is_the_prompt_file(gsm8k_dir):
    prompt_file = (gsm8k_dir / "gsm8k_prompt.txt").read_text(encoding="utf-8")
    chat = GSM8K("chat_8shot", data_dir=str(gsm8k_dir))
    [sample] = chat.load(limit=1)
    [request] = chat.requests(sample)
    assert [m["role"] for m in request.prompt] == ["user", "assistant"] * 8 + ["user"]
    first = request.prompt[0]["content"]
    assert first.startswith("Question: In 2004, there were 60 kids at a cookout.")
    assert first.endswith("How many kids came to the cookout in 2006?\nLet's think step by step")
    assert request.prompt[1]["content"].endswith("\nThe answer is 20")
    base = GSM8K("base_8shot", data_dir=str(gsm8k_dir))
    [sample] = base.load(limit=1)
    [request] = base.requests(sample)
    question = sample.metadata["problem"].question
    assert request.prompt == f"{prompt_file}\nQuestion: {question}\nLet's think step by step\n"
    assert request.stop == BASE_STOP == ("\n\n", "Question:")


def test_prompts_rebuild_exactly_from_the_train_split(gsm8k_dir):
    """What the hub path uses when no gsm8k_prompt.txt is at hand."""
    task = GSM8K("base_8shot", data_dir=str(gsm8k_dir))
    train = task.read_split("train")
    assert build_prompt_file(train) == (gsm8k_dir / "gsm8k_prompt.txt").read_text(encoding="utf-8")
    assert four_shot_block(train).count("Question: ") == 4


# ---- extraction -----------------------------------------------------------------------

STRICT_CASES = [
    ("The answer is 18", "18"),
    ("the answer is: $1,000.", "1000"),
    ("#### -5", "-5"),
    ("The answer is 18. Later 2 more.", "18"),
    ("The answer is 3 and then the answer is 4", "4"),
    ("The answer is 2.50", "2.5"),
    ("Answer: 18", None),
    ("The answer is **18**", None),
    ("", None),
]
FLEXIBLE_CASES = [
    ("She has 16 - 3 - 4 = 9 eggs, so $18 a day.", "18"),
    ("It costs $1,234.50 in total", "1234.5"),
    ("The temperature fell to -7 degrees", "-7"),
    ("pages 3-5", "5"),
    ("x = \u221212", "-12"),
    ("1,000,000 people", "1000000"),
    ("1,2", "2"),
    ("about 18.00.", "18"),
    ("Total: 1000", "1000"),
    ("no numbers here", None),
]


@pytest.mark.parametrize("text, expected", STRICT_CASES)
def test_strict_reads_only_the_answer_cue(text, expected):
    found = strict_answer(text)
    assert (found.canonical if found else None) == expected


@pytest.mark.parametrize("text, expected", FLEXIBLE_CASES)
def test_flexible_reads_the_last_number(text, expected):
    found = last_number(text)
    assert (found.canonical if found else None) == expected


def test_numbers_compare_numerically():
    assert parse_number("1,000") == parse_number("1000.00") == Decimal(1000)
    assert same_number(Decimal("0.33333"), Decimal("0.3333")) and not same_number(Decimal("0.3"), Decimal("0.31"))
    assert not same_number(None, Decimal(1))
    assert parse_number("twelve") is None


@pytest.mark.parametrize(
    "answer, gold",
    [
        ("So 1,600 in all.\n#### 1,600", Decimal(1600)),
        ("It drops by 10.\n#### -10", Decimal(-10)),
        ("#### 3.5", Decimal("3.5")),
    ],
)
def test_gold_comes_from_the_hash_line(answer, gold):
    problem = parse_problem(0, {"question": "q?", "answer": answer}, "test.jsonl: line 1")
    assert problem.answer == gold and "####" not in problem.rationale


def test_gold_answers_of_the_test_split_all_parse(gsm8k_dir):
    problems = GSM8K("chat_0shot", data_dir=str(gsm8k_dir)).read_split("test")
    assert len(problems) == 1319
    assert {p.answer_text for p in problems} >= {"2,125", "-10", "-3", "1,450,000"}
    assert all("<<" not in p.rationale for p in problems)


# ---- bad input ------------------------------------------------------------------------


@pytest.fixture
def gsm8k_copy(gsm8k_dir, tmp_path) -> Path:
    root = tmp_path / "gsm8k"
    root.mkdir()
    for name in ("test.jsonl", "train.jsonl", "gsm8k_prompt.txt"):
        shutil.copy(gsm8k_dir / name, root / name)
    return root


def _edit_line(path: Path, number: int, edit) -> None:
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda line: line[:40] + "\n", r"test.jsonl: line 7 is not valid JSON"),
        (lambda line: line.replace("####", "answer:"), r"test.jsonl: line 7: the answer has no '#### N' line"),
        (lambda line: json.dumps({"question": "q"}) + "\n", r"test.jsonl: line 7 has no 'answer' text"),
        (
            lambda line: line.rsplit("####", 1)[0] + '#### many"}\n',
            r"test.jsonl: line 7: the '####' line holds 'many', not a number",
        ),
    ],
    ids=["malformed-json", "no-hash-line", "no-answer", "not-a-number"],
)
def test_bad_rows_name_file_and_line(gsm8k_copy, edit, message):
    _edit_line(gsm8k_copy / "test.jsonl", 7, edit)
    with pytest.raises(EvalError, match=message):
        GSM8K("chat_0shot", data_dir=str(gsm8k_copy)).load()


def test_a_non_utf8_byte_names_file_and_line(gsm8k_copy):
    path = gsm8k_copy / "test.jsonl"
    lines = path.read_bytes().split(b"\n")
    lines[6] = lines[6].replace(b"question", b"qu\xe9stion", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(EvalError, match=r"test.jsonl: line 7 is not UTF-8 text \(byte \d+: invalid continuation byte"):
        GSM8K("chat_0shot", data_dir=str(gsm8k_copy)).load()


def test_bad_prompt_file_and_missing_files_are_named(gsm8k_copy):
    _edit_line(gsm8k_copy / "gsm8k_prompt.txt", 2, lambda line: "Let us think\n")
    with pytest.raises(EvalError, match=r"gsm8k_prompt.txt: line 1: expected 'Question: ...'"):
        GSM8K("chat_8shot", data_dir=str(gsm8k_copy)).load()
    (gsm8k_copy / "gsm8k_prompt.txt").unlink()
    with pytest.raises(EvalError, match=r"Missing data file: .*gsm8k_prompt.txt"):
        GSM8K("base_8shot", data_dir=str(gsm8k_copy)).load()
    (gsm8k_copy / "train.jsonl").unlink()
    with pytest.raises(EvalError, match=r"Missing data file: .*train.jsonl"):
        GSM8K("chat_4shot", data_dir=str(gsm8k_copy)).load()


def test_unknown_options_are_named(gsm8k_dir):
    with pytest.raises(EvalError, match="task.protocol='cot' is not a gsm8k protocol"):
        GSM8K("cot", data_dir=str(gsm8k_dir))
    with pytest.raises(EvalError, match="task.split='dev' is not a gsm8k split"):
        GSM8K("chat_0shot", split="dev", data_dir=str(gsm8k_dir))


# ---- a real model ----------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_on_two_questions(smollm2, gsm8k_dir):
    report = evaluate(GSM8K("chat_0shot", data_dir=str(gsm8k_dir), max_new_tokens=48), smollm2, limit=2)
    records = report.records
    assert len(records) == 2 and records["output"].str.len().gt(0).all()
    assert set(records["parse_status"]) <= {"strict", "flexible", "unparsed"}
    assert 0.0 <= report.summary["metrics"]["accuracy"] <= 1.0
    assert report.summary["metrics"]["strict_accuracy"] <= 1.0


# ---- the command line ----------------------------------------------------------------------


def test_command_line_run_writes_both_readings(shared_data, tmp_path):
    done = subprocess.run(
        [sys.executable, "run_eval.py", "model=fake", "task=gsm8k", "task.protocol=chat_4shot", f"data_dir={shared_data}",
         "limit=5", "resume=false", "canary=0", f"output_dir={tmp_path}"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["task"], summary["protocol"], summary["split"], summary["n_samples"]) == (
        "gsm8k",
        "chat_4shot",
        "test",
        5,
    )
    assert summary["metrics"]["strict_accuracy"] == summary["metrics"]["flexible_accuracy"] == 1.0
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 5
    assert "strict" in done.stdout and "flexible" in done.stdout
