"""Paired comparison of two runs (qwen_evals.analysis.compare) and the nightly gate (qwen_evals.analysis.gate)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qwen_evals.analysis.compare import compare
from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import Metric
from tests.conftest import REPO


def run_fake_sweep(root: Path, shared_data: Path, *overrides: str) -> None:
    """`run_eval.py -m` on the fake backend, one question per subject, sweep folders under `root`."""
    done = subprocess.run(
        [sys.executable, "run_eval.py", "-m", "resume=false", "model=fake", f"data_dir={shared_data}", "limit=1",
         f"hydra.sweep.dir={root}/.multirun/{len(list(root.glob('.multirun/*')))}", *overrides],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def write_run(
    folder: Path,
    values,
    *,
    task: str = "mmlu",
    model: str = "model-a",
    precision: str = "bf16",
    protocol: str = "chat_0shot",
    split: str = "test",
    ids: list[str] | None = None,
    subjects: list[str] | None = None,
    column: str = "correct",
    metric: str = "accuracy",
    memory: dict | None = None,
    finished_at: str = "2026-01-01T00:00:00+00:00",
    run: dict | None = None,
    **extra,
) -> Path:
    """A run folder in the format run_eval.py writes (samples.jsonl + summary.json), from per-sample values.

    `run` is the record's run block (e.g. `{"partial": True, "limit": 2}`); `extra` adds summary fields.
    """
    folder.mkdir(parents=True, exist_ok=True)
    values = list(values)
    ids = ids or [f"q{i:04d}" for i in range(len(values))]
    rows = []
    for i, value in enumerate(values):
        row = {"id": ids[i], "prompt": [{"role": "user", "content": f"question {i}?"}], "output": f"answer {i}",
               "prediction": "A" if value else "B", "target": "A", column: value,
               "parse_status": "strict" if value or i % 3 else "unparsed"}  # fmt: skip
        if subjects:
            row["subject"] = subjects[i]
        rows.append(row)
    (folder / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    mean = float(np.mean(np.asarray(values, dtype=float)))
    macro = {"averaging": "macro", "group": "subject"} if subjects else {}
    declared = Metric(metric, column, headline=True, **macro)
    summary = {
        "task": task, "protocol": protocol, "split": split,
        "metric_declarations": [declared.to_dict()], "main_metric": metric,
        "model": model, "model_revision": None, "precision": precision, "n_samples": len(values),
        "metrics": {metric: mean, f"{metric}_stderr": float(np.std(values, ddof=1) / math.sqrt(len(values)))},
        "tables": {}, "wall_seconds": 1.0, "tokens_per_second": None, "memory": memory,
        "data_fingerprint": "same", "finished_at": finished_at, **extra,
    }  # fmt: skip
    if run is not None:
        summary["run"] = {"id": f"run-{folder.name}", "partial": False, "limit": None, **run}
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def gpu_memory(peak_gb: float, weights_gb: float | None = None) -> dict:
    """A run's `memory` block as the transformers backend writes it on a GPU."""
    weights_gb = peak_gb * 0.9 if weights_gb is None else weights_gb
    return {"device": "cuda", "measure": "cuda_max_allocated", "weights_bytes": int(weights_gb * 2**30),
            "load_peak_bytes": int(peak_gb * 2**30), "peak_bytes": int(peak_gb * 2**30), "resident_at_start_bytes": 0}  # fmt: skip


