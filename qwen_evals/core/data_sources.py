"""What data a run read: every benchmark file with its sha256, every hub dataset with its resolved commit.

The readers in `core/datafiles.py` and `core/hub.py` note each file and hub
load here while a run records (`recording()`), so the run record lists exactly
the data that was read, however a task finds its files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qwen_evals.core.fingerprint import file_sha256


@dataclass
class DataSources:
    files: dict[str, str] = field(default_factory=dict)
    """Absolute path -> sha256 of every local data file read."""
    hub: list[dict[str, Any]] = field(default_factory=list)
    """Every hub dataset or file loaded: id, config, split or file, requested revision, resolved commit."""

    def to_record(self, data_dir: str | None) -> dict[str, Any]:
        """The run record's `data` block; files under `data_dir` are named relative to it."""
        root = Path(data_dir).resolve() if data_dir else None

        def name(path: str) -> str:
            if root is not None and Path(path).is_relative_to(root):
                return str(Path(path).relative_to(root))
            return path

        return {
            "data_dir": str(root) if root else None,
            "files": {name(path): digest for path, digest in sorted(self.files.items())},
            "hub": self.hub,
        }


_current: ContextVar[DataSources | None] = ContextVar("data_sources", default=None)


@contextmanager
def recording() -> Iterator[DataSources]:
    """Collect the data read inside the block."""
    sources = DataSources()
    token = _current.set(sources)
    try:
        yield sources
    finally:
        _current.reset(token)


def note_file(path: str | Path) -> None:
    sources = _current.get()
    if sources is not None:
        resolved = str(Path(path).resolve())
        if resolved not in sources.files:
            sources.files[resolved] = file_sha256(resolved)


def note_hub(entry: dict[str, Any]) -> None:
    sources = _current.get()
    if sources is not None and entry not in sources.hub:
        sources.hub.append(entry)
