"""Crash-safe, append-only store of finished requests, keyed by content.

Each finished request is one JSON line: {"key", "result"}. The key hashes
everything that determines the answer (the model's identity, the request),
never the process layout, so a rerun after a crash reuses what is there with
any number of processes or shards. Every process appends to its own file
(`requests.<host>-<pid>.jsonl`) and all files of a folder are read back together.

A process killed mid-write leaves at most one partial last line: it is
detected and counted, never read as a result.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError

PATTERN = "requests.*.jsonl"


def request_key(identity: dict[str, Any], request: Any) -> str:
    """sha256 over the backend's identity and the request (prompt, settings)."""
    payload = json.dumps([identity, type(request).__name__, repr(request)], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class RequestStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"requests.{socket.gethostname()}-{os.getpid()}.jsonl"
        self.dropped_partial_lines = 0
        self.results: dict[str, Any] = {}
        for path in sorted(folder.glob(PATTERN)):
            self._read(path)

    def _read(self, path: Path) -> None:
        data = path.read_bytes()
        lines = data.split(b"\n")
        complete, tail = lines[:-1], lines[-1]
        for number, line in enumerate(complete, start=1):
            try:
                record = json.loads(line)
                self.results[record["key"]] = record["result"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise EvalError(f"{path}: line {number} is not a stored result ({error}); delete the file to recompute") from error
        if tail:
            # A write cut off by a kill: no newline yet, so it never completed. Files
            # are never appended to by a later process, so the tail is simply ignored.
            self.dropped_partial_lines += 1

    def append(self, items: Iterable[tuple[str, Any]]) -> None:
        """Append finished results and flush them to disk before returning."""
        lines = [json.dumps({"key": key, "result": result}, ensure_ascii=False) + "\n" for key, result in items]
        if not lines:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
        for line in lines:
            record = json.loads(line)
            self.results[record["key"]] = record["result"]
