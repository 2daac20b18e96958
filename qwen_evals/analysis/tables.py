"""The leaderboard's tables as DataFrames: checkpoints x tasks, precision (quantization), categories.

Rows are checkpoints (label and weights fingerprint) at a precision; columns are
the metrics each run's task declared for comparison (its headline, and any marked
`compared`), in points with the 95% CI, each with the run's sample count `n`; a
lower-is-better metric is marked with a down arrow in its column label. A cell
shows the latest complete run (a partial one only when there is none, marked
"partial"); repeats of the same measurement (same checkpoint, settings, data and
prompts) add their mean, standard deviation and count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from qwen_evals.analysis.card import Card
from qwen_evals.analysis.compare import compare_pair
from qwen_evals.analysis.results import (
    SETTING_FIELDS,
    TASK_LABELS,
    identity,
    latest,
    metric_points,
    model_label,
    precision_rank,
    task_label,
)
from qwen_evals.core.errors import EvalError

ROW_FIELDS = ["checkpoint", "precision"]


@dataclass(frozen=True)
class Column:
    task: str
    protocol: str | None
    split: str | None
    metric: str
    higher_is_better: bool
    label: str

    def selects(self, run: pd.Series) -> bool:
        same_task = (run["task"], run["protocol"], run["split"]) == (self.task, self.protocol, self.split)
        return same_task and any(m.name == self.metric for m in run["compared_metrics"])


def task_columns(current: pd.DataFrame) -> list[Column]:
    """One column per (task, protocol, split, compared metric), labelled like the card; qualifiers only where needed.

    A task's headline comes first; a lower-is-better metric's label ends in a down arrow.
    """
    keys = pd.DataFrame(
        [
            {"task": run["task"], "protocol": run["protocol"], "split": run["split"], "metric": m.name,
             "higher_is_better": m.higher_is_better, "_secondary": m.name != run["metric"]}
            for _, run in current.iterrows()
            for m in run["compared_metrics"]
        ]  # fmt: skip
    ).drop_duplicates(["task", "protocol", "split", "metric"])
    order = list(TASK_LABELS)
    keys = keys.assign(_rank=keys["task"].map(lambda t: order.index(t) if t in order else len(order)))
    keys = keys.sort_values(["_rank", "task", "protocol", "split", "_secondary"], na_position="first", kind="stable")
    columns = []
    for task, group in keys.groupby("task", sort=False):
        varying = [f for f in ("protocol", "split", "metric") if group[f].nunique(dropna=False) > 1]
        for row in group.itertuples():
            extra = " ".join(str(getattr(row, f)) for f in varying) + ("" if row.higher_is_better else " ↓")
            label = f"{task_label(task)} {extra}".strip()
            columns.append(Column(task, row.protocol, row.split, row.metric, row.higher_is_better, label))
    return columns


def _row_order(frame: pd.DataFrame) -> pd.DataFrame:
    ordered = frame.assign(_p=frame["precision"].map(precision_rank)).sort_values(["label", "checkpoint", "_p"])
    return ordered.drop(columns="_p")


def leaderboard(runs: pd.DataFrame, card: Card | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numeric, display): checkpoints as rows, task columns in points with `<column> n`; display cells read
    `54.2 ± 1.3`, `30.7 ± 8.8 (partial)`, or `54.2 ± 1.3; mean 54.0, sd 0.3 over 3 runs`."""
    current = latest(runs)
    columns = task_columns(current)
    rows = _row_order(current[["label", *ROW_FIELDS]].drop_duplicates(ROW_FIELDS))
    settings = runs.apply(lambda run: identity(run, SETTING_FIELDS), axis=1)
    keys = current.apply(lambda run: identity(run, ROW_FIELDS), axis=1)
    numeric, display = [], []
    for row in rows.to_dict(orient="records"):
        mine = current[keys == identity(row, ROW_FIELDS)]
        values = {"model": row["label"], "checkpoint": row["checkpoint"], "precision": row["precision"]}
        cells = {"model": model_label(row)}
        for column in columns:
            hit = mine[mine.apply(column.selects, axis=1)]
            run = hit.iloc[-1] if not hit.empty else None
            repeats = runs.iloc[:0] if run is None else runs[settings == identity(run, SETTING_FIELDS)]
            cell_values, cells[column.label], cells[f"{column.label} n"] = _column_cell(run, repeats, column.metric)
            values.update({f"{column.label}{suffix}": v for suffix, v in cell_values.items()})
        numeric.append(values)
        display.append(cells)
    if card is not None:
        refs = {c.label: card.headline(c.task, c.protocol, c.split, c.metric) for c in columns}
        if any(v is not None for v in refs.values()):
            numeric.append({"model": card.model, "checkpoint": f"card {card.card_revision}", "precision": "bf16",
                            **{k: math.nan if v is None else v for k, v in refs.items()}})  # fmt: skip
            display.append({"model": card.name, **{k: "" if v is None else f"{v:.1f}" for k, v in refs.items()}})
    return pd.DataFrame(numeric), pd.DataFrame(display)


