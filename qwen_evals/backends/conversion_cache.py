"""Folders built once from a source checkpoint and reused: converted Qwen (v1) copies, dequantized GGUF copies.

A folder counts only once the marker file its builder writes last is there; it
is built in a temporary folder renamed into place, under a file lock, so
parallel ranks build it once and a crash never leaves a folder that looks done.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root(cache_dir: str | Path | None) -> Path:
    """`cache_dir`, else $EVALS_CONVERTED_DIR, else ~/.cache/qwen-evals/converted."""
    return Path(cache_dir or os.environ.get("EVALS_CONVERTED_DIR") or "~/.cache/qwen-evals/converted").expanduser()


def build_once(final: Path, marker: str, build: Callable[[Path], object]) -> Path:
    """`final`, built by `build(folder)` unless a finished copy (with its `marker` file) is already there."""
    if (final / marker).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / marker).is_file():  # another process finished while we waited
            return final
        if final.exists():  # an unfinished copy (no marker): never used, replaced
            shutil.rmtree(final)
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            build(work / "out")
            os.replace(work / "out", final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return final
