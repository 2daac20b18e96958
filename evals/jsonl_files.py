"""Strict reading of JSON-lines data files (GSM8K, HumanEval, VCSum, exam files).

Every problem names the file and the line, like evals/csv_files.py does for CSV.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from evals.errors import EvalError


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """("<file>: line N", object) for each non-blank line of a .jsonl (or .jsonl.gz) file."""
    if not path.is_file():
        raise EvalError(f"Missing data file: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}: line {number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise EvalError(f"{where} is not valid JSON ({error.msg} at column {error.colno})") from error
            if not isinstance(row, dict):
                raise EvalError(f"{where} is not a JSON object")
            rows.append((where, row))
    if not rows:
        raise EvalError(f"{path}: the file has no data rows")
    return rows
