"""The run record says exactly what ran, runs never overwrite each other, and bad arguments fail before any work."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_evals.analysis.leaderboard import leaderboard
from qwen_evals.analysis.results import load_runs
from tests.conftest import REPO, write_byte_qwen2

MMLU_ONE_SUBJECT = ["task=mmlu", "task.subjects=[abstract_algebra]"]


def run_eval(*overrides: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python run_eval.py` from `cwd`, the request store off (tests must not share results)."""
    return subprocess.run(
        [sys.executable, str(REPO / "run_eval.py"), *overrides, "resume=false"],
        cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})},
    )  # fmt: skip


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_record_says_what_ran(byte_qwen2, shared_data, tmp_path):
    out = tmp_path / "run"
    done = run_eval(*MMLU_ONE_SUBJECT, "model=hf", f"model.path={byte_qwen2}", "model.step=1000", "precision=fp32",
                    f"data_dir={shared_data}", "limit=2", "task.max_new_tokens=4", f"output_dir={out}")  # fmt: skip
    assert done.returncode == 0, done.stderr
    record = summary(out)
    assert record["schema_version"] == 2
    run = record["run"]
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run["id"]) and f"run {run['id']}" in done.stdout
    model = run["model"]
    assert (model["label"], model["step"], model["path"]) == (byte_qwen2.name, 1000, str(byte_qwen2))
    weights = sha256(byte_qwen2 / "model.safetensors")
    assert model["weight_files"] == {"model.safetensors": weights}
    assert model["weights_sha256"] == hashlib.sha256(f"model.safetensors {weights}\n".encode()).hexdigest()
    provenance = run["provenance"]
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["git_commit"]) and isinstance(provenance["git_dirty"], bool)
    versions = provenance["versions"]
    assert {"python", "torch", "transformers", "tokenizers", "numpy", "datasets", "accelerate", "vllm"} <= set(versions)
    assert versions["vllm"] is None and versions["transformers"]  # what is not installed says so
    assert {"cuda", "driver", "gpus"} <= set(provenance)
    # exactly the files read, each with its sha256
    assert run["data"]["data_dir"] == str(shared_data.resolve())
    assert run["data"]["files"] == {
        "mmlu/test/abstract_algebra_test.csv": sha256(shared_data / "mmlu/test/abstract_algebra_test.csv")
    }
    assert run["chat_template"] == {"format": "chatml", "sha256": None, "system_prompt": "You are a helpful assistant."}
    (setting,) = run["generation"]["requests"]
    assert setting["max_new_tokens"] == 4 and setting["decoding"]["temperature"] == 0.0
    assert run["generation"]["backend"]["settings"][0]["max_new_tokens"] == 4
    assert (run["limit"], run["restrictions"], run["partial"]) == (2, {"subjects": ["abstract_algebra"]}, True)
    assert set(record["fingerprints"]) == {"data", "prompts", "generation", "exam"}
    assert record["data_fingerprint"] == record["fingerprints"]["exam"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(byte_qwen2)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    for row in rows:  # per-sample facts of generation
        assert row["rendered_prompt"].startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")
        assert row["prompt_tokens"] == len(tokenizer.encode(row["rendered_prompt"], add_special_tokens=False))
        assert 1 <= row["generated_tokens"] <= 4 and row["finish_reason"] in ("eos", "stop", "length")
        assert row["prompt_truncated"] is False and row["batch_seconds"] > 0


def test_two_checkpoints_of_one_name_stay_apart(shared_data, tmp_path):
    """run1/checkpoint-1000 and run2/checkpoint-1000: one label, two weights fingerprints, two leaderboard rows."""
    folders = [write_byte_qwen2(tmp_path / run / "checkpoint-1000", seed=seed) for run, seed in (("run1", 1), ("run2", 2))]
    for i, folder in enumerate(folders):
        done = run_eval(*MMLU_ONE_SUBJECT, "task.protocol=base_5shot", "model=hf", f"model.path={folder}", "precision=fp32",
                        f"data_dir={shared_data}", "limit=3", "canary=0", f"output_dir={tmp_path}/results/{i}")  # fmt: skip
        assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "results/0/samples.jsonl").read_text().splitlines()]
    assert all(row["prompt_tokens"] == len(row["prompt"].encode()) for row in rows)  # log-likelihood rows: 1 token a byte
    runs = load_runs([tmp_path / "results"])
    assert list(runs["label"]) == ["checkpoint-1000"] * 2
    assert runs["weights_sha256"].nunique() == 2 and runs["checkpoint"].nunique() == 2
    numeric, display = leaderboard(runs)
    assert len(numeric) == 2 and numeric["checkpoint"].nunique() == 2
    assert all(label.startswith("checkpoint-1000@") for label in display["model"])


