"""The vocabulary shared by tasks, the runner and backends.

A task turns its data into `Sample`s and each sample into `Request`s; the runner
hands every request of one kind to the backend in a single call and gives the
outputs back to the task for scoring.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

Message = dict[str, str]
"""One chat turn: {"role": "system" | "user" | "assistant", "content": ...}."""

Prompt = str | list[Message]
"""Plain text (sent as is) or chat messages (rendered with the model's chat format)."""


@dataclass(frozen=True)
class Sample:
    """One benchmark item."""

    id: str
    target: Any
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generate:
    """Continue `prompt` until a stop string, an end-of-turn token or `max_new_tokens`.

    `reference` is the output a perfect model would give; only the fake backend
    reads it (oracle dry runs and tests).
    """

    prompt: Prompt
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    reference: str | None = None


@dataclass(frozen=True)
class LogLikelihood:
    """Log-probability of `continuation` right after `prompt`.

    `is_reference` marks the gold continuation; only the fake backend reads it.
    """

    prompt: Prompt
    continuation: str
    is_reference: bool = False


@dataclass(frozen=True)
class LogLikelihoodResult:
    logprob: float
    is_greedy: bool


Request = Generate | LogLikelihood
Output = str | LogLikelihoodResult


@dataclass(frozen=True)
class Extraction:
    """The answer a task read out of an output, and how it found it."""

    answer: str | None
    """The extracted answer (e.g. "A".."D", a number, a function body); None when unparsed."""
    status: str
    """"strict" (an explicit cue), "fallback" (a weaker rule), "fuzzy" (closest option) or "unparsed"."""
    rule: str
    """The rule that fired, e.g. "choice_cue", "first_letter", "max_logprob", "none"."""


class TextTokenizer(Protocol):
    """The two methods of a transformers tokenizer that tasks counting tokens need."""

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


@dataclass(frozen=True)
class ModelTokenizer:
    """What a backend tells a task about the model's tokens (see `Task.bind_model`)."""

    tokenizer: TextTokenizer
    context_length: int
    encode_prompt: Callable[[Prompt], list[int]]
    """A prompt as the model reads it: chat format applied, special tokens included."""
    label: str = ""
