"""The nightly workflow, run step by step on the fake backend: matrix, evaluation, leaderboard, gate, promotion.

`run_night` reads .github/workflows/nightly.yml and runs each of its `run:` steps
in bash as the runner would (GitHub's `bash -eo pipefail`, the job's environment,
a step after a failure skipped unless its `if` says otherwise), with `qwen-evals`
on PATH running this checkout. Only the install and upload steps are left out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import CONF, REPO

WORKFLOW = REPO / ".github" / "workflows" / "nightly.yml"
OVERRIDES = "model=fake task=gsm8k precision=bf16,int8"
RUNS_ON = ("!cancelled()", "${{ !cancelled() }}")
"""The `if:` conditions the workflow uses besides the default (every earlier step passed)."""


def workflow_job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["evaluate"]


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    """A `qwen-evals` command running this checkout's code."""
    folder = tmp_path_factory.mktemp("bin")
    command = folder / "qwen-evals"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m qwen_evals.cli.main "$@"\n')
    command.chmod(0o755)
    return folder


def run_night(
    root: Path, night: str, data_dir: Path, shim: Path, after: dict[str, Callable[[dict], None]] | None = None
) -> dict[str, int | str]:
    """Run the workflow's steps for one night; returns each step's exit status (or "skipped")."""
    job = workflow_job()
    env = {
        "EVALS_STORE": str(root / "store"),
        "HF_HOME": str(root / "store" / "hf-cache"),
        "EVALS_DATA_DIR": str(data_dir),
        "NIGHT": night,
        "NIGHTLY_RESULTS": str(root / "workspace" / "results" / "nightly" / night),
        "REPORT_DIR": str(root / "workspace" / "results" / "nightly" / "report"),
        "OVERRIDES": OVERRIDES,
        "ACCEPT_REGRESSION": "false",
    }
    assert set(job["env"]) == set(env), "the test must give every variable the workflow's job sets"
    (root / "workspace").mkdir(parents=True, exist_ok=True)
    shell_env = {
        **os.environ, **env, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(REPO),
        "GITHUB_STEP_SUMMARY": str(root / f"summary-{night}.md"), "GITHUB_PATH": str(root / "github-path"),
    }  # fmt: skip
    outcomes: dict[str, int | str] = {}
    failed = False
    for step in job["steps"]:
        if "uses" in step or step.get("id") == "install":
            continue
        condition = step.get("if")
        assert condition is None or condition in RUNS_ON, f"the test does not model `if: {condition}`"
        if condition is None and failed:
            outcomes[step["name"]] = "skipped"
            continue
        assert "${{" not in step["run"], "a step script reads only environment variables"
        done = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=root / "workspace", env=shell_env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        outcomes[step["name"]] = done.returncode
        outcomes[f"{step['name']} output"] = done.stdout + done.stderr
        failed = failed or done.returncode != 0
        if after and step["name"] in after:
            after[step["name"]](env)
    return outcomes


def step(outcomes: dict, prefix: str) -> int | str:
    (name,) = [n for n in outcomes if n.startswith(prefix) and not n.endswith(" output")]
    return outcomes[name]


def output(outcomes: dict, prefix: str) -> str:
    (name,) = [n for n in outcomes if n.startswith(prefix) and n.endswith(" output")]
    return outcomes[name]


def baseline_run_ids(root: Path) -> set[str]:
    return {json.loads(p.read_text())["run"]["id"] for p in (root / "store" / "baseline").rglob("summary.json")}


