"""A run's files on disk: samples.jsonl (one line per sample) and summary.json (written last).

A summary.json means a complete run: it is written after everything else, and
every file is written to a temporary name and renamed into place, so a killed
run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError

SAMPLES_FILE = "samples.jsonl"
SUMMARY_FILE = "summary.json"


def atomic_write(path: Path, text: str, exclusive: bool = False) -> None:
    """Write `text` to a temporary file and move it into place; `exclusive`: never replace an existing file."""
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(text)
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails when `path` exists, atomically (a rename would replace it)
    except FileExistsError:
        raise EvalError(f"{path} appeared while this run was writing (another run finished into the same folder)") from None
    finally:
        os.unlink(tmp)


def plain(value: Any) -> Any:
    """JSON-safe copy: numpy/pandas scalars to Python, NaN to None, dict keys to str."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_json(path: Path, value: Any, exclusive: bool = False) -> None:
    atomic_write(path, json.dumps(plain(value), ensure_ascii=False, indent=2) + "\n", exclusive)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write(path, "".join(json.dumps(plain(row), ensure_ascii=False) + "\n" for row in rows))
