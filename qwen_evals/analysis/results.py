"""The results store: every finished run (a folder with summary.json) as one DataFrame row.

Identity fields (task, protocol, split, model, revision, precision) are read from
summary.json, never parsed back out of folder names: a run can live anywhere. The
checkpoint is its record's label and weights fingerprint (`checkpoint`, e.g.
`checkpoint-1000@3fa2b1c4`), so two checkpoints of one name never merge; a run
is `partial` when its record says so (a `limit`, chosen subjects).

Each run's *main metric* is the headline of the metric declarations its task
wrote into summary.json (`metric_declarations`, `main_metric`; see
qwen_evals.core.metrics): the column it averages, the subset and averaging, and
its direction. The per-sample values decide the paired test: 0/1 values
(right/wrong) get McNemar's exact test, anything else a paired bootstrap.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import Metric
from qwen_evals.core.record import SAMPLES_FILE, SUMMARY_FILE

# Display names, in the card's column order.
TASK_LABELS = {
    "ceval": "C-Eval",
    "mmlu": "MMLU",
    "gsm8k": "GSM8K",
    "humaneval": "HumanEval",
    "vcsum": "VCSUM",
    "react": "ReAct",
    "hfagent": "HF Agent",
}
PRECISION_ORDER = ("fp32", "bf16", "fp16", "int8", "nf4")
SUMMARY_FIELDS = ("task", "protocol", "split", "model", "model_revision", "precision")
"""Identity fields read as they are from summary.json."""
KEY_FIELDS = ("task", "protocol", "split", "checkpoint", "model_revision", "precision")
"""One measurement of one checkpoint: runs equal in these are re-runs of each other."""


def declared_metrics(summary: dict[str, Any], where: str = "summary") -> dict[str, Metric]:
    """name -> Metric, from the declarations a run's summary.json carries."""
    raw = summary.get("metric_declarations")
    if not isinstance(raw, list) or not raw:
        raise EvalError(
            f"{where}: no metric declarations (written by an older version of the suite); re-run the evaluation"
        )
    return {m.name: m for m in (Metric.from_dict(item, where) for item in raw)}


def main_metric(summary: dict[str, Any], where: str = "summary") -> Metric:
    """The run's headline metric."""
    declared = declared_metrics(summary, where)
    name = summary.get("main_metric")
    if name not in declared:
        raise EvalError(f"{where}: main_metric {name!r} is not among its declared metrics {sorted(declared)}")
    return declared[name]


def compared_metrics(summary: dict[str, Any], where: str = "summary") -> list[Metric]:
    """The metrics leaderboards show and comparisons test: the headline first, then those marked `compared`."""
    head = main_metric(summary, where)
    return [head] + [m for m in declared_metrics(summary, where).values() if m.compared and m != head]


def metric_points(run: pd.Series | dict[str, Any], name: str) -> tuple[float, float, float]:
    """A metric of a run in points: value and 95% CI (bootstrap; else +-1.96 stderr; NaN when absent)."""
    metrics = run["metrics"]
    value, stderr, ci = _number(metrics.get(name)), _number(metrics.get(f"{name}_stderr")), metrics.get(f"{name}_ci")
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and None not in ci:
        low, high = float(ci[0]), float(ci[1])
    elif not math.isnan(stderr):
        low, high = value - 1.96 * stderr, value + 1.96 * stderr
    else:
        low = high = math.nan
    return 100 * value, 100 * low, 100 * high


def find_summaries(paths: Iterable[str | Path]) -> list[Path]:
    """Every summary.json under the given run folders / result roots (or the files themselves)."""
    found: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == SUMMARY_FILE:
            found.add(path.resolve())
        elif path.is_dir():
            found.update(p.resolve() for p in path.rglob(SUMMARY_FILE))
        else:
            raise EvalError(f"{path}: no such results folder or summary.json")
    return sorted(found)


def read_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise EvalError(f"{path}: unreadable summary ({error})") from error
    missing = [f for f in ("task", "model", "metrics") if f not in summary]
    if missing:
        raise EvalError(f"{path}: not a run summary (missing {missing})")
    return summary


