"""Bootstrap intervals, McNemar's exact test, the paired bootstrap and Holm's correction."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from qwen_evals.core import stats
from qwen_evals.core.metrics import Metric
from qwen_evals.core.task import EvalProtocol, Task, protocol_table


def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(3).random(500) < 0.6
    first, again = stats.bootstrap_ci(values), stats.bootstrap_ci(values)
    assert first == again
    assert first[0] < values.mean() < first[1]
    assert stats.bootstrap_ci(values, seed=1) != first


def test_bootstrap_ci_of_right_wrong_answers_matches_the_normal_interval():
    values = (np.arange(1000) % 10 < 6).astype(float)  # 60% right
    low, high = stats.bootstrap_ci(values)
    se = math.sqrt(0.6 * 0.4 / 1000)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_bootstrap_ci_of_continuous_scores_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.random(100), rng.random(2500)
    assert np.diff(stats.bootstrap_ci(large))[0] < np.diff(stats.bootstrap_ci(small))[0] / 3


def test_macro_bootstrap_resamples_within_subjects():
    # Subject a is always right, b always wrong: every within-subject resample keeps
    # the macro mean at exactly 0.5, while items resampled across subjects would not.
    values = np.array([1.0] * 90 + [0.0] * 10)
    groups = np.array(["a"] * 90 + ["b"] * 10)
    assert stats.statistic(values, groups) == 0.5
    assert stats.bootstrap_ci(values, groups) == (0.5, 0.5)
    low, high = stats.bootstrap_ci(values)
    assert low < 0.9 < high and high - low > 0.05


def test_groups_must_label_every_value():
    with pytest.raises(ValueError, match="group labels"):
        stats.bootstrap_ci([1, 0, 1], ["a", "b"])


@pytest.mark.parametrize(
    ("k", "n", "p"),
    [
        (3, 10, 2 * (1 + 10 + 45 + 120) / 1024),
        (0, 5, 2 / 32),
        (5, 5, 2 / 32),
        (2, 12, 2 * (1 + 12 + 66) / 4096),
        (30, 110, 2.018378768224273e-06),  # scipy.stats.binomtest(30, 110).pvalue
        (7000, 14042, 0.729348100628321),
        (0, 0, 1.0),
        (6, 12, 1.0),
    ],
)
def test_exact_binomial_p_values(k, n, p):
    assert stats.binomial_two_sided_half(k, n) == pytest.approx(p, rel=1e-9)


def test_mcnemar_counts_only_discordant_pairs():
    a = [1, 1, 1, 1, 0, 0, 1, 0]
    b = [0, 0, 0, 1, 0, 1, 1, 0]
    result = stats.mcnemar_exact(a, b)
    assert (result.a_only, result.b_only) == (3, 1)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)
    assert stats.mcnemar_exact(a, a).p_value == 1.0


def test_paired_bootstrap_of_identical_runs_is_a_zero_delta_with_p_one():
    a = np.random.default_rng(1).random(300)
    result = stats.paired_bootstrap(a, a)
    assert (result.delta, result.ci, result.p_value) == (0.0, (0.0, 0.0), 1.0)


def test_paired_bootstrap_detects_a_shift_hidden_in_noise():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 0.6, 1000)
    b = a - 0.01 + rng.normal(0, 0.02, 1000)
    result = stats.paired_bootstrap(a, b)
    assert result.delta == pytest.approx(-0.01, abs=0.002)
    assert result.ci[1] < 0 and result.p_value < 0.01
    # The same shift between unpaired samples is lost in the spread: pairing is what finds it.
    assert stats.paired_bootstrap(a, rng.permutation(b)).p_value > 0.05


def test_holm_adjusts_known_p_values():
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5]) == [0.5]
    assert stats.holm([0.2, 0.9, 0.8]) == pytest.approx([0.6, 1.0, 1.0])  # capped at 1, monotone


def test_holm_leaves_untested_entries_out_of_the_family():
    adjusted = stats.holm([0.01, math.nan, 0.02])
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


# ---- every declared metric gets its value, stderr and interval (qwen_evals.core.report) -------------------


class ToyTask(Task):
    """A task reduced to what the report reads: its declared metrics."""

    name = "toy"
    protocols = protocol_table(EvalProtocol("p", "loglikelihood", build=lambda task, sample: []))

    def __init__(self, *metrics: Metric) -> None:
        super().__init__("p")
        self.declared = metrics

    def read_samples(self, limit: int | None = None) -> list:
        return []

    def score(self, sample, outputs) -> dict:
        return {}

    def metrics(self) -> tuple[Metric, ...]:
        return self.declared


def summary_of(task: ToyTask, records: pd.DataFrame) -> dict:
    from qwen_evals.backends.fake import FakeBackend
    from qwen_evals.core.report import Report

    fingerprints = dict.fromkeys(("data", "prompts", "generation", "exam"), "fingerprint")
    return Report(task, FakeBackend(), records, 0.0, fingerprints, generation=[]).to_summary()


ACCURACY = Metric("accuracy", "correct", headline=True)


def test_summaries_get_a_bootstrap_ci_of_accuracy():
    records = pd.DataFrame({"correct": [True] * 60 + [False] * 40, "subject": ["a"] * 100})
    summary = summary_of(ToyTask(ACCURACY), records)
    low, high = summary["metrics"]["accuracy_ci"]
    assert (low, high) == stats.bootstrap_ci(np.array([1.0] * 60 + [0.0] * 40))
    assert low < 0.6 < high and summary["metrics"]["accuracy"] == 0.6
    assert summary["metrics"]["accuracy_stderr"] == pytest.approx(math.sqrt(0.6 * 0.4 / 99))
    assert summary["confidence"] == {"level": 0.95, "method": "bootstrap", "n_boot": stats.N_BOOT, "seed": 0}
    assert summary["metric_declarations"] == [ACCURACY.to_dict()] and summary["main_metric"] == "accuracy"


def test_macro_averaged_summaries_resample_within_subjects():
    records = pd.DataFrame({"correct": [True] * 90 + [False] * 10, "subject": ["a"] * 90 + ["b"] * 10})
    macro = Metric("accuracy", "correct", averaging="macro", group="subject", headline=True)
    summary = summary_of(ToyTask(macro), records)
    assert summary["metrics"]["accuracy"] == 0.5 and summary["metrics"]["accuracy_ci"] == [0.5, 0.5]


def test_continuous_metrics_of_any_task_get_ci_stderr_and_main_metric():
    rouge = np.random.default_rng(0).uniform(0, 0.4, 200)
    records = pd.DataFrame({"rouge_l": rouge, "correct": rouge > 0.2})
    summary = summary_of(ToyTask(Metric("rouge_l", "rouge_l", headline=True)), records)
    metrics = summary["metrics"]
    assert metrics["rouge_l_ci"][0] < rouge.mean() < metrics["rouge_l_ci"][1]
    assert metrics["rouge_l_stderr"] == pytest.approx(rouge.std(ddof=1) / math.sqrt(200))
    assert "accuracy" not in metrics  # not declared: not measured
    assert (summary["main_metric"], summary["main_metric_column"]) == ("rouge_l", "rouge_l")


def test_subset_metrics_average_over_their_subset_only():
    records = pd.DataFrame({"subset": ["pos", "pos", "neg", "neg", "neg"], "hit": [1, 0, None, None, None],
                            "false_positive": [None, None, True, False, False]})  # fmt: skip
    summary = summary_of(
        ToyTask(
            Metric("hit_rate", "hit", subset=("subset", "pos"), headline=True),
            Metric("false_positive_rate", "false_positive", subset=("subset", "neg"), higher_is_better=False),
        ),
        records,
    )
    assert summary["metrics"]["hit_rate"] == 0.5 and summary["metrics"]["false_positive_rate"] == pytest.approx(1 / 3)
    assert summary["metrics"]["false_positive_rate_ci"] is not None and "metric_notes" not in summary


def test_hidden_labels_get_no_value_and_say_why():
    records = pd.DataFrame({"correct": [None, None], "subject": ["a", "b"], "parse_status": ["strict", "unparsed"]})
    unparsed = Metric("unparsed_rate", "parse_status", equals="unparsed", higher_is_better=False)
    summary = summary_of(ToyTask(ACCURACY, unparsed), records)
    assert summary["metrics"]["accuracy"] is None and "accuracy_ci" not in summary["metrics"]
    assert summary["metric_notes"] == {"accuracy": "2 of 2 samples have no 'correct' value"}
    assert summary["metrics"]["unparsed_rate"] == 0.5
