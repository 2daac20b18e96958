"""Metrics as data: what a summary number averages, over which samples, and which way is better.

A task declares its metrics (`Task.metrics()`); the report measures every one
the same way, and the analysis tools (results, compare, gate, leaderboard) read
the same declarations back from summary.json. Nothing downstream knows a
task's column names or conventions.

Both averaging conventions of the model cards are here: micro (over questions,
the MMLU card number) and macro (mean of per-subject scores, the C-Eval card
number). Each comes with its standard error and a bootstrap interval, so that
differences between runs can be judged, not just read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from qwen_evals.core import stats
from qwen_evals.core.errors import EvalError

AVERAGING = ("micro", "macro")


@dataclass(frozen=True)
class Metric:
    """A summary number: the micro or macro mean of one per-sample column.

    Args:
        name: its key in summary.json's `metrics` (a fraction; tables show points).
        column: the per-sample column of samples.jsonl it averages (booleans count 0/1).
        higher_is_better: the direction every comparison, gate and ranking uses.
        averaging: "micro" (over samples) or "macro" (unweighted mean of the means of `group`).
        group: the grouping column of a macro average (e.g. "subject").
        subset: (column, value): average only over samples whose `column` equals `value`
            (e.g. ReAct's positives for tool selection, its negatives for false positives).
        equals: count a sample as 1 when its `column` equals this value, else 0
            (e.g. the share of replies whose `parse_status` is "unparsed").
        headline: the task's leaderboard number; exactly one metric of a task has it.
        compared: besides the headline, a leaderboard column that `compare` and the gate test too
            (e.g. ReAct's false-positive rate, which a model calling tools everywhere would worsen).
        description: one line for reports.
    """

    name: str
    column: str
    higher_is_better: bool = True
    averaging: str = "micro"
    group: str | None = None
    subset: tuple[str, Any] | None = None
    equals: str | None = None
    headline: bool = False
    compared: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.averaging not in AVERAGING:
            raise ValueError(f"metric {self.name!r}: averaging {self.averaging!r} is not one of {AVERAGING}")
        if (self.averaging == "macro") != (self.group is not None):
            raise ValueError(f"metric {self.name!r}: a macro average needs a group column, a micro one none")
        if self.subset is not None:
            object.__setattr__(self, "subset", tuple(self.subset))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["subset"] = list(self.subset) if self.subset is not None else None
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "summary") -> Metric:
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise EvalError(f"{where}: not a metric declaration ({error})") from error

    # ---- which samples, which values ------------------------------------------------

    def rows(self, records: pd.DataFrame) -> pd.DataFrame:
        """The samples the metric averages over (its subset, or all)."""
        if self.subset is None:
            return records
        column, value = self.subset
        if column not in records.columns:
            raise EvalError(f"metric {self.name!r}: no per-sample column {column!r} to take its subset from")
        return records[records[column] == value]

    def values(self, rows: pd.DataFrame) -> pd.Series:
        """One float per sample (NaN where the sample has no value, e.g. hidden labels)."""
        if self.column not in rows.columns:
            raise EvalError(f"metric {self.name!r}: no per-sample column {self.column!r}")
        column = rows[self.column]
        if self.equals is not None:
            return (column == self.equals).astype(float)
        return pd.to_numeric(column.map(lambda v: float(v) if isinstance(v, bool) else v), errors="coerce")

    def groups(self, rows: pd.DataFrame) -> np.ndarray | None:
        """The macro-averaging group of each sample (None for a micro average)."""
        if self.group is None:
            return None
        if self.group not in rows.columns:
            raise EvalError(f"metric {self.name!r}: no per-sample column {self.group!r} to average over")
        return rows[self.group].astype(str).to_numpy()


@dataclass(frozen=True)
class Measurement:
    """A metric measured on a run's samples."""

    value: float | None
    stderr: float | None
    ci: tuple[float, float] | None
    n: int
    missing: str | None = None
    """Why there is no value or no interval (None when both are there)."""


def measure(metric: Metric, records: pd.DataFrame) -> Measurement:
    """Value, standard error and 95% bootstrap interval of a metric (macro: resampled within groups)."""
    rows = metric.rows(records)
    if rows.empty:
        return Measurement(None, None, None, 0, "no samples in its subset")
    values = metric.values(rows)
    absent = int(values.isna().sum())
    if absent:
        return Measurement(None, None, None, len(rows), f"{absent} of {len(rows)} samples have no {metric.column!r} value")
    groups = metric.groups(rows)
    if groups is None:
        value, stderr = mean_stderr(values.tolist())
    else:
        value, stderr = macro_mean_stderr(pd.DataFrame({"group": groups, "value": values.to_numpy()}), "group", "value")
    ci = stats.bootstrap_ci(values.to_numpy(dtype=float), groups)
    return Measurement(value, None if math.isnan(stderr) else stderr, ci, len(rows))


def measure_all(metrics: Sequence[Metric], records: pd.DataFrame) -> tuple[dict[str, Any], dict[str, str]]:
    """summary.json's `metrics` ({name, name_stderr, name_ci} per metric) and the reasons for missing ones."""
    out: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for metric in metrics:
        found = measure(metric, records)
        out[metric.name] = found.value
        out[f"{metric.name}_stderr"] = found.stderr
        if found.ci is not None:
            out[f"{metric.name}_ci"] = list(found.ci)
        if found.missing:
            missing[metric.name] = found.missing
        elif found.stderr is None:
            missing[metric.name] = "one sample: no standard error"
    return out, missing


def headline(metrics: Sequence[Metric]) -> Metric:
    """The one metric a task marks as its headline."""
    chosen = [m for m in metrics if m.headline]
    if len(chosen) != 1:
        raise ValueError(f"a task declares exactly one headline metric, found {[m.name for m in chosen]}")
    return chosen[0]


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std, ddof=1)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def macro_mean_stderr(frame: pd.DataFrame, group: str, value: str) -> tuple[float, float]:
    """Unweighted mean over groups of the per-group means, with its standard error.

    The groups are independent, so Var(mean of G means) = sum(se_g^2) / G^2.
    Groups of one item contribute no variance estimate (their se is undefined).
    """
    per_group = [mean_stderr(list(col)) for _, col in frame.groupby(group, sort=True)[value]]
    if not per_group:
        return math.nan, math.nan
    means = [m for m, _ in per_group]
    variances = [se**2 for _, se in per_group if not math.isnan(se)]
    return sum(means) / len(means), math.sqrt(sum(variances)) / len(means)
