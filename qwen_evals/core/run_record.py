"""The `run` block of summary.json: what exactly ran, so that two records compare only when they measured the same thing.

    run.id                 unique per run (UTC time + random suffix); shard files carry it
    run.model              label (default: the path's last component), step, path, the hub commit it
                           resolved to, the sha256 of its weight files, what it was converted from
    run.provenance         git commit and dirty flag, Python and package versions, CUDA, driver, GPU
    run.data               data_dir and the sha256 of every file read, or the hub datasets and commits
    run.chat_template      how chat prompts were rendered: format, the template's sha256, system prompt
    run.generation         the requests' generation settings, and what the backend applied
    run.limit, run.restrictions, run.partial
                           a run is partial when `limit` is set or the task left samples out
                           (e.g. chosen subjects); partial runs never stand beside the card
    run.setup              sha256 of the composed config (shard index aside), code and versions
    run.shards             which run wrote each merged shard (sharded runs only)
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from qwen_evals.core.backend import Backend
from qwen_evals.core.errors import EvalError
from qwen_evals.core.provenance import git_state, package_versions
from qwen_evals.core.task import Task

SCHEMA_VERSION = 2
"""summary.json's layout: 2 adds the `run` block and the per-facet `fingerprints`."""


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


@dataclass
class RunContext:
    """What the caller of a run knows beyond the task, the backend and the results."""

    id: str = field(default_factory=new_run_id)
    label: str | None = None
    """The checkpoint's name in tables (default: the last component of its path, else the backend's name)."""
    step: int | None = None
    """The training step of the checkpoint, where the user states it."""
    data: dict[str, Any] | None = None
    """The data files and hub datasets read (`DataSources.to_record`); None when not recorded."""
    setup: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    shards: list[dict[str, Any]] | None = None


def default_label(checkpoint: dict[str, Any], backend_name: str) -> str:
    path = checkpoint.get("path")
    return Path(str(path).rstrip("/")).name if path else backend_name


def run_block(
    context: RunContext,
    task: Task,
    backend: Backend,
    described: dict[str, Any],
    limit: int | None,
    generation: list[dict[str, Any]],
) -> dict[str, Any]:
    """`described` is the backend's `describe()`, taken once for the whole summary."""
    checkpoint = backend.checkpoint()
    restrictions = task.restrictions()
    block: dict[str, Any] = {
        "id": context.id,
        "model": {
            "label": context.label or default_label(checkpoint, backend.name),
            "step": context.step,
            "name": backend.name,
            **checkpoint,
        },
        "provenance": {**git_state(), "versions": package_versions(), **context.hardware},
        "data": context.data,
        "chat_template": backend.chat_template(),
        "generation": {
            "requests": generation,
            **({"backend": described["generation"]} if "generation" in described else {}),
        },
        "limit": limit,
        "restrictions": restrictions,
        "partial": limit is not None or bool(restrictions),
        "setup": context.setup,
    }
    if context.shards is not None:
        block["shards"] = context.shards
    return block


def refuse_finished(out_dir: Path, summary_file: str) -> None:
    """A folder that holds a finished run is never written into again."""
    summary = out_dir / summary_file
    if summary.exists():
        try:
            finished = json.loads(summary.read_text(encoding="utf-8")).get("run", {}).get("id") or "no run id"
        except (OSError, ValueError, AttributeError):
            finished = "unreadable"
        raise EvalError(
            f"{out_dir} already holds a finished run ({summary_file}: {finished}); a run never overwrites another: "
            "choose another output_dir, or move that run away"
        )
