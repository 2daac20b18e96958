"""Model-card numbers as data (conf/card/*.yaml) and each run's distance to them.

A card entry matches a run when task, protocol, split and precision agree (an
entry's null matches anything), the run asked the card's data (the entry's
`data`: summary.json fields such as ReAct's `exam`) and its summary.json holds what
the entry `requires` (the setting the card's number was made under, e.g. VCSUM's
dynamic NTK). Partial runs (a `limit`, chosen subjects), runs on other data and
runs under another setting never stand beside the card: their entry says so
instead. Parity rows give the run's score, its 95% CI, the delta to the card with
the CI shifted by the same amount (the card's number has no published
uncertainty), and whether the delta lies within the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from qwen_evals.analysis.results import latest, metric_points, model_label
from qwen_evals.core.errors import EvalError

DEFAULT_CARD = Path(__file__).resolve().parents[1] / "conf" / "card" / "qwen-7b-chat.yaml"
MATCH_FIELDS = ("task", "protocol", "split", "precision")


@dataclass(frozen=True)
class CardEntry:
    task: str
    metric: str
    value: float
    """In points (fractions on the card are converted)."""
    protocol: str | None = None
    split: str | None = None
    precision: str | None = None
    category: str | None = None
    memory_gb: float | None = None
    source: str = ""
    note: str = ""
    table: str = "main"
    run_metric: str | None = None
    """The run's metric to compare with when it is not `metric` itself: the reading that
    reproduces the card's rule (GSM8K: `card_rule_accuracy`, the card-era answer reading)."""
    data: dict[str, Any] | None = None
    """The data the card's number was measured on, as summary.json fields a run must equal
    (ReAct: `{exam: qwen exam_plugin_v1}`); None: the benchmark has one version."""
    requires: dict[str, Any] = field(default_factory=dict)
    """Dotted paths into a run's summary.json -> the value they must hold for the run to be
    compared (VCSUM: `backend.long_context.applied.dynamic_ntk.rope_type: dynamic`)."""

    @property
    def compared_metric(self) -> str:
        return self.run_metric or self.metric

    @property
    def label(self) -> str:
        parts = [self.task, self.protocol, self.split, self.category, self.metric]
        return " / ".join(str(p) for p in parts if p)

    def matches(self, run: pd.Series | dict[str, Any]) -> bool:
        return all(getattr(self, f) is None or getattr(self, f) == run.get(f) for f in MATCH_FIELDS)

    def same_data(self, run: pd.Series) -> bool:
        return all(run["summary"].get(key) == value for key, value in (self.data or {}).items())

    def made_under(self, summary: dict[str, Any]) -> bool:
        """Whether a run's summary holds every setting the entry `requires`."""
        return all(_lookup(summary, path) == value for path, value in self.requires.items())


def _lookup(summary: dict[str, Any], path: str) -> Any:
    value: Any = summary
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


@dataclass(frozen=True)
class Card:
    model: str
    card_revision: str
    tolerance: float
    entries: list[CardEntry]
    model_revision: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.model} card {self.card_revision}"

    def headline(self, task: str, protocol: str | None, split: str | None, metric: str) -> float | None:
        """The card's bf16 headline number for a leaderboard column, if it has one."""
        run = {"task": task, "protocol": protocol, "split": split, "precision": "bf16"}
        for entry in self.entries:
            if entry.table == "main" and entry.category is None and entry.metric == metric and entry.matches(run):
                return entry.value
        return None


