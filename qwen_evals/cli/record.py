"""What the command line adds to a run's record: the machine, the setup fingerprint, and a folder per multirun job."""

from __future__ import annotations

import hashlib
import re
import subprocess
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from qwen_evals.core.fingerprint import json_sha256
from qwen_evals.core.provenance import git_state, package_versions

FOLDER_CHARS = re.compile(r"[^A-Za-z0-9._,=+-]+")
MAX_FOLDER = 120


def hardware() -> dict[str, Any]:
    """CUDA version of torch, the NVIDIA driver and the GPU names (None where there are none)."""
    import torch

    facts: dict[str, Any] = {"cuda": torch.version.cuda, "driver": None, "gpus": None}
    if torch.cuda.is_available():
        facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        facts["driver"] = _driver_version()
    return facts


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def setup_fingerprint(config: dict[str, Any]) -> str:
    """sha256 of everything a run was told and ran with: the composed config (shard index aside), code, versions.

    Every shard job of one sharded run has the same; a shard file of other settings is stale.
    """
    shared = {**config, "shard": {k: v for k, v in (config.get("shard") or {}).items() if k != "index"}}
    return json_sha256({"config": shared, "git": git_state(), "versions": package_versions()})


def job_folder() -> str:
    """"" in a single run; in a multirun, "/" + the job's overrides (shard.index and paths aside).

    The default output_dir ends with it, so that the jobs of a sweep never share a
    folder while the shard jobs of one sharded run do.
    """
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return ""
    name = FOLDER_CHARS.sub("_", HydraConfig.get().job.override_dirname) or "job"
    if len(name) > MAX_FOLDER:  # a path component has at most 255 bytes
        name = name[: MAX_FOLDER - 9] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return "/" + name


def register_job_folder() -> None:
    if not OmegaConf.has_resolver("job_folder"):
        OmegaConf.register_new_resolver("job_folder", job_folder)
