import math

import pandas as pd
import pytest

from qwen_evals.backends.batching import plan_batches, shared_prefix_groups
from qwen_evals.core.metrics import macro_mean_stderr, mean_stderr


def test_mean_stderr_of_bernoulli_values():
    mean, se = mean_stderr([1, 0, 1, 1])
    assert mean == 0.75
    assert se == pytest.approx(math.sqrt(0.25 / 4))  # sample variance 1/4, n = 4


def test_macro_mean_weights_subjects_equally():
    frame = pd.DataFrame({"subject": ["a"] * 4 + ["b"] * 2, "correct": [1, 1, 1, 1, 0, 1]})
    mean, se = macro_mean_stderr(frame, "subject", "correct")
    assert mean == pytest.approx((1.0 + 0.5) / 2)
    assert se == pytest.approx(math.sqrt(0 + 0.5 / 2) / 2)


def test_batches_are_longest_first_and_fit_the_budget():
    lengths = [5, 50, 10, 40, 10, 200]
    batches = plan_batches(lengths, max_tokens=100, max_size=3)
    assert [i for b in batches for i in b] == [5, 1, 3, 2, 4, 0]
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 100
    assert batches[0] == [5]  # over budget alone: still runs


def test_shared_prefix_groups_find_few_shot_prefixes():
    shots = list(range(100, 140))
    rows = [shots + [1, 2], [7, 7, 7], shots + [3], shots + [1, 5, 6], [7, 7, 8]]
    groups = shared_prefix_groups(rows, min_prefix=32)
    grouped = {tuple(sorted(members)): prefix for prefix, members in groups}
    assert grouped[(0, 2, 3)] == 40
    assert grouped[(1,)] == 0 and grouped[(4,)] == 0
    # Every row keeps at least one token after its prefix.
    assert shared_prefix_groups([shots, shots + [1]], min_prefix=32) == [(39, [0, 1])]
