"""sha256 of files and texts, each file hashed once while it stays the same file.

A checkpoint's identity is the sha256 of its weight files' contents, and a 15 GB
checkpoint cannot be read again on every run. A file's digest is cached under
`$EVALS_HASH_CACHE` (default `~/.cache/qwen-evals/sha256`), one small file per
entry keyed by the file's absolute path, size, modification time, inode and
change time: a file rewritten in place, even with its old size and mtime
restored, gets a new change time and is hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from qwen_evals.core.errors import EvalError

CHUNK = 1 << 20
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt", ".h5", ".msgpack")
"""Files whose contents are a checkpoint's weights (index files only say where tensors are)."""


def cache_dir() -> Path:
    return Path(os.environ.get("EVALS_HASH_CACHE") or Path.home() / ".cache" / "qwen-evals" / "sha256")


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def json_sha256(value: object) -> str:
    """sha256 of a JSON value, keys sorted (equal values, equal digests)."""
    return text_sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's contents, from the cache while the file is unchanged."""
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except OSError as error:
        raise EvalError(f"cannot read {path} to fingerprint it: {error}") from error
    key = text_sha256(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}")
    entry = cache_dir() / key[:2] / key
    if entry.is_file():
        cached = entry.read_text(encoding="ascii").strip()
        if len(cached) == 64:
            return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            digest.update(block)
    value = digest.hexdigest()
    _store(entry, value)
    return value


def _store(entry: Path, value: str) -> None:
    """Write a cache entry atomically; a cache that cannot be written only costs a re-hash next time."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(value, encoding="ascii")
        partial.replace(entry)
    except OSError:
        pass


def combined_sha256(digests: Mapping[str, str]) -> str:
    """One digest for named files: sha256 over `name sha256` lines in name order."""
    return text_sha256("".join(f"{name} {digests[name]}\n" for name in sorted(digests)))


def weight_files(location: str | Path, only: str | None = None) -> list[Path]:
    """The weight files of a checkpoint folder (or `only` that file in it, e.g. one GGUF)."""
    folder = Path(location)
    if only:
        return [folder / only]
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_sha256(files: Iterable[Path]) -> tuple[str | None, dict[str, str]]:
    """(combined digest, name -> sha256) of weight files; (None, {}) when there are none."""
    digests = {path.name: file_sha256(path) for path in files}
    return (combined_sha256(digests) if digests else None), digests