def flipped(values: np.ndarray, right_to_wrong: int, wrong_to_right: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = values.copy()
    out[rng.choice(np.flatnonzero(values == 1), right_to_wrong, replace=False)] = 0
    out[rng.choice(np.flatnonzero(values == 0), wrong_to_right, replace=False)] = 1
    return out


def accuracy_runs(
    tmp_path: Path, n: int, right: int, a_to_b: tuple[int, int], names: tuple[str, str] = ("a", "b"), **kw
) -> tuple[Path, Path]:
    """Run A with `right` of `n` answers right; run B = A with (right->wrong, wrong->right) flips."""
    a = np.zeros(n)
    a[np.random.default_rng(7).choice(n, right, replace=False)] = 1
    b = flipped(a, *a_to_b)
    return tuple(write_run(tmp_path / name, v.astype(bool).tolist(), **kw) for name, v in zip(names, (a, b)))


def test_two_identical_runs_tie(tmp_path):
    a, b = accuracy_runs(tmp_path, 1000, 700, (0, 0))
    (c,) = compare([a], [b]).comparisons
    assert (c.verdict, c.delta, c.p_value, c.test) == ("tie", 0.0, 1.0, "mcnemar")
    assert c.regressions == c.improvements == []


def test_a_planted_five_point_regression_on_1000_samples_is_detected(tmp_path):
    a, b = accuracy_runs(tmp_path, 1000, 700, (80, 30))  # net -50 answers = -5 points
    (c,) = compare([a], [b]).comparisons
    assert c.verdict == "worse" and c.delta == pytest.approx(-5.0)
    assert c.ci[1] < 0 and c.p_holm < 1e-4
    assert (len(c.regressions), len(c.improvements)) == (80, 30)
    before = {json.loads(line)["id"]: json.loads(line)["correct"] for line in (a / "samples.jsonl").open()}
    assert all(before[i] for i in c.regressions) and not any(before[i] for i in c.improvements)
    (reverse,) = compare([b], [a]).comparisons
    assert reverse.verdict == "better"


def test_a_half_point_difference_on_200_samples_is_a_tie(tmp_path):
    a, b = accuracy_runs(tmp_path, 200, 140, (3, 2))  # net -1 answer = -0.5 points
    (c,) = compare([a], [b]).comparisons
    assert c.delta == pytest.approx(-0.5) and c.verdict == "tie" and c.p_value > 0.5


def test_continuous_metrics_use_the_paired_bootstrap(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.uniform(0.1, 0.5, 1000)
    kw = {"task": "vcsum", "column": "rouge_l", "metric": "rouge_l", "split": "dev"}
    a = write_run(tmp_path / "a", base.tolist(), **kw)
    b = write_run(tmp_path / "b", (base - 0.05 + rng.normal(0, 0.05, 1000)).tolist(), **kw)
    (c,) = compare([a], [b]).comparisons
    assert (c.test, c.metric, c.verdict) == ("paired-bootstrap", "rouge_l", "worse")
    assert c.delta == pytest.approx(-5.0, abs=0.5)
    small = base[:200]
    a2 = write_run(tmp_path / "a2", small.tolist(), **kw)
    b2 = write_run(tmp_path / "b2", (small - 0.005 + rng.normal(0, 0.05, 200)).tolist(), **kw)
    (tie,) = compare([a2], [b2]).comparisons
    assert tie.verdict == "tie"


def test_holm_correction_across_tasks_can_turn_a_lone_regression_into_a_tie(tmp_path):
    # 10 right->wrong against 2 wrong->right: p = 0.039 alone, 0.077 after Holm over two tasks.
    for task in ("mmlu", "ceval"):
        accuracy_runs(tmp_path, 300, 150, (10, 2), task=task, names=(f"A/{task}", f"B/{task}"))
    (alone,) = compare([tmp_path / "A" / "mmlu"], [tmp_path / "B" / "mmlu"]).comparisons
    assert alone.p_value == pytest.approx(0.0386, abs=1e-4) and alone.verdict == "worse"
    result = compare([tmp_path / "A"], [tmp_path / "B"])
    assert [c.verdict for c in result.comparisons] == ["tie", "tie"]
    assert all(c.p_holm == pytest.approx(2 * c.p_value) for c in result.comparisons)


def test_macro_averaged_tasks_report_the_macro_delta(tmp_path):
    subjects = ["big"] * 90 + ["small"] * 10
    a = write_run(tmp_path / "a", [True] * 100, task="ceval", split="val", subjects=subjects)
    b = write_run(tmp_path / "b", [True] * 90 + [False] * 10, task="ceval", split="val", subjects=subjects)
    (c,) = compare([a], [b]).comparisons
    assert c.delta == pytest.approx(-50.0)  # the small subject drops from 100 to 0: half the macro mean
    assert c.score_b == pytest.approx(50.0) and c.verdict == "worse"


def test_mismatched_sample_ids_are_a_clear_error(tmp_path):
    a = write_run(tmp_path / "a", [True, False, True], ids=["x/0", "x/1", "x/2"])
    b = write_run(tmp_path / "b", [True, False, True], ids=["x/0", "x/1", "x/3"])
    with pytest.raises(EvalError, match=r"different samples.*1 ids only in A \['x/2'\].*1 only in B \['x/3'\]"):
        compare([a], [b])


def test_different_gold_answers_are_an_error(tmp_path):
    a = write_run(tmp_path / "a", [True, False])
    b = write_run(tmp_path / "b", [True, False])
    lines = (b / "samples.jsonl").read_text().replace('"target": "A"', '"target": "C"', 1)
    (b / "samples.jsonl").write_text(lines)
    with pytest.raises(EvalError, match="different gold answers"):
        compare([a], [b])


def test_sweeps_pair_by_precision_and_report_the_unpaired(tmp_path):
    values = [True, False] * 50
    for side, precisions in (("A", ("bf16", "int8")), ("B", ("bf16", "int8", "nf4"))):
        for p in precisions:
            write_run(tmp_path / side / p, values, model=f"ckpt-{side}", precision=p)
    result = compare([tmp_path / "A"], [tmp_path / "B"])
    assert sorted((c.label_a, c.label_b) for c in result.comparisons) == [
        ("ckpt-A (bf16)", "ckpt-B (bf16)"), ("ckpt-A (int8)", "ckpt-B (int8)")
    ]  # fmt: skip
    assert len(result.only_b) == 1 and "nf4" in result.only_b[0] and not result.only_a


def cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], check=False, cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_compare_cli_prints_delta_ci_p_verdict_and_flips(tmp_path):
    a, b = accuracy_runs(tmp_path, 1000, 700, (80, 30))
    done = cli("qwen_evals.analysis.compare", a, b, "--show", "3", "--json", tmp_path / "out.json")
    assert done.returncode == 0, done.stderr
    assert "worse" in done.stdout and "-5.0" in done.stdout and "mcnemar" in done.stdout
    assert "worse in B (80):" in done.stdout and "(+77 more)" in done.stdout
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["comparisons"][0]["verdict"] == "worse" and len(saved["comparisons"][0]["regressions"]) == 80
    bad = cli("qwen_evals.analysis.compare", a, tmp_path / "missing")
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr


# ---- the gate, on real runs of run_eval.py with the fake backend --------------------------------


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory, shared_data) -> Path:
    """run_eval.py -m: the fake oracle and the fake worst model on MMLU and C-Eval (1 question per subject)."""
    root = tmp_path_factory.mktemp("fake-runs")
    run_fake_sweep(root, shared_data, "model.policy=oracle,worst", "task=mmlu,ceval",
                   f"output_dir={root}/${{model.policy}}/${{hydra:runtime.choices.task}}")  # fmt: skip
    return root