def test_each_multirun_job_gets_its_own_folder(shared_data, tmp_path):
    """With the default folders every job of a sweep got the same timestamped output_dir: the last one won."""
    done = run_eval("-m", "model=fake", "task=mmlu", "task.protocol=chat_0shot,base_5shot", f"data_dir={shared_data}",
                    "limit=2", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = sorted(tmp_path.glob("results/**/summary.json"))
    assert sorted(json.loads(p.read_text())["protocol"] for p in found) == ["base_5shot", "chat_0shot"]
    assert len({p.parent for p in found}) == 2


def test_a_folder_holding_a_finished_run_is_refused(shared_data, tmp_path):
    out = tmp_path / "run"
    first = run_eval("model=fake", "task=mmlu", f"data_dir={shared_data}", "limit=1", f"output_dir={out}")
    assert first.returncode == 0, first.stderr
    before = (out / "summary.json").read_bytes()
    again = run_eval("model=fake", "model.policy=worst", "task=mmlu", f"data_dir={shared_data}", "limit=1", f"output_dir={out}")
    assert again.returncode == 2 and "already holds a finished run" in again.stderr and "Traceback" not in again.stderr
    assert (out / "summary.json").read_bytes() == before


def test_stale_shards_of_an_earlier_run_are_ignored(shared_data, tmp_path):
    """A crashed earlier run left shard 1 (another model) in a fixed output_dir; a new sharded run never merges it."""
    out = tmp_path / "fixed"
    common = ["model=fake", "task=mmlu", f"data_dir={shared_data}", "limit=1", "shard.count=2", f"output_dir={out}"]
    stale = run_eval(*common, "model.policy=worst", "shard.index=1")
    assert stale.returncode == 0 and "shard done" in stale.stdout, stale.stderr
    first = run_eval(*common, "shard.index=0")
    assert first.returncode == 0, first.stderr
    assert "shard done" in first.stdout and not (out / "summary.json").exists()  # shard 1 of this run is missing
    second = run_eval(*common, "shard.index=1")
    assert second.returncode == 0, second.stderr
    record = summary(out)
    assert record["n_samples"] == 57 and record["metrics"]["accuracy"] == 1.0
    assert [s["index"] for s in record["run"]["shards"]] == [0, 1]
    ids = {json.loads(p.read_text().splitlines()[0])["run_id"] for p in (out / "shards").glob("*.jsonl")}
    assert ids == {s["run_id"] for s in record["run"]["shards"]} and len(ids) == 2


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["limit=-1"], "limit=-1: give a positive whole number"),
        (["limit=0"], "limit=0: give a positive whole number"),
        (["limit=abc"], "limit='abc': give a positive whole number"),
        (["limit=2.5"], "limit=2.5: give a positive whole number"),
        (["+limt=1"], "unknown key 'limt' (from +limt=...); did you mean 'limit'?"),
        (["shard.count=2", "shard.index=2"], "shard.index=2 must be below shard.count=2"),
    ],
    ids=["negative", "zero", "text", "fraction", "typo", "shard"],
)
def test_bad_arguments_fail_before_any_work(arguments, message, shared_data, tmp_path):
    done = run_eval("model=fake", "task=mmlu", f"data_dir={shared_data}", *arguments, f"output_dir={tmp_path}/run")
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("run/*.jsonl")) and not (tmp_path / "run" / "summary.json").exists()


def test_offline_every_missing_hub_resource_is_named_at_once(tmp_path):
    done = run_eval("task=gsm8k", f"output_dir={tmp_path}/run", env={"HF_HUB_OFFLINE": "1", "EVALS_CONVERTED_DIR": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "the model 'Qwen/Qwen-7B-Chat': point model.path=" in done.stderr
    assert "the dataset 'openai/gsm8k': point data_dir=" in done.stderr


def test_a_native_qwen2_folder_on_the_qwen_preset_names_the_override(byte_qwen2, shared_data, tmp_path):
    done = run_eval(f"model.path={byte_qwen2}", f"data_dir={shared_data}", f"output_dir={tmp_path}/run",
                    env={"EVALS_CONVERTED_DIR": str(tmp_path / "converted")})  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"model=hf model.path={byte_qwen2}" in done.stderr
    assert not (tmp_path / "converted").exists()  # refused before any conversion


def test_of_two_shard_jobs_that_both_find_the_set_complete_only_one_merges(tmp_path):
    """Jobs finishing together each see both shard files; a second merge would race the first to summary.json."""
    from qwen_evals.core.distributed import FileShards

    first, second = (FileShards(tmp_path, index, 2, run_id=f"run-{index}", setup="s") for index in (0, 1))
    assert first.gather([{"id": 0}], "exam") is None  # shard 1 not written yet
    assert second.gather([{"id": 1}], "exam") == [{"id": 0}, {"id": 1}]
    assert first.gather([{"id": 0}], "exam") is None  # the same complete set, seen again: already claimed
    rerun = FileShards(tmp_path, 1, 2, run_id="run-1-again", setup="s")
    assert rerun.gather([{"id": 1}], "exam") == [{"id": 0}, {"id": 1}]  # a re-run shard makes a new set to merge
