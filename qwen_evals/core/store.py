"""Crash-safe, append-only store of finished requests, keyed by content.

Each finished request is one JSON line: {"key", "result"}. The key hashes
everything that determines the answer (the model's identity, the request),
never the process layout, so a rerun after a crash reuses what is there with
any number of processes or shards. Every process appends to its own file
(`requests.<host>-<pid>.jsonl`) and all files of a folder are read back together.

A process killed mid-write leaves at most one partial last line: it is
detected and counted, never read as a result. Any other line that is not a
stored result (undecodable bytes, bad JSON, no key) is an error naming the
file, line and byte offset. `append` is safe from many threads (a backend's
workers store each answer as it arrives).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError

PATTERN = "requests.*.jsonl"


def request_key(identity: dict[str, Any], request: Any) -> str:
    """sha256 over the backend's identity and the request (prompt, settings)."""
    payload = json.dumps(
        [identity, type(request).__name__, repr(request)], sort_keys=True, ensure_ascii=False, default=str
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RequestStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"requests.{socket.gethostname()}-{os.getpid()}.jsonl"
        self.dropped_partial_lines = 0
        self.results: dict[str, Any] = {}
        self._origins: dict[str, str] = {}
        self._lock = threading.Lock()
        for path in sorted(folder.glob(PATTERN)):
            self._read(path)

    def origin(self, key: str) -> str:
        """Where a stored result came from ("<file>: line N"), for errors about it."""
        return self._origins.get(key, f"{self.path} (written by this run)")

    def _read(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        offset = 0
        for number, line in enumerate(complete, start=1):
            try:
                record = json.loads(line)  # bytes: undecodable ones raise UnicodeDecodeError, a ValueError
                key, result = record["key"], record["result"]
                if not isinstance(key, str):
                    raise TypeError(f"the key is {type(key).__name__}, not a string")
            except (ValueError, KeyError, TypeError) as error:
                at = offset + getattr(error, "start", 0)
                raise EvalError(
                    f"{path}: line {number} (byte {at}) is not a stored result ({error}); delete it to recompute"
                ) from error
            self.results[key] = result
            self._origins[key] = f"{path}: line {number}"
            offset += len(line) + 1
        if tail:
            # A write cut off by a kill: no newline yet, so it never completed. Files
            # are never appended to by a later process, so the tail is simply ignored.
            self.dropped_partial_lines += 1

    def append(self, items: Iterable[tuple[str, Any]], *, sync: bool = True) -> None:
        """Append finished results, written through to the OS before returning (a crash or kill of this process
        loses none of them); `sync` also forces them onto the disk (`sync()` does that for earlier appends)."""
        lines = [json.dumps({"key": key, "result": result}, ensure_ascii=False) + "\n" for key, result in items]
        if not lines:
            return
        with self._lock:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("".join(lines))
                handle.flush()
                if sync:
                    os.fsync(handle.fileno())
            for line in lines:
                record = json.loads(line)
                self.results[record["key"]] = record["result"]

    def sync(self) -> None:
        """Force every appended result onto the disk (an OS crash or power loss then loses none)."""
        with self._lock:
            if self.path.exists():
                with self.path.open("rb") as handle:
                    os.fsync(handle.fileno())
