"""A continuation's log-likelihood from echoed prompt log-probs.

A completions request with `echo=true, logprobs=1` returns the log-prob of
every prompt token. The continuation's tokens are found by their text offsets
counted back from the end of the prompt (the continuation is the prompt's last
characters), so a BOS token or other text the server puts in front does not
shift the boundary. A token that spans the boundary (the continuation merged
into the last context token) is scored whole; `ContinuationTokens.merged` says
so, for the backend to count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import LogLikelihoodResult

GREEDY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ContinuationTokens:
    """The echoed prompt tokens that cover a continuation (`indices`), from the reply at `url`."""

    url: str
    continuation: str
    tokens: list[str]
    logprobs: list[float | None]
    tops: list[dict[str, float]] | None
    indices: list[int]
    merged: bool  # the first of them starts before the continuation does

    def score(self) -> LogLikelihoodResult:
        """Sum of the tokens' log-probs, and whether each was the top choice."""
        url, continuation, tokens, logprobs, tops = self.url, self.continuation, self.tokens, self.logprobs, self.tops
        total, greedy = 0.0, True
        for i in self.indices:
            if logprobs[i] is None:
                raise EvalError(
                    f"{url} gave no log-prob for prompt token {i} ({tokens[i]!r}) of {continuation!r}; "
                    "a log-likelihood request needs a non-empty context before the continuation"
                )
            if not tops or i >= len(tops) or not tops[i]:
                raise EvalError(f"{url} returned no top_logprobs for prompt tokens; is_greedy cannot be decided")
            total += float(logprobs[i])
            greedy = greedy and float(logprobs[i]) >= max(float(v) for v in tops[i].values()) - GREEDY_TOLERANCE
        return LogLikelihoodResult(total, greedy, context_tokens=self.indices[0])


def continuation_tokens(
    reply: dict[str, Any], choice: dict[str, Any], url: str, text_length: int, continuation: str, max_tokens: int
) -> ContinuationTokens:
    """The tokens of `continuation`, the last characters of a prompt of `text_length` echoed in `choice`."""
    tokens, logprobs, tops, offsets = _echoed_logprobs(choice, url)
    n_prompt = _prompt_token_count(reply, tokens, offsets, text_length, max_tokens)
    if n_prompt < 1 or n_prompt > len(tokens):
        raise EvalError(
            f"{url} echoed {len(tokens)} tokens for a prompt of {n_prompt}; the server does not echo prompt log-probs"
        )
    # Token i spans [offsets[i], ends[i]); the prompt's end anchors the boundary.
    ends = [offsets[i + 1] if i + 1 < n_prompt else offsets[i] + len(tokens[i]) for i in range(n_prompt)]
    boundary = ends[-1] - len(continuation)
    chosen = [i for i in range(n_prompt) if ends[i] > boundary]
    if not chosen:
        raise EvalError(f"{url}: no echoed token covers the continuation {continuation!r}")
    return ContinuationTokens(url, continuation, tokens, logprobs, tops, chosen, offsets[chosen[0]] < boundary)


def _echoed_logprobs(
    choice: dict[str, Any], url: str
) -> tuple[list[str], list[float | None], list[dict[str, float]] | None, list[int]]:
    """(tokens, token_logprobs, top_logprobs, character offsets) of an echo=true completion."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict) or not logprobs.get("token_logprobs") or not logprobs.get("tokens"):
        raise EvalError(
            f"{url} returned no prompt log-probs for a completions request with echo=true, logprobs=1; "
            "log-likelihood protocols (task.protocol=base_5shot) need a server that returns them "
            "(vLLM does); use a generation protocol or a local backend (model=hf) instead"
        )
    tokens = [str(t) for t in logprobs["tokens"]]
    token_logprobs = list(logprobs["token_logprobs"])
    if len(token_logprobs) != len(tokens):
        raise EvalError(f"{url} returned {len(tokens)} tokens but {len(token_logprobs)} token_logprobs")
    offsets = next((logprobs[k] for k in ("text_offset", "text_offsets", "token_offsets") if logprobs.get(k)), None)
    if offsets is None:  # count them from the token strings
        offsets, position = [], 0
        for token in tokens:
            offsets.append(position)
            position += len(token)
    if len(offsets) != len(tokens):
        raise EvalError(f"{url} returned {len(tokens)} tokens but {len(offsets)} text offsets")
    return tokens, token_logprobs, logprobs.get("top_logprobs"), [int(o) for o in offsets]


def _prompt_token_count(
    reply: dict[str, Any], tokens: list[str], offsets: list[int], text_length: int, max_tokens: int
) -> int:
    """How many of the echoed tokens are the prompt's (the rest were generated)."""
    usage = reply.get("usage") or {}
    if usage.get("prompt_tokens") is not None:
        return int(usage["prompt_tokens"])
    if usage.get("completion_tokens") is not None:
        return len(tokens) - int(usage["completion_tokens"])
    if max_tokens == 0:
        return len(tokens)
    return sum(1 for offset in offsets if offset < text_length)
