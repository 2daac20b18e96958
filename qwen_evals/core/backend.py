"""The backend contract: whole lists of requests of one kind in, outputs in order out.

The runner collects every request of a task before calling, so a backend is
free to sort, batch and cache as it likes (lm-evaluation-harness's `LM` model).
Implementations live in `qwen_evals.backends`; the core only knows this contract.

A backend whose requests finish one by one (a served model) can also report each
as it finishes (`ReportsEachResult`), so that the resume store keeps every answer
the moment it arrives and a crash or an abort loses none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, ModelTokenizer

OnResult = Callable[[int, Any], None]
"""`on_result(i, result)`: request `i` of the call finished with `result` (called from any thread)."""


class Backend(Protocol):
    name: str
    precision: Any
    """What the weights were loaded as (a `qwen_evals.backends.precision.Precision`), or None."""

    def loglikelihood(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]: ...

    def generate(self, requests: Sequence[Generate]) -> list[Generation]: ...

    def identity(self) -> dict[str, Any]:
        """Everything besides a request that can change its output: the resume store's key.

        The weights' sha256, precision, attention kernel, chat template and system prompt,
        generation overrides, converter version, ... (the library versions are added by the store).
        """
        ...

    def checkpoint(self) -> dict[str, Any]:
        """The model's identity for the run record: `path`, requested `revision`, resolved hub `commit`,
        `weights_sha256` (sha256 over the weight files' contents; None where there are none to read)."""
        ...

    def chat_template(self) -> dict[str, Any]:
        """How chat prompts are rendered: `format`, the template's `sha256`, the `system_prompt` it adds."""
        ...

    def describe(self) -> dict[str, Any]:
        """Model identity and run statistics recorded in summary.json."""
        ...

    def one_at_a_time(self) -> AbstractContextManager[None]:
        """Within it, requests run at batch size 1 (the batch-invariance canary); run stats are kept."""
        ...

    def model_tokenizer(self) -> ModelTokenizer | None:
        """The model's tokenizer and chat-format encoder, or None where the backend has none (served, fake)."""
        ...


class ReportsEachResult(Backend, Protocol):
    """A `Backend` that also calls `on_result` for each request as soon as it is answered."""

    reports_each_result: bool
    """True: `generate` and `loglikelihood` take the `on_result` keyword."""

    def loglikelihood(
        self, requests: Sequence[LogLikelihood], on_result: OnResult | None = None
    ) -> list[LogLikelihoodResult]: ...

    def generate(self, requests: Sequence[Generate], on_result: OnResult | None = None) -> list[Generation]: ...
