"""Hugging Face hub access that fails fast and says how to work offline.

`datasets` and `transformers` retry an unreachable hub for tens of seconds and
then raise errors that do not mention the local alternative. Every hub load in
the suite goes through here instead. Before any work, a run lists every hub
resource it will need (`HubResource`) and, offline, fails once naming them all
(`require_hub_resources`). Each load is noted, with the commit it resolved to,
for the run record (`core/data_sources.py`).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from qwen_evals.core.data_sources import note_hub
from qwen_evals.core.errors import EvalError

CONNECT_TIMEOUT_S = 3.0


def _hub_offline_reason() -> str | None:
    """None when the hub answers a TCP connect, else why it cannot be used."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=CONNECT_TIMEOUT_S):
            return None
    except OSError as error:
        return f"{endpoint.hostname} is unreachable ({error})"


@dataclass(frozen=True)
class HubResource:
    """Something a run would fetch from the hub, and the override that points at a local copy instead."""

    kind: str
    """"model" or "dataset"."""
    repo_id: str
    local_option: str
    """e.g. "data_dir=<dir with MMLU csv files>" or "model.path=<local model dir>"."""


def require_hub_resources(resources: Sequence[HubResource]) -> None:
    """One EvalError naming every resource when the hub cannot be reached (nothing happens online)."""
    if not resources:
        return
    reason = _hub_offline_reason()
    if reason is None:
        return
    wanted = "".join(f"\n  - the {r.kind} '{r.repo_id}': point {r.local_option} at a local copy" for r in resources)
    raise EvalError(f"This run needs the Hugging Face hub, but {reason}. It would fetch:{wanted}")


def require_hub(what: str, repo_id: str, local_option: str) -> None:
    """Raise a clear EvalError unless the hub can be reached.

    Args:
        what: "dataset" or "model", for the message.
        repo_id: the hub id that was needed.
        local_option: the override that points at a local copy, e.g. "data_dir=<dir>".
    """
    reason = _hub_offline_reason()
    if reason is not None:
        raise EvalError(
            f"The {what} '{repo_id}' must come from the Hugging Face hub, but {reason}. "
            f"Point {local_option} at a local copy instead."
        )


def load_hub_dataset(repo_id: str, name: str | None, split: str, revision: str, local_option: str) -> Any:
    """`datasets.load_dataset` of one split, pinned to `revision`, with readable failures."""
    require_hub("dataset", repo_id, local_option)
    import datasets

    try:
        data = datasets.load_dataset(repo_id, name, split=split, revision=revision)
    except Exception as error:  # datasets raises many unrelated types; all mean "could not load"
        raise EvalError(
            f"Could not load dataset '{repo_id}' (config {name!r}, split {split!r}, revision {revision!r}): "
            f"{error}. Point {local_option} at a local copy instead."
        ) from error
    note_hub({"dataset": repo_id, "config": name, "split": split, "revision": revision, "commit": _dataset_commit(repo_id, revision)})
    return data


@functools.cache
def _dataset_commit(repo_id: str, revision: str) -> str | None:
    """The commit a dataset revision resolves to (None when the hub does not say)."""
    from huggingface_hub import HfApi

    try:
        return HfApi().dataset_info(repo_id, revision=revision).sha
    except Exception:  # the record then says the commit is unknown; the data itself was loaded
        return None


def snapshot_commit(path: Path) -> str | None:
    """The commit of a file in the huggingface_hub cache (`.../snapshots/<commit>/<file>`)."""
    parts = path.parts
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def download_hub_file(repo_id: str, filename: str, repo_type: str, revision: str, local_option: str) -> Path:
    """One file of a hub repository (cached by huggingface_hub), with readable failures."""
    require_hub(repo_type, repo_id, local_option)
    from huggingface_hub import hf_hub_download

    try:
        path = Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision))
    except Exception as error:  # network, auth and missing-file errors all mean "could not download"
        raise EvalError(
            f"Could not download {filename} from the {repo_type} '{repo_id}' (revision {revision!r}): {error}. "
            f"Point {local_option} at a local copy instead."
        ) from error
    note_hub({repo_type: repo_id, "file": filename, "revision": revision, "commit": snapshot_commit(path)})
    return path
