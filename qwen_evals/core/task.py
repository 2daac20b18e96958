"""The task contract: data -> samples -> requests -> per-sample rows -> declared metrics.

A task is a benchmark under one protocol. What it knows is written as data:
- `protocols`: name -> `EvalProtocol` (how a sample becomes requests of one
  kind, and how an output is read), so a new protocol is one entry;
- `metrics()`: the `Metric`s its summary reports, each naming the per-sample
  column it averages, the subset and averaging, and its direction.
The runner only moves requests and outputs around; the report measures the
declared metrics; analysis tools read the declarations back from summary.json.
`score` is a pure function of a sample and its outputs, so a saved run can be
re-scored without the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource
from qwen_evals.core.metrics import Metric
from qwen_evals.core.types import (
    GREEDY,
    Decoding,
    Extraction,
    Generate,
    LogLikelihood,
    ModelTokenizer,
    Output,
    Request,
    Sample,
)

REQUEST_KINDS = {"generate": Generate, "loglikelihood": LogLikelihood}


@dataclass(frozen=True)
class EvalProtocol:
    """One way of asking a benchmark's questions.

    Args:
        name: the `task.protocol` value.
        kind: "generate" or "loglikelihood": the kind of every request it builds.
        build: (task, sample) -> the sample's requests.
        read: (task, sample, outputs) -> the answer read from the outputs, or None
            where the task scores outputs without extracting one answer.
        description: one line: where the protocol comes from (script, card).
        prepare: (task, samples) -> None: reads what the protocol needs besides the samples
            (few-shot exemplars, prompt files), so that a missing or malformed file fails
            when the task loads, before any model work.
        decoding: how its generate requests choose tokens; `Task.requests` puts it on every
            one, and backends apply exactly it whatever the checkpoint's generation config
            says. Qwen's evaluation scripts decode greedily with repetition_penalty 1.0.
    """

    name: str
    kind: str
    build: Callable[[Any, Sample], list[Request]]
    read: Callable[[Any, Sample, list[Output]], Extraction] | None = None
    description: str = ""
    prepare: Callable[[Any, list[Sample]], None] | None = None
    decoding: Decoding = GREEDY

    def __post_init__(self) -> None:
        if self.kind not in REQUEST_KINDS:
            raise ValueError(f"protocol {self.name!r}: kind {self.kind!r} is not one of {list(REQUEST_KINDS)}")


def protocol_table(*protocols: EvalProtocol) -> dict[str, EvalProtocol]:
    """name -> protocol, in the order given."""
    return {p.name: p for p in protocols}


class Task(ABC):
    """A benchmark under one protocol.

    Subclasses keep all benchmark knowledge (files, prompts, extraction, tables);
    the runner only moves requests and outputs around.
    """

    name: ClassVar[str]
    protocols: ClassVar[Mapping[str, EvalProtocol]]

    def __init__(self, protocol: str) -> None:
        if protocol not in self.protocols:
            raise EvalError(
                f"task.protocol={protocol!r} is not a {self.name} protocol; choose one of {list(self.protocols)}"
            )
        self.protocol = protocol
        self.spec = self.protocols[protocol]

    def load(self, limit: int | None = None) -> list[Sample]:
        """All samples of the configured split (`limit`: first N per subject), the protocol's files read too."""
        samples = self.read_samples(limit)
        if self.spec.prepare is not None:
            self.spec.prepare(self, samples)
        return samples

    @abstractmethod
    def read_samples(self, limit: int | None = None) -> list[Sample]:
        """The samples of the configured split (`limit`: first N per subject)."""

    @property
    def decoding(self) -> Decoding:
        """How this run's generate requests decode: the protocol's settings (a task whose
        options choose sampling, such as HumanEval's pass@k, overrides this)."""
        return self.spec.decoding

    def requests(self, sample: Sample) -> list[Request]:
        """The model calls one sample needs, all of the protocol's kind, generate requests with `decoding`."""
        built = self.spec.build(self, sample)
        kind = REQUEST_KINDS[self.spec.kind]
        if not built or not all(isinstance(r, kind) for r in built):
            raise TypeError(f"{self.name} protocol {self.protocol} must build {self.spec.kind} requests, got {built!r}")
        return [replace(r, decoding=self.decoding) if isinstance(r, Generate) else r for r in built]

    def read(self, sample: Sample, outputs: list[Output]) -> Extraction:
        """The protocol's reading of a sample's outputs."""
        if self.spec.read is None:
            raise TypeError(f"{self.name} protocol {self.protocol} declares no reader")
        return self.spec.read(self, sample, outputs)

    @abstractmethod
    def score(self, sample: Sample, outputs: list[Output]) -> dict[str, Any]:
        """One samples.jsonl row (without id and prompt, which the runner adds)."""

    def score_all(self, samples: Sequence[Sample], outputs: Sequence[list[Output]]) -> list[dict[str, Any]]:
        """Rows for many samples; tasks whose scoring is costly (running code) override it to work in parallel."""
        return [self.score(sample, outs) for sample, outs in zip(samples, outputs)]

    @abstractmethod
    def metrics(self) -> Sequence[Metric]:
        """The summary's metrics, as declarations over the per-sample columns (one is the headline)."""

    def summarize(self, records: pd.DataFrame, metrics: dict[str, Any]) -> dict[str, Any]:
        """Task-specific summary fields beside the measured `metrics`: tables, counts, notes."""
        return {}

    def describe(self) -> dict[str, Any]:
        """Task settings recorded in summary.json."""
        return {"protocol": self.protocol}

    def hub_resources(self) -> list[HubResource]:
        """What `load()` would fetch from the hub with these settings (checked before any work)."""
        return []

    def restrictions(self) -> dict[str, Any]:
        """Settings that leave out part of the benchmark besides `limit` (e.g. chosen subjects); {} when none.

        A run with any is partial: its record says so and the leaderboard keeps it off card parity.
        """
        return {}

    def bind_model(self, model: ModelTokenizer) -> None:  # noqa: B027 - optional hook, a no-op by default
        """The evaluated model's tokenizer, for tasks that count or compare tokens (default: unused)."""

    def write_artifacts(self, records: pd.DataFrame, out_dir: Path) -> list[str]:
        """Extra task-specific files (e.g. a leaderboard submission); returns their names."""
        return []
