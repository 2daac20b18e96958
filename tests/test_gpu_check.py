"""benchmarks/gpu_check.sh: its comparisons, and its CPU-checkable parts end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from qwen_evals.core.types import Generate, LogLikelihoodResult
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_check  # noqa: E402
from gpu_check_parts import compare_generations, compare_mc, gen_requests, mc_questions  # noqa: E402


def results(*rows: list[float]) -> list[LogLikelihoodResult]:
    return [LogLikelihoodResult(logprob, False) for row in rows for logprob in row]


def test_same_answers_agree_and_a_changed_answer_with_a_clear_margin_fails():
    reference = results(*[[-0.1, -3.0, -4.0, -5.0]] * 10, [-2.0, -0.2, -3.0, -4.0])
    status, text, _ = compare_mc(reference, results(*[[-0.11, -3.0, -4.0, -5.0]] * 10, [-2.0, -0.21, -3.0, -4.0]), 0.25)
    assert status == "ok" and text.startswith("11/11 same answers, 0 near-ties")
    # The last answer moves from B to A although the reference prefers B by 1.8 nats; everything else is unchanged.
    status, text, tie = compare_mc(reference, results(*[[-0.1, -3.0, -4.0, -5.0]] * 10, [-0.1, -0.2, -3.0, -4.0]), 2.0)
    assert status == "FAIL" and "differ: questions [10]" in text and tie == 0.0


def test_a_changed_answer_at_a_numerical_near_tie_is_not_a_disagreement_but_a_large_difference_is():
    reference = results(*[[-1.0, -3.0, -4.0, -5.0]] * 9, [-1.00, -1.01, -4.0, -5.0])
    noisy = [[-1.02, -2.98, -4.02, -4.98]] * 9
    status, text, tie = compare_mc(reference, results(*noisy, [-1.02, -1.00, -4.0, -5.0]), 0.25)
    assert status == "ok" and "9/10 same answers, 1 near-ties" in text and tie == pytest.approx(0.04)
    status, text, _ = compare_mc(reference, results(*noisy, [-1.5, -1.01, -4.0, -5.0]), 0.25)
    assert status == "FAIL" and "max |d log p| 0.5" in text  # beyond the bound, whatever the answers


def test_generations_must_match_unless_they_part_at_a_near_tie(tiny_qwen2):
    from qwen_evals.backends.hf.backend import HFBackend
    from qwen_evals.backends.precision import Precision

    model = HFBackend(name="tiny", path=str(tiny_qwen2), precision=Precision("fp32", "float32"), device_map=None)
    requests = gen_requests(4, max_new_tokens=8)
    made = model.generate(requests)
    assert compare_generations(model, requests, made, made, tie=0.0) == ("ok", "4/4 identical, 0 part at a near-tie (gap <= 0)")
    # A reply that takes a token the model finds far less likely than its own choice.
    worse = [*made[:3], replace(made[3], text=made[3].text[:2] + "\u4e2d\u6587")]
    status, text = compare_generations(model, requests, made, worse, tie=0.01)
    assert status == "FAIL" and "differ: prompts [3]" in text
    assert compare_generations(model, requests, made, worse, tie=1e9)[0] == "ok"


def test_workloads_pad_their_batches():
    questions = mc_questions(subjects=2, per_subject=5)
    assert len({q.prefix for q in questions}) == 2 and len({len(q.suffix) for q in questions}) > 3
    assert all([r.continuation for r in q.requests] == [" A", " B", " C", " D"] for q in questions)
    prompts = gen_requests(4, 8)
    assert {type(p.prompt) for p in prompts} == {str, list} and all(isinstance(p, Generate) for p in prompts)


def test_one_failed_or_crashed_check_fails_the_run_and_the_table_still_prints(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check, "measured_matmul_rate", lambda device, dtype: 1e11)
    monkeypatch.setattr(gpu_check, "measured_bandwidth", lambda device: 1e10)
    monkeypatch.setattr(gpu_check, "random_model", lambda out, mode: out)
    monkeypatch.setattr(gpu_check, "attention_rows", lambda *a: [gpu_check.Row("attention MC", "s", "r", "ok")])
    monkeypatch.setattr(gpu_check, "vllm_rows", lambda *a: [gpu_check.Row("vLLM", "s", "r", "skip")])
    monkeypatch.setattr(gpu_check, "quantization_rows", lambda *a: 1 / 0)
    assert gpu_check.main(["--cpu", "--out", str(tmp_path / "rows.json")]) == 1
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["check"], r["status"]) for r in rows][1:4] == [("attention MC", "ok"), ("precision", "FAIL"), ("vLLM", "skip")]
    assert "ZeroDivisionError" in rows[2]["result"] and "| FAIL" in capsys.readouterr().out
    monkeypatch.setattr(gpu_check, "quantization_rows", lambda *a: [gpu_check.Row("precision int8", "s", "r", "ok")])
    assert gpu_check.main(["--cpu"]) == 0


@pytest.mark.slow
def test_the_cpu_checkable_parts_run_and_agree(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        ["bash", "benchmarks/gpu_check.sh", "--cpu", "--out", str(out)], cwd=REPO, capture_output=True, text=True,
        timeout=1800, env={**os.environ, "PYTHON": sys.executable},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = {(r["check"], r["setting"]): r for r in json.loads(out.read_text())}
    by_check = {check: row["status"] for (check, _), row in rows.items()}
    assert by_check["attention MC"] == by_check["attention generation"] == "ok"
    assert [r["status"] for (c, _), r in rows.items() if c == "attention MC"] == ["ok", "ok"]  # prefix cache, plain
    assert by_check["vLLM"] == "skip"
    assert by_check["precision int8"] == by_check["precision nf4"] == by_check["precision memory"] == "ok"
    assert {"throughput MC", "throughput generation"} <= set(by_check)
    table = [line.split("|")[0].strip() for line in done.stdout.splitlines() if "|" in line]
    assert "attention MC" in table and "eager vs sdpa" in done.stdout  # the table is printed too
