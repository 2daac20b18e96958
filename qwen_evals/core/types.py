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
class Decoding:
    """How the next token is chosen. A protocol states these; backends apply exactly them.

    Whatever a checkpoint's generation config says (Qwen-7B-Chat's ships
    repetition_penalty 1.1, top_p 0.8, top_k 0, do_sample), a request decodes
    with these settings and nothing else: the default is greedy decoding with no
    penalty, as Qwen's evaluation scripts decode. `top_k` 0 and `top_p` 1.0 mean off.
    """

    temperature: float = 0.0
    """0 is greedy (argmax); above 0, sampling at this temperature."""
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0 or self.repetition_penalty <= 0:
            raise ValueError(f"decoding settings out of range: {self}")
        if self.temperature == 0 and (self.top_p != 1.0 or self.top_k != 0):
            raise ValueError(f"greedy decoding takes no top_p / top_k: {self}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Decoding()


@dataclass(frozen=True)
class Generate:
    """Continue `prompt` until a stop string, an end-of-turn token or `max_new_tokens`.

    `decoding` is the protocol's: `Task.requests` sets it from `EvalProtocol.decoding`
    (the greedy default only serves code that calls a backend directly).
    `reference` is the output a perfect model would give; only the fake backend
    reads it (oracle dry runs and tests).
    """

    prompt: Prompt
    max_new_tokens: int = 512
    stop: tuple[str, ...] = ()
    decoding: Decoding = GREEDY
    reference: str | None = None


@dataclass(frozen=True)
class Generation:
    """A reply and the facts of how it was made; the runner records the facts in the sample's row."""

    text: str
    """The reply, cut before the earliest stop string."""
    finish_reason: str
    """"eos" (an end-of-turn / end-of-sequence token), "stop" (a stop string), "length" (max_new_tokens),
    or "stop_or_eos" (a served model that does not say which)."""
    stop: str | None = None
    """The end token or stop string that ended it."""
    prompt_tokens: int | None = None
    """Tokens of the prompt as the model read it (after any truncation)."""
    generated_tokens: int | None = None
    prompt_truncated: bool | None = None
    rendered_prompt: str | None = None
    """The exact text given to the tokenizer (chat template applied); None where a server renders it."""
    batch_seconds: float | None = None
    """Wall time of the batch (or request) the reply was generated in."""


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
    context_tokens: int | None = None
    """Tokens of the context as the model read it (after any truncation)."""


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
