"""The task contract: data -> samples -> requests -> per-sample scores -> metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from evals.types import Output, Request, Sample


class Task(ABC):
    """A benchmark under one protocol.

    Subclasses keep all benchmark knowledge (files, prompts, extraction,
    averaging); the runner only moves requests and outputs around. `score` is a
    pure function of a sample and its outputs, so a saved run can be re-scored
    without the model.
    """

    name: ClassVar[str]
    protocols: ClassVar[tuple[str, ...]]

    def __init__(self, protocol: str) -> None:
        if protocol not in self.protocols:
            from evals.errors import EvalError

            raise EvalError(
                f"task.protocol={protocol!r} is not a {self.name} protocol; choose one of {list(self.protocols)}"
            )
        self.protocol = protocol

    @abstractmethod
    def load(self, limit: int | None = None) -> list[Sample]:
        """All samples of the configured split (`limit`: first N per subject)."""

    @abstractmethod
    def requests(self, sample: Sample) -> list[Request]:
        """The model calls one sample needs, all of one kind."""

    @abstractmethod
    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        """One samples.jsonl row (without id and prompt, which the runner adds)."""

    def score_all(self, samples: Sequence[Sample], outputs: Sequence[list[Output]]) -> list[dict[str, Any]]:
        """Rows for many samples; tasks whose scoring is costly (running code) override it to work in parallel."""
        return [self.score(sample, outs) for sample, outs in zip(samples, outputs)]

    @abstractmethod
    def summarize(self, records: pd.DataFrame) -> dict[str, Any]:
        """Task metrics from the scored rows: {"metrics": {...}, "tables": {name: rows}}."""

    def describe(self) -> dict[str, Any]:
        """Task settings recorded in summary.json."""
        return {"protocol": self.protocol}

    def write_artifacts(self, records: pd.DataFrame, out_dir: Path) -> list[str]:
        """Extra task-specific files (e.g. a leaderboard submission); returns their names."""
        return []
