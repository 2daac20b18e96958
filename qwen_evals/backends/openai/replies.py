"""What the fields of a request and of a server's reply mean, for the OpenAI-compatible API."""

from __future__ import annotations

import json
from typing import Any

from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Decoding


def finish_reason(choice: dict[str, Any], stop: tuple[str, ...], cut: str | None) -> tuple[str, str | None]:
    """(finish reason, the stop string) of a choice.

    OpenAI's "stop" covers both an end-of-turn token and a stop string; vLLM
    tells them apart in `stop_reason` (the string, or null). Where a server
    says neither and stop strings were asked for, the reason is "stop_or_eos".
    """
    if choice.get("finish_reason") == "length":
        return "length", None
    server_stop = choice.get("stop_reason")
    if isinstance(server_stop, str) or cut is not None:
        return "stop", server_stop if isinstance(server_stop, str) else cut
    if stop and "stop_reason" not in choice:
        return "stop_or_eos", None
    return "eos", None


def sampling_fields(decoding: Decoding) -> dict[str, Any]:
    """Every sampling field of a request, sent even at its default value.

    A server fills what a request omits from the checkpoint's generation config
    (vLLM's default `--generation-config auto`), which for Qwen-7B-Chat means
    repetition_penalty 1.1 in a "greedy" run. `top_k` and `repetition_penalty`
    are extensions of the OpenAI API that vLLM, SGLang and llama.cpp accept.
    """
    return {
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "top_k": decoding.top_k or -1,
        "repetition_penalty": decoding.repetition_penalty,
    }


def first_choice(reply: dict[str, Any], url: str) -> dict[str, Any]:
    """The reply's first choice; a reply without one is an error naming the URL."""
    choices = reply.get("choices")
    if not choices or not isinstance(choices[0], dict):
        raise EvalError(f"{url} answered without choices: {json.dumps(reply)[:300]}")
    return choices[0]
