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


CASES = [(task, "oracle") for task in ("mmlu", "ceval", "gsm8k", "humaneval", "vcsum", "react", "hfagent")]
CASES += [("ceval", "worst"), ("react", "worst")]  # the two the README's promise did not hold for


@pytest.mark.parametrize(("task_name", "policy"), CASES)
def test_every_metric_has_its_interval_or_says_why_not(task_name, policy, shared_data):
    """The README promises `<metric>_ci` for every metric; ReAct's and C-Eval's hard_accuracy had none."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from qwen_evals.backends.fake import FakeBackend
    from qwen_evals.core.config import register_resolvers
    from qwen_evals.core.runner import evaluate
    from tests.conftest import CONF

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", overrides=[f"task={task_name}", f"data_dir={shared_data}"])
    summary = evaluate(instantiate(cfg.task), FakeBackend(policy=policy), limit=3).summary
    metrics, notes = summary["metrics"], summary.get("metric_notes", {})
    names = {k for k in metrics if not k.endswith(("_stderr", "_ci"))}
    for name in names:
        complete = metrics[name] is not None and metrics.get(f"{name}_stderr") is not None and len(metrics.get(f"{name}_ci") or []) == 2
        assert complete or notes.get(name), f"{task_name} {name}: no interval and no note saying why"
    assert names == {d["name"] for d in summary["metric_declarations"]}  # each with its declaration
