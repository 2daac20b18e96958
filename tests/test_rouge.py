"""Chinese Rouge-L (qwen_evals/scoring/rouge.py): known values, best-of-references, and the gap to LongBench's scorer."""

from __future__ import annotations

import statistics
from collections import defaultdict

import pytest

from qwen_evals.core.datafiles import read_jsonl
from qwen_evals.scoring.rouge import characters, jieba_words, rouge_l, rouge_l_longbench

REF = "今天我们讨论了明年的预算"
PRED = "我们明天讨论预算"


@pytest.mark.parametrize("unit", ["word", "char"])
def test_identical_texts_score_one_and_disjoint_texts_zero(unit):
    assert rouge_l(REF, REF, unit).f1 == 1.0
    disjoint = rouge_l("苹果香蕉", "汽车飞机", unit)
    assert (disjoint.precision, disjoint.recall, disjoint.f1) == (0.0, 0.0, 0.0)
    assert rouge_l_longbench(REF, REF).f1 == pytest.approx(1.0, abs=1e-6)
    assert rouge_l_longbench("苹果香蕉", "汽车飞机").f1 == pytest.approx(0.0, abs=1e-6)


def test_hand_checked_pair_words_and_characters():
    # jieba segmentation, checked first so that a dictionary change is named as such
    assert jieba_words(REF) == ["今天", "我们", "讨论", "了", "明年", "的", "预算"]
    assert jieba_words(PRED) == ["我们", "明天", "讨论", "预算"]
    # LCS = 我们 讨论 预算: 3 of 4 predicted words, 3 of 7 reference words
    words = rouge_l(PRED, REF, "word")
    assert (words.precision, words.recall) == pytest.approx((3 / 4, 3 / 7))
    assert words.f1 == pytest.approx(18 / 33)
    # LCS = 我们讨论预算: 6 of 8 predicted characters, 6 of 12 reference characters
    chars = rouge_l(PRED, REF, "char")
    assert (chars.precision, chars.recall, chars.f1) == pytest.approx((0.75, 0.5, 0.6))
    # All words distinct: LongBench's set-based scorer agrees
    assert rouge_l_longbench(PRED, REF).f1 == pytest.approx(18 / 33, abs=1e-6)


def test_repeated_words_are_where_longbench_scorer_differs():
    reference = "我们讨论预算，我们讨论预算"
    assert jieba_words(reference) == ["我们", "讨论", "预算", "，", "我们", "讨论", "预算"]
    # rouge-score counts occurrences: LCS 3, P = 1, R = 3/7
    assert rouge_l("我们讨论预算", reference).f1 == pytest.approx(0.6)
    # pltrdy rouge counts distinct words: 3 of {我们, 讨论, 预算, ，}, P = 1, R = 3/4
    assert rouge_l_longbench("我们讨论预算", reference).f1 == pytest.approx(6 / 7, abs=1e-6)


def test_best_reference_wins():
    best = rouge_l(PRED, ["汽车飞机", REF])
    assert best == rouge_l(PRED, REF)
    assert rouge_l_longbench(PRED, ["汽车飞机", REF]).f1 == rouge_l_longbench(PRED, REF).f1


def test_whitespace_is_not_a_unit_and_empty_prediction_scores_zero():
    assert characters("我们 讨论\n预算") == list("我们讨论预算")
    assert rouge_l("我们 讨论 预算", "我们讨论预算", "char").f1 == 1.0
    assert rouge_l("我们 讨论 预算", "我们讨论预算", "word").f1 == 1.0
    assert rouge_l("", REF).f1 == 0.0
    empty = rouge_l_longbench("", REF)
    assert empty.f1 == 0.0 and empty.error.startswith("ValueError")  # LongBench's except: 0, made visible


@pytest.mark.parametrize("references", [[], [""], "  "])
def test_references_must_be_given(references):
    with pytest.raises(ValueError, match="non-empty reference"):
        rouge_l(PRED, references)


def test_gap_to_longbench_scorer_on_real_summaries_as_documented(shared_data):
    """The numbers quoted in qwen_evals/scoring/rouge.py's docstring, on the 26 VCSUM test meetings."""
    folder = shared_data / "vcsum"
    summaries = [row for _, row in read_jsonl(folder / "long_test.txt")]
    segments = defaultdict(list)
    for _, row in read_jsonl(folder / "short_test.txt"):
        meeting, _, k = row["id"].partition("_")
        segments[meeting].append((int(k), row["discussion"]))
    pairs = {
        "other meeting's summary": [
            (summaries[(i + 1) % 26]["summary"], s["summary"]) for i, s in enumerate(summaries)
        ],
        "segment summaries": [("".join(d for _, d in sorted(segments[s["id"]])), s["summary"]) for s in summaries],
    }
    means = {
        name: (
            round(100 * statistics.mean(rouge_l(p, r).f1 for p, r in rows), 1),
            round(100 * statistics.mean(rouge_l_longbench(p, r).f1 for p, r in rows), 1),
        )
        for name, rows in pairs.items()
    }
    assert means == {"other meeting's summary": (17.2, 8.3), "segment summaries": (35.3, 38.8)}