def _column_cell(run: pd.Series | None, repeats: pd.DataFrame, metric: str) -> tuple[dict, str, str]:
    """(numeric values by column suffix, display cell, display n) of one checkpoint on one column."""
    if run is None:
        return {"": math.nan, " n": math.nan, " partial": None, " runs": 0, " mean": math.nan, " sd": math.nan}, "", ""
    score, low, high = metric_points(run, metric)
    scores = pd.Series([metric_points(r, metric)[0] for _, r in repeats.iterrows()], dtype=float)
    values = {"": score, " n": run["n_samples"], " partial": bool(run["partial"]), " runs": len(scores),
              " mean": scores.mean(), " sd": scores.std(ddof=1)}  # fmt: skip
    cell = _cell(score, low, high) + (" (partial)" if run["partial"] else "")
    if len(scores) > 1:
        cell += f"; mean {scores.mean():.1f}, sd {scores.std(ddof=1):.1f} over {len(scores)} runs"
    return values, cell, "" if pd.isna(run["n_samples"]) else str(int(run["n_samples"]))


def _cell(score: float, low: float, high: float) -> str:
    if math.isnan(score):
        return ""
    if math.isnan(low) or math.isnan(high):
        return f"{score:.1f}"
    return f"{score:.1f} ± {(high - low) / 2:.1f}"


def quantization(runs: pd.DataFrame, card: Card | None = None) -> pd.DataFrame:
    """Per model and task run at two or more precisions: score, memory and speed, with deltas to a reference.

    The reference is the highest precision run (fp32, bf16, fp16, int8, nf4 in
    that order), named in the `reference` column: `delta` is the score minus
    its score, `p` the paired test against it (McNemar's exact test for
    right/wrong answers), `peak_vs_reference` the ratio of peak memory.
    Memory is in GiB (`memory_device`: cuda = tensors allocated, cpu = the
    process's resident set). The card columns give the card's score and memory
    at the row's precision and the card's own delta to the same reference
    precision, blank where the card has no row at that precision.
    """
    current = latest(runs)
    fields = ("checkpoint", "task", "protocol", "split", "metric")
    keyed = current.assign(_key=current.apply(lambda run: identity(run, fields), axis=1))
    rows = []
    for _, same in keyed.groupby("_key", sort=True):
        if same["precision"].nunique() < 2:
            continue
        same = _row_order(same)
        base = same.iloc[0]
        card_base = _card_quant(card, base, base["precision"])
        for _, run in same.iterrows():
            p_value = math.nan
            if run["run_dir"] != base["run_dir"]:
                try:
                    p_value = compare_pair(base, run).p_value
                except EvalError:
                    pass  # not the same samples (e.g. another limit): no paired test
            entry = _card_quant(card, run, run["precision"])
            rows.append(
                {
                    "model": run["checkpoint"],
                    "task": task_label(run["task"]),
                    "protocol": run["protocol"],
                    "precision": run["precision"],
                    "n": run["n_samples"],
                    "score": run["score"],
                    "ci_low": run["ci_low"],
                    "ci_high": run["ci_high"],
                    "reference": base["precision"],
                    "delta": run["score"] - base["score"],
                    "p": p_value,
                    "weights_gb": run["weights_gb"],
                    "peak_memory_gb": run["peak_memory_gb"],
                    "memory_device": run["memory_device"],
                    "peak_vs_reference": run["peak_memory_gb"] / base["peak_memory_gb"],
                    "tokens_per_second": run["tokens_per_second"],
                    "card_score": entry.value if entry else math.nan,
                    "card_delta": entry.value - card_base.value if entry and card_base else math.nan,
                    "card_memory_gb": entry.memory_gb if entry and entry.memory_gb else math.nan,
                    "run_dir": run["run_dir"],
                }
            )
    return pd.DataFrame(rows)


def _card_quant(card: Card | None, run: pd.Series, precision: str):
    if card is None:
        return None
    probe = {**run.to_dict(), "precision": precision}
    return next((e for e in card.entries if e.table == "quantization" and e.metric == run["metric"]
                 and e.matches(probe)), None)  # fmt: skip


def categories(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-category rows of every run whose summary has a category table (C-Eval, MMLU)."""
    rows = []
    for _, run in latest(runs).iterrows():
        for row in run["tables"].get("category", []):
            if row.get("accuracy") is None:
                continue
            se = row.get("stderr")
            se = math.nan if se is None else se
            rows.append(
                {
                    "run": model_label(run),
                    "task": run["task"],
                    "protocol": run["protocol"],
                    "split": run["split"],
                    "category": row["category"],
                    "n": row.get("n"),
                    "score": 100 * row["accuracy"],
                    "ci_low": 100 * (row["accuracy"] - 1.96 * se),
                    "ci_high": 100 * (row["accuracy"] + 1.96 * se),
                    "unparsed_rate": row.get("unparsed_rate"),
                }
            )
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame, digits: int = 1) -> str:
    """A GitHub markdown table (no tabulate dependency); floats rounded, NaN blank."""
    if frame.empty:
        return "_(none)_\n"

    def fmt(value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, float):
            return f"{value:.{digits}f}" if abs(value) >= 10**-digits or value == 0 else f"{value:.2g}"
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(str(c) for c in frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