def gsm8k_copy(shared_data: Path, folder: Path, first_question_suffix: str = "") -> Path:
    """The first 40 GSM8K test problems (a complete exam of its own, quick to run), the first one's question extended."""
    lines = (shared_data / "gsm8k" / "test.jsonl").read_text().splitlines()[:40]
    first = json.loads(lines[0])
    lines[0] = json.dumps({**first, "question": first["question"] + first_question_suffix})
    (folder / "gsm8k").mkdir(parents=True)
    (folder / "gsm8k" / "test.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_the_nightly_promotes_only_complete_matrices_of_the_same_exam(shared_data, shim, tmp_path):
    data = gsm8k_copy(shared_data, tmp_path / "data")
    changed = gsm8k_copy(shared_data, tmp_path / "data-v2", " Answer with a number.")  # a prompt change

    night1 = run_night(tmp_path, "1", data, shim)  # no baseline yet: a complete matrix becomes it
    assert all(v == 0 for k, v in night1.items() if not k.endswith(" output")), night1
    assert "No baseline" in output(night1, "Gate") and "GATE PASSED" in output(night1, "Gate")
    expected = json.loads((tmp_path / "workspace/results/nightly/report/expected.json").read_text())
    assert sorted((e["task"], e["model"], e["precision"]) for e in expected) == [
        ("gsm8k", "fake-oracle", "bf16"), ("gsm8k", "fake-oracle", "int8")
    ]  # fmt: skip
    promoted = baseline_run_ids(tmp_path)
    assert len(promoted) == 2

    def lose_a_run(env: dict) -> None:  # a job whose results never arrived
        shutil.rmtree(Path(env["NIGHTLY_RESULTS"]) / "fake-oracle-int8")

    night2 = run_night(tmp_path, "2", data, shim, after={"Evaluate the matrix": lose_a_run})
    assert step(night2, "Gate") == 1 and "GATE FAILED: missing: no run of gsm8k/chat_0shot/test/fake-oracle/int8" in output(night2, "Gate")
    assert step(night2, "Promote") == "skipped" and baseline_run_ids(tmp_path) == promoted

    night3 = run_night(tmp_path, "3", changed, shim)  # the prompts changed, not the model
    assert step(night3, "Evaluate") == 0 and step(night3, "Gate") == 1
    gate = output(night3, "Gate")
    assert "GATE FAILED: exam: gsm8k/chat_0shot/test/fake-oracle/bf16 asked another exam" in gate
    assert "GATE FAILED: exam: gsm8k/chat_0shot/test/fake-oracle/int8 asked another exam" in gate
    assert step(night3, "Promote") == "skipped" and baseline_run_ids(tmp_path) == promoted

    night4 = run_night(tmp_path, "4", data, shim)  # the same exam again, nothing worse: promoted
    assert step(night4, "Gate") == 0 and step(night4, "Promote") == 0, output(night4, "Gate")
    assert baseline_run_ids(tmp_path) != promoted and len(baseline_run_ids(tmp_path)) == 2
    board = (tmp_path / "workspace/results/nightly/report/leaderboard.md").read_text()
    assert "over 2 runs" in board  # nights 1 and 4 measured the same thing: aggregated


def test_nightly_matrix_names_existing_configs():
    from hydra import compose, initialize_config_dir

    from qwen_evals.core.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="nightly", return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert set(params) == {"model", "task", "precision"}
    for group, choices in params.items():
        for choice in str(choices).split(","):
            assert (CONF / group / f"{choice.strip()}.yaml").is_file(), (group, choice)


def test_the_expected_matrix_expands_the_sweep_as_hydra_does():
    from qwen_evals.cli.matrix import expected_runs

    runs = expected_runs("nightly", [])
    assert sorted((r["task"], r["split"], r["model"], r["precision"]) for r in runs) == sorted(
        (task, split, "qwen-7b-chat", precision)
        for task, split in (("ceval", "val"), ("mmlu", "test"))
        for precision in ("bf16", "int8", "nf4")
    )
    narrowed = expected_runs("nightly", ["model=fake", "task=mmlu,react", "precision=bf16", "limit=5"])
    assert [(r["task"], r["protocol"], r["split"], r["model"], r["precision"]) for r in narrowed] == [
        ("mmlu", "chat_0shot", "test", "fake-oracle", "bf16"),
        ("react", "qwen_react", None, "fake-oracle", "bf16"),
    ]
