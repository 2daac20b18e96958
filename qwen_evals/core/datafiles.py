"""Strict reading of the benchmarks' original files (CSV, JSON lines plain or gzipped, text, JSON).

Every problem names the file and the row or line (1-based, a CSV header not
counted) or byte offset, because a silently skipped or misread row changes a
score without a trace. Every file read is noted with its sha256 for the run
record (`core/data_sources.py`).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwen_evals.core.data_sources import note_file
from qwen_evals.core.errors import EvalError


def read_text(path: Path, what: str = "") -> str:
    """A whole data file as text: UTF-8 (a leading BOM dropped), gunzipped when it ends in .gz.

    `what` says why the file is needed, for the message when it is missing."""
    _require(path, what)
    data = path.read_bytes()
    where = ""
    if path.suffix == ".gz":
        data, where = _gunzip(path, data), " of the decompressed data"
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise EvalError(
            f"{path}: line {line} is not UTF-8 text (byte {error.start}{where}: {error.reason}); "
            "the file must be saved as UTF-8"
        ) from error


def _gunzip(path: Path, data: bytes) -> bytes:
    """The decompressed bytes of a whole gzip file, or an EvalError saying where it breaks off."""
    try:
        return gzip.decompress(data)
    except EOFError as error:
        raise EvalError(
            f"{path}: the gzip data ends early, at byte {len(data)} ({error}); the file is truncated: download it again"
        ) from error
    except (gzip.BadGzipFile, zlib.error) as error:
        raise EvalError(f"{path}: corrupt gzip data ({error}); replace the file") from error


def read_rows(path: Path, columns: Sequence[str], *, header: bool) -> list[dict[str, str]]:
    """Rows of the CSV file `path` as dicts holding exactly `columns`.

    With `header=True` the file's header must contain `columns` (extra columns
    are allowed); without one, each row must have exactly `len(columns)` fields.
    """
    with io.StringIO(read_text(path), newline="") as handle:
        reader = csv.reader(handle)
        names = list(columns)
        if header:
            found = next(reader, None)
            if found is None:
                raise EvalError(f"{path}: the file is empty (no header row)")
            missing = [c for c in columns if c not in found]
            if missing:
                raise EvalError(f"{path}: missing column(s) {missing}; header is {found}")
            positions = [found.index(c) for c in columns]
            width = len(found)
        else:
            positions = list(range(len(columns)))
            width = len(columns)
        rows = []
        for number, fields in enumerate(reader, start=1):
            if len(fields) != width:
                raise EvalError(f"{path}: row {number} has {len(fields)} fields, expected {width}")
            rows.append({name: fields[i] for name, i in zip(names, positions)})
    if not rows:
        raise EvalError(f"{path}: the file has no data rows")
    return rows


def read_jsonl(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """("<file>: line N", object) for each non-blank line of a .jsonl (or .jsonl.gz) file."""
    rows = []
    for number, line in enumerate(read_text(path).split("\n"), start=1):
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


def read_json(path: Path, what: str = "") -> Any:
    """A JSON data file (a subject mapping, a task list)."""
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as error:
        raise EvalError(f"{path}: not valid JSON ({error})") from error


def _require(path: Path, what: str = "") -> None:
    """A missing file is an error naming it; a present one is noted for the run record."""
    if not path.is_file():
        raise EvalError(f"Missing data file: {path}" + (f" ({what})" if what else ""))
    note_file(path)
