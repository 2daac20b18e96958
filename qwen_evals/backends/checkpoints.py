"""A loaded checkpoint's identity: the sha256 of its weight files, wherever they were read from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwen_evals.core.fingerprint import weight_files, weights_sha256


def local_folder(path: str, commit: str | None) -> Path | None:
    """The folder holding a checkpoint's files: `path` itself, or the hub cache's snapshot of `commit`."""
    if Path(path).exists():
        return Path(path)
    if not commit:
        return None
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path, revision=commit, local_files_only=True))
    except Exception:  # not in the cache as a whole: the record keeps the commit, without a weights digest
        return None


def weights_identity(path: str, commit: str | None, gguf_file: str | None = None) -> dict[str, Any]:
    """`weights_sha256` (one digest over the weight files) and `weight_files` (each file's sha256)."""
    folder = local_folder(path, commit)
    if folder is None:
        return {"weights_sha256": None, "weight_files": {}}
    combined, files = weights_sha256(weight_files(folder, gguf_file))
    return {"weights_sha256": combined, "weight_files": files}
