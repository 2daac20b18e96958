"""The installed package works outside a checkout: configs and data ship in the wheel, `qwen-evals` is a command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO

SKIPPED = (".git", ".venv", "build", "dist", "results", "outputs", "multirun", "*.egg-info", "__pycache__", ".*cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the built wheel (no editable install); third-party packages come from this venv."""
    root = tmp_path_factory.mktemp("wheel")
    # Built from a copy: setuptools never removes stale files from an in-tree build/ folder.
    source = shutil.copytree(REPO, root / "source", ignore=shutil.ignore_patterns(*SKIPPED))
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    env = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(env), "platbase": str(env)}))
    # Dependencies (torch, transformers, hydra...) from the test environment, but not its editable qwen_evals.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    [wheel] = dist.glob("qwen_evals-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install", "-q", "--no-deps", str(wheel)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return env


def test_the_wheel_ships_configs_data_and_the_command(installed, shared_data, tmp_path):
    where = subprocess.run(
        [installed / "bin" / "python", "-c", "import qwen_evals, sys; print(qwen_evals.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(installed), where  # the installed copy, not the checkout
    out = tmp_path / "run"
    done = subprocess.run(
        [installed / "bin" / "qwen-evals", "run", "model=fake", "task=mmlu", f"data_dir={shared_data}", "limit=1",
         "resume=false", f"output_dir={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["task"], summary["n_samples"], summary["metrics"]["accuracy"]) == ("mmlu", 57, 1.0)
    react = subprocess.run(  # package data: the builtin ReAct exam
        [installed / "bin" / "qwen-evals", "run", "model=fake", "task=react", "limit=1", "resume=false",
         f"output_dir={tmp_path / 'react'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert react.returncode == 0, react.stderr[-3000:]
    assert json.loads((tmp_path / "react" / "summary.json").read_text())["n_samples"] == 2
    usage = subprocess.run([installed / "bin" / "qwen-evals", "--help"], capture_output=True, text=True)
    assert usage.returncode == 0 and all(c in usage.stdout for c in ("run", "leaderboard", "compare", "gate", "convert"))