def test_gate_fails_when_the_candidate_is_significantly_worse(fake_runs, tmp_path):
    summary = tmp_path / "summary.md"
    done = cli("qwen_evals.analysis.gate", fake_runs / "oracle", fake_runs / "worst", "--show", "5", "--summary", summary,
               "--accept-partial")  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "GATE FAILED: worse: mmlu/chat_0shot/test accuracy fake-worst (bf16) is worse than baseline fake-oracle (bf16)"
        in done.stdout
    )
    assert "GATE FAILED: worse: ceval/chat_0shot/val" in done.stdout
    assert "57 samples flipped right -> wrong: abstract_algebra/0, anatomy/0" in done.stdout
    assert "Evaluation gate: FAILED" in summary.read_text() and "`abstract_algebra/0`" in summary.read_text()


def test_gate_passes_on_equal_or_better_candidates(fake_runs):
    same = cli("qwen_evals.analysis.gate", fake_runs / "oracle", fake_runs / "oracle", "--accept-partial")
    assert same.returncode == 0 and "GATE PASSED" in same.stdout, same.stdout + same.stderr
    better = cli("qwen_evals.analysis.gate", fake_runs / "worst", fake_runs / "oracle", "--accept-partial")
    assert better.returncode == 0 and "better" in better.stdout


