"""The command line end to end: files written, errors readable, sweeps work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SAMPLE_FIELDS = {"id", "subject", "category", "prompt", "output", "prediction", "target", "correct", "parse_status"}
SUMMARY_FIELDS = {
    "task", "protocol", "model", "model_revision", "precision", "metrics", "tables", "n_samples", "config",
    "schema_version", "run", "wall_seconds", "tokens_per_second", "memory", "backend",
}  # fmt: skip


def command(*overrides: str) -> list[str]:
    """run_eval.py with the request store off unless a test asks for it (tests must not share results)."""
    defaults = [] if any(o.startswith("resume") for o in overrides) else ["resume=false"]
    return [sys.executable, "run_eval.py", *overrides, *defaults]


def run_eval(*overrides: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command(*overrides),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_tiny_model_on_mmlu_writes_samples_and_summary(tiny_qwen2, shared_data, tmp_path):
    out = tmp_path / "run"
    done = run_eval(
        "task=mmlu", "model=hf", f"model.path={tiny_qwen2}", "precision=fp32", f"data_dir={shared_data}",
        "limit=2", "task.max_new_tokens=8", f"output_dir={out}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 57 * 2
    assert all(SAMPLE_FIELDS <= set(s) for s in samples)
    assert samples[0]["prompt"][0]["content"].startswith("The following is a multiple-choice question.")
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_FIELDS <= set(summary)
    assert {"versions", "git_commit", "git_dirty"} <= set(summary["run"]["provenance"])
    assert (summary["task"], summary["protocol"], summary["precision"]) == ("mmlu", "chat_0shot", "fp32")
    assert summary["model"] == tiny_qwen2.name
    assert summary["n_samples"] == 114
    metrics = summary["metrics"]
    assert 0 <= metrics["accuracy"] <= 1 and metrics["accuracy_stderr"] > 0
    assert metrics["accuracy"] == sum(s["correct"] for s in samples) / 114
    assert len(summary["tables"]["subject"]) == 57
    assert summary["backend"]["tokens"] > 0 and summary["tokens_per_second"] > 0
    assert "overall" in done.stdout and "STEM" in done.stdout


def test_multirun_sweeps_tasks_with_the_fake_oracle(shared_data, tmp_path):
    done = run_eval(
        "-m", "task=mmlu,ceval", "model=fake", f"data_dir={shared_data}", "limit=1",
        f"output_dir={tmp_path}/${{hydra:runtime.choices.task}}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for task, n in (("mmlu", 57), ("ceval", 52)):
        summary = json.loads((tmp_path / task / "summary.json").read_text())
        assert (summary["task"], summary["n_samples"], summary["metrics"]["accuracy"]) == (task, n, 1.0)


def test_user_errors_print_one_clear_line_and_exit_2(shared_data, tiny_qwen2, tmp_path):
    # A bitsandbytes from before its CPU backend (0.46) shadows the installed one.
    (tmp_path / "old" / "bitsandbytes").mkdir(parents=True)
    (tmp_path / "old" / "bitsandbytes" / "__init__.py").write_text('__version__ = "0.45.5"\n')
    done = run_eval("model=hf", f"model.path={tiny_qwen2}", "precision=int8", f"data_dir={shared_data}",
                    f"output_dir={tmp_path}/a", env={"PYTHONPATH": str(tmp_path / "old"), "CUDA_VISIBLE_DEVICES": ""})  # fmt: skip
    assert done.returncode == 2
    assert "precision=int8" in done.stderr and "bitsandbytes 0.45.5 has no cpu backend" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_eval("model=fake", "task=mmlu", f"output_dir={tmp_path}/b", env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert done.returncode == 2
    assert "'cais/mmlu'" in done.stderr and "data_dir=" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_eval("model=fake", "task.protocol=cot", f"data_dir={shared_data}", f"output_dir={tmp_path}/c")
    assert done.returncode == 2 and "task.protocol='cot'" in done.stderr
    assert not Path(tmp_path / "c" / "summary.json").exists()


def test_int8_and_nf4_run_on_the_cpu_and_their_weights_shrink_in_order(tiny_qwen2, shared_data, tmp_path):
    done = run_eval(
        "-m", "model=hf", f"model.path={tiny_qwen2}", "precision=bf16,int8,nf4", f"data_dir={shared_data}", "limit=2",
        "task.protocol=base_5shot", "task.subjects=[anatomy,astronomy]", "canary=0",
        f"output_dir={tmp_path}/${{precision.name}}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summaries = {p: json.loads((tmp_path / p / "summary.json").read_text()) for p in ("bf16", "int8", "nf4")}
    memory = {p: s["memory"] for p, s in summaries.items()}
    assert all(m["device"] == "cpu" and m["peak_bytes"] >= m["weights_bytes"] for m in memory.values())
    assert memory["bf16"]["weights_bytes"] > memory["int8"]["weights_bytes"] > memory["nf4"]["weights_bytes"]
    assert summaries["int8"]["backend"]["bitsandbytes"] and summaries["nf4"]["n_samples"] == 4
    assert all(s["tokens_per_second"] > 0 for s in summaries.values())


def test_a_data_dir_one_level_too_high_says_the_benchmark_folder_is_not_under_it(shared_data, tmp_path):
    done = run_eval("model=fake", "task=mmlu", f"data_dir={shared_data.parent}", f"output_dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"data_dir='{shared_data.parent}': the mmlu/ folder was not found under data_dir" in done.stderr
    assert f"set data_dir={shared_data}" in done.stderr


def test_a_killed_run_resumes_from_its_stored_requests(tiny_qwen2, shared_data, tmp_path):
    store = tmp_path / "store"
    common = ["model=hf", f"model.path={tiny_qwen2}", "precision=fp32", f"data_dir={shared_data}", "limit=4",
              "task.max_new_tokens=16", "canary=0", "resume_chunk=8", f"resume_dir={store}"]  # fmt: skip
    victim = subprocess.Popen(command(*common, f"output_dir={tmp_path}/killed"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while stored_lines(store) < 40 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_before = stored_lines(store)
    assert 40 <= done_before < 228, "the run must be killed halfway"
    assert not (tmp_path / "killed" / "summary.json").exists()
    # A write cut off mid-line must be ignored, not read as a result.
    next(store.glob("requests.*.jsonl")).open("a").write('{"key": "half-writ')

    resumed = run_eval(*common, f"output_dir={tmp_path}/resumed")
    assert resumed.returncode == 0, resumed.stderr
    clean = run_eval(*common[:-2], "resume=false", f"output_dir={tmp_path}/clean")
    assert clean.returncode == 0, clean.stderr
    summary = json.loads((tmp_path / "resumed" / "summary.json").read_text())
    resume = summary["backend"]["resume"]
    assert resume["reused"] == done_before and resume["computed"] == 228 - done_before
    assert resume["dropped_partial_lines"] == 1
    baseline = json.loads((tmp_path / "clean" / "summary.json").read_text())
    assert summary["metrics"] == baseline["metrics"]
    timing = "batch_seconds"  # a measurement of the run that made the output, not part of the output
    resumed_rows, clean_rows = read_samples(tmp_path / "resumed"), read_samples(tmp_path / "clean")
    assert all(timing in row for row in resumed_rows)
    assert [{k: v for k, v in row.items() if k != timing} for row in resumed_rows] == [
        {k: v for k, v in row.items() if k != timing} for row in clean_rows
    ]


def stored_lines(store: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in store.glob("requests.*.jsonl"))


def read_samples(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]


def test_data_parallel_over_two_processes_equals_one(tiny_qwen2, shared_data, tmp_path):
    common = ["model=hf", f"model.path={tiny_qwen2}", "precision=fp32", f"data_dir={shared_data}", "limit=2",
              "task.protocol=base_5shot", "canary=0"]  # fmt: skip
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         *command(*common, f"output_dir={tmp_path}/two")[1:]],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_eval(*common, f"output_dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr
    merged, single = read_samples(tmp_path / "two"), read_samples(tmp_path / "one")
    assert [s["id"] for s in merged] == [s["id"] for s in single]
    assert [s["prediction"] for s in merged] == [s["prediction"] for s in single]
    for a, b in zip(merged, single):
        assert a["output"] == pytest.approx(b["output"], abs=1e-4)
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("two", "one")]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]


@pytest.mark.parametrize(
    ("launcher", "launch_message"),
    [("local-parallel", "Joblib.Parallel"), ("ray", "Ray is launching 2 jobs")],  # local processes; a local Ray
)
def test_sharded_sweep_jobs_merge_into_the_one_process_result(
    launcher, launch_message, tiny_qwen2, shared_data, tmp_path
):
    common = ["model=hf", f"model.path={tiny_qwen2}", "precision=fp32", f"data_dir={shared_data}", "limit=2",
              "task=ceval", "task.protocol=base_5shot", "canary=0"]  # fmt: skip
    sweep = run_eval("-m", f"hydra/launcher={launcher}", *common, "shard.count=2", "shard.index=0,1",
                     f"output_dir={tmp_path}/sharded", f"hydra.sweep.dir={tmp_path}/sweep")  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert launch_message in sweep.stdout + sweep.stderr
    assert sorted(p.name for p in (tmp_path / "sharded" / "shards").glob("*.jsonl")) == ["0-of-2.jsonl", "1-of-2.jsonl"]
    one = run_eval(*common, f"output_dir={tmp_path}/one")
    assert one.returncode == 0, one.stderr
    merged, single = read_samples(tmp_path / "sharded"), read_samples(tmp_path / "one")
    assert [(s["id"], s["prediction"]) for s in merged] == [(s["id"], s["prediction"]) for s in single]
    summaries = [json.loads((tmp_path / run / "summary.json").read_text()) for run in ("sharded", "one")]
    assert summaries[0]["metrics"] == summaries[1]["metrics"]


def test_a_ray_job_that_stops_on_a_clear_error_is_reported_as_that_error_not_as_a_crashed_worker(shared_data, tmp_path):
    sweep = run_eval("-m", "hydra/launcher=ray", "model=fake", "task=mmlu", f"data_dir={shared_data}", "limit=abc",
                     f"output_dir={tmp_path}/out", f"hydra.sweep.dir={tmp_path}/sweep")  # fmt: skip
    assert sweep.returncode != 0
    assert "limit='abc': give a positive whole number" in sweep.stderr
    assert "stopped with exit code 2" in sweep.stderr and "WorkerCrashedError" not in sweep.stderr
