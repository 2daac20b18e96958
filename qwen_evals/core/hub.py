"""Hugging Face hub access that fails fast and says how to work offline.

`datasets` and `transformers` retry an unreachable hub for tens of seconds and
then raise errors that do not mention the local alternative. Every hub load in
the suite goes through here instead.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
        return datasets.load_dataset(repo_id, name, split=split, revision=revision)
    except Exception as error:  # datasets raises many unrelated types; all mean "could not load"
        raise EvalError(
            f"Could not load dataset '{repo_id}' (config {name!r}, split {split!r}, revision {revision!r}): "
            f"{error}. Point {local_option} at a local copy instead."
        ) from error


def download_hub_file(repo_id: str, filename: str, repo_type: str, revision: str, local_option: str) -> Path:
    """One file of a hub repository (cached by huggingface_hub), with readable failures."""
    require_hub(repo_type, repo_id, local_option)
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id, filename, repo_type=repo_type, revision=revision))
    except Exception as error:  # network, auth and missing-file errors all mean "could not download"
        raise EvalError(
            f"Could not download {filename} from the {repo_type} '{repo_id}' (revision {revision!r}): {error}. "
            f"Point {local_option} at a local copy instead."
        ) from error