def load_runs(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per run: identity, main metric in points with stderr and 95% CI, cost, provenance.

    The object columns `metrics`, `tables` and `summary` keep the full summary for
    views that need more than the headline.
    """
    paths = list(paths)
    rows = [run_row(path.parent, read_summary(path), str(path)) for path in find_summaries(paths)]
    if not rows:
        raise EvalError(f"no summary.json found under {[str(p) for p in paths]}")
    frame = pd.DataFrame(rows)
    for field in (*SUMMARY_FIELDS, "checkpoint", "label"):  # missing identity fields are None (not NaN): they compare equal
        frame[field] = frame[field].astype(object).where(frame[field].notna(), None)
    return frame


def run_row(run_dir: Path, summary: dict[str, Any], where: str = "summary") -> dict[str, Any]:
    compared = compared_metrics(summary, where)
    spec = compared[0]
    metrics = summary.get("metrics") or {}
    score, low, high = metric_points({"metrics": metrics}, spec.name)
    run = summary.get("run") or {}
    model = run.get("model") or {}
    config = summary.get("config") or {}
    return {
        "run_dir": str(run_dir),
        **{field: summary.get(field) for field in SUMMARY_FIELDS},
        "run_id": run.get("id"),
        "label": model.get("label") or summary.get("model"),
        "weights_sha256": model.get("weights_sha256"),
        "checkpoint": checkpoint_name(model.get("label") or summary.get("model"), model, summary.get("model_revision")),
        "partial": run["partial"] if "partial" in run else config.get("limit") is not None,
        "limit": run["limit"] if "limit" in run else config.get("limit"),
        "metric": spec.name,
        "metric_column": spec.column,
        "higher_is_better": spec.higher_is_better,
        "metric_spec": spec,
        "compared_metrics": compared,
        "score": score,
        "stderr": 100 * _number(metrics.get(f"{spec.name}_stderr")),
        "ci_low": low,
        "ci_high": high,
        "unparsed_rate": _number(metrics.get("unparsed_rate")),
        "n_samples": summary.get("n_samples"),
        "wall_seconds": _number(summary.get("wall_seconds")),
        "tokens_per_second": _number(summary.get("tokens_per_second")),
        **memory_columns(summary.get("memory") or {}),
        "data_fingerprint": summary.get("data_fingerprint"),
        "generation_fingerprint": (summary.get("fingerprints") or {}).get("generation"),
        "git_commit": (run.get("provenance") or {}).get("git_commit", summary.get("git_commit")),
        "finished_at": summary.get("finished_at"),
        "metrics": metrics,
        "tables": summary.get("tables") or {},
        "summary": summary,
    }


def memory_columns(memory: dict[str, Any]) -> dict[str, Any]:
    """The run's `memory` block in GiB: weights, peak after loading, and the device the peak was measured on.

    A CUDA peak is what tensors took (`torch.cuda.max_memory_allocated`), a CPU
    peak the whole process's resident set (`memory.measure`); an absent block
    (fake or served backends) gives NaN.
    """
    return {
        "weights_gb": _number(memory.get("weights_bytes")) / 2**30,
        "peak_memory_gb": _number(memory.get("peak_bytes")) / 2**30,
        "memory_device": memory.get("device"),
    }


def checkpoint_name(label: str, model: dict[str, Any], revision: str | None) -> str:
    """`label@<weights sha256, else hub commit, else revision>` (short), or the label alone when none is known."""
    tag = model.get("weights_sha256") or model.get("commit") or revision
    return f"{label}@{str(tag)[:8]}" if tag else str(label)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def latest(runs: pd.DataFrame, by: Iterable[str] = KEY_FIELDS) -> pd.DataFrame:
    """One run of each identity: the most recently finished complete run, else the latest partial one.

    A smoke run (`limit`, chosen subjects) never hides a complete run of the same checkpoint.
    """
    by = list(by)
    ordered = runs.assign(_t=runs["finished_at"].fillna(""), _full=~runs["partial"].fillna(False).astype(bool))
    ordered = ordered.sort_values(["_full", "_t", "run_dir"])
    kept = ordered.drop_duplicates(_keys(ordered, by), keep="last").sort_values(["_t", "run_dir"])
    return kept.drop(columns=["_t", "_full"]).reset_index(drop=True)


SETTING_FIELDS = (*KEY_FIELDS, "data_fingerprint", "generation_fingerprint", "limit")
"""Runs equal in these measured the same thing the same way: repeats, aggregated on the leaderboard."""


def _keys(frame: pd.DataFrame, by: list[str]) -> list[str]:
    return [c for c in by if c in frame.columns]


def identity(row: pd.Series | dict[str, Any], fields: Iterable[str]) -> tuple[str, ...]:
    """A hashable key of a run's fields; missing values (None, NaN) read as ""."""
    return tuple("" if _missing(row.get(f)) else str(row.get(f)) for f in fields)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def model_label(row: pd.Series | dict[str, Any]) -> str:
    """`checkpoint (precision)`: the label with its weights fingerprint (or revision), and the precision."""
    precision = row.get("precision")
    name = str(row["checkpoint"]) if not _missing(row.get("checkpoint")) else str(row["model"])
    return name if _missing(precision) or not precision else f"{name} ({precision})"


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def precision_rank(precision: str | None) -> int:
    return PRECISION_ORDER.index(precision) if precision in PRECISION_ORDER else len(PRECISION_ORDER)


def load_samples(run_dir: str | Path) -> pd.DataFrame:
    """A run's samples.jsonl, one row per sample, column types as written (ids stay strings)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        raise EvalError(f"{run_dir}: no {SAMPLES_FILE} (per-sample records are needed here)")
    with path.open(encoding="utf-8") as file:
        rows = [json.loads(line) for line in file if line.strip()]
    frame = pd.DataFrame(rows)
    if "id" not in frame.columns:
        raise EvalError(f"{path}: records have no 'id' field")
    frame["id"] = frame["id"].astype(str)
    return frame


def metric_samples(samples: pd.DataFrame, metric: Metric, where: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """(the metric's rows, their values as floats, their macro groups); a sample without a value is an error."""
    try:
        rows = metric.rows(samples)
        values = metric.values(rows)
        groups = metric.groups(rows)
    except EvalError as error:
        raise EvalError(f"{where}: {error}") from error
    if values.isna().any():
        raise EvalError(f"{where}: {int(values.isna().sum())} samples have no {metric.column!r} value (hidden labels?)")
    return rows, values.to_numpy(dtype=float), groups
