"""A finished run: its per-sample records, the measured metrics, summary.json and a printed table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.core import stats
from qwen_evals.core.backend import Backend
from qwen_evals.core.metrics import headline, measure_all
from qwen_evals.core.record import SAMPLES_FILE, SUMMARY_FILE, write_json, write_jsonl
from qwen_evals.core.run_record import SCHEMA_VERSION, RunContext, refuse_finished, run_block
from qwen_evals.core.task import Task


@dataclass
class Report:
    task: Task
    backend: Backend
    records: pd.DataFrame
    wall_seconds: float
    fingerprints: dict[str, str]
    """What was asked, by facet (`core/request_fingerprints.py`)."""
    generation: list[dict[str, Any]]
    """The distinct generation settings of the requests."""
    limit: int | None = None
    batch_invariance: dict[str, Any] | None = None

    @cached_property
    def summary(self) -> dict[str, Any]:
        """The task's measured metrics, its own summary fields, and the canary's verdict."""
        declared = list(self.task.metrics())
        metrics, missing = measure_all(declared, self.records)
        main = headline(declared)
        body: dict[str, Any] = {
            "metrics": metrics,
            **self.task.summarize(self.records, metrics),
            "main_metric": main.name,
            "main_metric_column": main.column,
            "metric_declarations": [m.to_dict() for m in declared],
        }
        if missing:
            body["metric_notes"] = missing
        if self.batch_invariance is not None:
            body["batch_invariance"] = self.batch_invariance
        return body

    def to_summary(self, config: dict[str, Any] | None = None, context: RunContext | None = None) -> dict[str, Any]:
        model = self.backend.describe()
        precision = self.backend.precision
        return {
            "schema_version": SCHEMA_VERSION,
            "run": run_block(context or RunContext(), self.task, self.backend, model, self.limit, self.generation),
            "task": self.task.name,
            **self.task.describe(),
            "decoding": asdict(self.task.decoding) if self.task.spec.kind == "generate" else None,
            "model": self.backend.name,
            "model_revision": model.get("revision"),
            "precision": precision.name if precision else None,
            "n_samples": len(self.records),
            **self.summary,
            "confidence": {"level": stats.LEVEL, "method": "bootstrap", "n_boot": stats.N_BOOT, "seed": stats.SEED},
            "wall_seconds": self.wall_seconds,
            "tokens_per_second": model.get("tokens_per_second"),
            "memory": model.get("memory"),  # weights and peak memory (backends/memory.py); None where not measured
            "backend": model,
            "data_fingerprint": self.fingerprints["exam"],
            "fingerprints": self.fingerprints,
            "config": config or {},
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    def save(self, out_dir: Path, config: dict[str, Any] | None = None, context: RunContext | None = None) -> dict[str, Any]:
        """Write samples, task artifacts, then summary.json last: a summary means a complete run.

        A folder that already holds a finished run is refused, before and while writing
        (another job may have finished into it meanwhile): a run never replaces another.
        """
        refuse_finished(out_dir, SUMMARY_FILE)
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = self.to_summary(config, context)
        write_jsonl(out_dir / SAMPLES_FILE, self.records.to_dict(orient="records"))
        summary["artifacts"] = self.task.write_artifacts(self.records, out_dir)
        write_json(out_dir / SUMMARY_FILE, summary, exclusive=True)
        return summary

    def table(self) -> pd.DataFrame:
        """What the run prints: the headline overall and by category, then every other metric."""
        metrics = self.summary["metrics"]
        main = self.summary["main_metric"]

        def row(name: str, n: int | None = None) -> dict[str, object]:
            return {"n": n, "value": metrics.get(name), "stderr": metrics.get(f"{name}_stderr")}

        table = {"overall": {**row(main, len(self.records)), "unparsed_rate": metrics.get("unparsed_rate")}}
        for category in self.summary.get("tables", {}).get("category", []):
            table[category["category"]] = {
                "n": category.get("n"),
                "value": category.get(main),
                "stderr": category.get("stderr"),
                "unparsed_rate": category.get("unparsed_rate"),
            }
        for declared in self.summary["metric_declarations"]:
            if declared["name"] != main:  # e.g. GSM8K's "strict" (strict_accuracy), C-Eval's "hard"
                table[declared["name"].removesuffix(f"_{main}")] = row(declared["name"])
        return pd.DataFrame.from_dict(table, orient="index").astype({"n": "Int64"})
