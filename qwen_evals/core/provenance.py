"""Where a run's code came from: package versions and the git commit."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

TRACKED_PACKAGES = ("torch", "transformers", "datasets", "accelerate", "bitsandbytes", "flash-attn", "hydra-core", "pandas")


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()