def test_gate_fails_on_smoke_runs_missing_runs_and_another_exam(fake_runs, tmp_path):
    """The gate passed incomplete matrices: runs present on one side only, partial runs and a changed exam."""
    partial = cli("qwen_evals.analysis.gate", fake_runs / "oracle", fake_runs / "oracle")
    assert partial.returncode == 1 and "GATE FAILED: partial: mmlu/chat_0shot/test/fake-oracle/bf16" in partial.stdout
    missing = cli("qwen_evals.analysis.gate", fake_runs / "oracle", fake_runs / "oracle" / "mmlu", "--accept-partial")
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "GATE FAILED: missing: no run of ceval/chat_0shot/val fake-oracle (bf16)" in missing.stdout
    accepted = cli("qwen_evals.analysis.gate", fake_runs / "oracle", fake_runs / "oracle" / "mmlu", "--accept-partial",
                   "--accept-missing")  # fmt: skip
    assert accepted.returncode == 0 and "accepted: missing" in accepted.stdout
    other = write_run(tmp_path / "other", [True] * 57, task="mmlu", model="fake-oracle")  # another exam, as data_fingerprint says
    exam = cli("qwen_evals.analysis.gate", fake_runs / "oracle" / "mmlu", other, "--accept-partial")
    assert exam.returncode == 1 and "GATE FAILED: exam: mmlu/chat_0shot/test/fake-oracle/bf16 asked another exam" in exam.stdout
    assert cli("qwen_evals.analysis.gate", fake_runs / "oracle" / "mmlu", other, "--accept-partial",
               "--accept-exam-change").returncode == 0  # fmt: skip


def test_runs_without_labels_are_listed_not_compared(tmp_path):
    for side in ("a", "b"):
        run = write_run(tmp_path / side / "test", [True, False], task="ceval", split="test")
        summary = json.loads((run / "summary.json").read_text())
        summary["metrics"] = {"unparsed_rate": 0.0}  # what a C-Eval test run (hidden labels) writes
        (run / "summary.json").write_text(json.dumps(summary))
        write_run(tmp_path / side / "val", [True, False], task="ceval", split="val")
    result = compare([tmp_path / "a"], [tmp_path / "b"])
    assert [c.split for c in result.comparisons] == ["val"]
    assert len(result.unscored) == 1 and "ceval/chat_0shot/test" in result.unscored[0]


# ---- tasks with subset metrics (ReAct): compared and gated on their declared metrics ----------------------


def react_run(folder: Path, backend) -> Path:
    from qwen_evals.backends.fake import FakeBackend  # noqa: F401  (the backend is built by the caller)
    from qwen_evals.core.runner import evaluate
    from qwen_evals.tasks.react import ReAct

    evaluate(ReAct(), backend).save(folder)
    return folder


def trigger_happy(request) -> str:
    """Answers positives like the gold, and calls a tool on every negative too."""
    if "Action:" in request.reference:
        return request.reference
    return "Thought: let me look it up\nAction: web_search\nAction Input: {}"


def test_identical_react_runs_tie_and_pass_the_gate(tmp_path):
    from qwen_evals.analysis import gate
    from qwen_evals.backends.fake import FakeBackend

    a, b = (react_run(tmp_path / name, FakeBackend(policy="oracle")) for name in ("a", "b"))
    result = compare([a], [b])
    metrics = {c.metric: c for c in result.comparisons}
    assert set(metrics) == {"tool_selection_accuracy", "tool_input_rouge_l", "false_positive_rate"}
    assert all(c.verdict == "tie" and c.delta == 0 for c in result.comparisons)
    assert metrics["false_positive_rate"].n == 88 and metrics["tool_selection_accuracy"].n == 170  # each its subset
    assert gate.main([str(a), str(b)]) == 0


def test_runs_that_differ_only_in_max_new_tokens_are_named_so(shared_data, tmp_path):
    """Two runs that differ only in max_new_tokens were reported as "prompts differ (data_fingerprint)"."""
    run_fake_sweep(tmp_path, shared_data, "task=mmlu", "task.max_new_tokens=512,64",
                   f"output_dir={tmp_path}/${{task.max_new_tokens}}")  # fmt: skip
    comparison = compare([tmp_path / "512"], [tmp_path / "64"]).comparisons[0]
    assert comparison.notes == ["generation settings differ: max_new_tokens: 512 -> 64"]
    assert comparison.same_exam


def test_more_false_positives_are_worse_even_when_tool_selection_holds(tmp_path):
    from qwen_evals.analysis import gate
    from qwen_evals.backends.fake import FakeBackend

    a = react_run(tmp_path / "a", FakeBackend(policy="oracle"))
    b = react_run(tmp_path / "b", FakeBackend(policy="script", script=trigger_happy))
    metrics = {c.metric: c for c in compare([a], [b]).comparisons}
    assert metrics["tool_selection_accuracy"].verdict == "tie"
    fp = metrics["false_positive_rate"]
    assert fp.delta == 100.0 and not fp.higher_is_better and fp.verdict == "worse"
    assert len(fp.regressions) == 88 and fp.improvements == []  # the negatives that now call a tool
    assert gate.main([str(a), str(b)]) == 1