def load_card(path: str | Path = DEFAULT_CARD) -> Card:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise EvalError(f"{path}: unreadable card ({error})") from error
    entries = []
    for i, item in enumerate(raw.get("entries") or []):
        item = dict(item)
        missing = [k for k in ("task", "metric", "value") if k not in item]
        if missing:
            raise EvalError(f"{path}: entry {i} lacks {missing}")
        units = item.pop("units", "points")
        if units not in ("points", "fraction"):
            raise EvalError(f"{path}: entry {i} has units {units!r}; use points or fraction")
        item["value"] = float(item["value"]) * (100 if units == "fraction" else 1)
        if item.get("source") and item["source"] not in (raw.get("sources") or {}):
            raise EvalError(f"{path}: entry {i} cites unknown source {item['source']!r}")
        try:
            entries.append(CardEntry(**item))
        except TypeError as error:
            raise EvalError(f"{path}: entry {i}: {error}") from error
    return Card(
        model=raw["model"],
        card_revision=str(raw.get("card_revision", "")),
        tolerance=float(raw.get("tolerance", 1.0)),
        entries=entries,
        model_revision=raw.get("model_revision"),
        sources=raw.get("sources") or {},
    )


def run_value(run: pd.Series, entry: CardEntry) -> tuple[float, float, float]:
    """The run's number for a card entry in points: value, CI low, CI high (NaN when absent)."""
    if entry.category is not None:
        rows = [r for r in run["tables"].get("category", []) if r.get("category") == entry.category]
        if not rows or rows[0].get("accuracy") is None:
            return math.nan, math.nan, math.nan
        value, se = rows[0]["accuracy"], rows[0].get("stderr")
        se = math.nan if se is None else se
        return 100 * value, 100 * (value - 1.96 * se), 100 * (value + 1.96 * se)
    return metric_points(run, entry.compared_metric)


def _left_out(entry: CardEntry, matched: list[pd.Series]) -> str:
    """Why an entry has no parity row: no run, or only partial runs or runs on other data."""
    if not matched:
        return "no run"
    reasons = {_why_left_out(entry, run) for run in matched}
    return "left out: " + ", ".join(sorted(reasons))


def _comparable(entry: CardEntry, run: pd.Series) -> bool:
    return not run["partial"] and entry.same_data(run) and entry.made_under(run["summary"])


def _why_left_out(entry: CardEntry, run: pd.Series) -> str:
    if run["partial"]:
        return "partial run"
    if not entry.same_data(run):
        return f"other data (card: {entry.data})"
    return f"another setting (card: {entry.requires})"


def parity(runs: pd.DataFrame, card: Card, tolerance: float | None = None) -> pd.DataFrame:
    """One row per (card entry, matching run); entries no run matches get one row marked `no run`."""
    tolerance = card.tolerance if tolerance is None else tolerance
    rows = []
    for entry in card.entries:
        base = {
            "card": entry.label,
            "precision": entry.precision,
            "card_value": entry.value,
            "run_metric": entry.compared_metric,
            "source": entry.source,
            "note": entry.note,
        }
        matched = [run for _, run in runs.iterrows() if entry.matches(run)]
        comparable = [run for run in matched if _comparable(entry, run)]
        if comparable:  # of one identity's comparable runs the latest counts
            comparable = [run for _, run in latest(pd.DataFrame(comparable)).iterrows()]
        for run in comparable:
            value, low, high = run_value(run, entry)
            delta = value - entry.value
            within = abs(delta) <= tolerance if not math.isnan(delta) else None
            if math.isnan(low) or math.isnan(high):
                reaches = None
            else:
                reaches = not (low - entry.value > tolerance or high - entry.value < -tolerance)
            status = "no value" if within is None else "within" if within else "outside"
            rows.append(
                {
                    **base,
                    "run": model_label(run),
                    "protocol": run["protocol"],
                    "split": run["split"],
                    "run_value": value,
                    "delta": delta,
                    "delta_ci_low": low - entry.value,
                    "delta_ci_high": high - entry.value,
                    "status": status,
                    "ci_reaches_band": reaches,
                    "run_dir": run["run_dir"],
                }
            )
        if not comparable:
            rows.append({**base, "run": None, "status": _left_out(entry, matched)})
    frame = pd.DataFrame(rows)
    frame.attrs["tolerance"] = tolerance
    return frame
