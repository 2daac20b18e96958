"""Where a run's code came from: Python and package versions, the git commit and whether it had local changes."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch", "transformers", "tokenizers", "numpy", "datasets", "accelerate", "bitsandbytes", "vllm", "flash-attn",
    "huggingface-hub", "hydra-core", "pandas",
)  # fmt: skip
OUTPUT_LIBRARIES = ("torch", "transformers", "tokenizers", "vllm")
"""Libraries whose version can change a model's output for the same request: part of every resume key."""


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """name -> installed version (None where not installed), Python's own first."""
    return {"python": platform.python_version(), **{name: package_version(name) for name in names}}


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_commit() -> str | None:
    out = _git("rev-parse", "HEAD")
    return out.strip() if out else None


def git_state() -> dict[str, Any]:
    """The checkout's commit and whether tracked or new files differ from it (None for an installed package)."""
    commit = git_commit()
    status = _git("status", "--porcelain") if commit else None
    return {"git_commit": commit, "git_dirty": None if status is None else bool(status.strip())}
