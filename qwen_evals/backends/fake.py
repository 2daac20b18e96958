"""A model-free backend for tests and dry runs.

`oracle` answers what the task marked as the reference (a perfect model),
`worst` the opposite (reference continuations get the lowest log-probability,
generations are empty), and `script` maps a rendered prompt to a fixed reply
(anything unscripted raises, so a test notices).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from qwen_evals.backends.precision import Precision
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, Prompt

POLICIES = ("oracle", "worst", "script")


def prompt_key(prompt: Prompt) -> str:
    """The last user message of a chat prompt, or the whole text prompt."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


class FakeBackend:
    def __init__(
        self,
        name: str = "fake",
        policy: str = "oracle",
        script: Mapping[str, str] | Callable[[Generate], str] | None = None,
        precision: Precision | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise EvalError(f"model.policy={policy!r} is not one of {list(POLICIES)}")
        if policy == "script" and script is None:
            raise EvalError("model.policy=script needs model.script (prompt -> reply)")
        self.name = name
        self.policy = policy
        self.script = script
        self.precision = precision
        self.calls: list[tuple[str, int]] = []

    def loglikelihood(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]:
        self.calls.append(("loglikelihood", len(requests)))
        sign = 1.0 if self.policy == "oracle" else -1.0
        return [
            LogLikelihoodResult(logprob=-5.0 + sign * (4.0 if r.is_reference else -4.0), is_greedy=r.is_reference)
            for r in requests
        ]

    def generate(self, requests: Sequence[Generate]) -> list[Generation]:
        self.calls.append(("generate", len(requests)))
        return [Generation(self._reply(r), "eos") for r in requests]

    def _reply(self, request: Generate) -> str:
        if self.policy == "oracle":
            if request.reference is None:
                raise EvalError("the fake oracle needs requests with a reference answer")
            return request.reference
        if self.policy == "worst":
            return ""
        if callable(self.script):
            return self.script(request)
        key = prompt_key(request.prompt)
        if key not in self.script:
            raise EvalError(f"the fake backend has no scripted reply for prompt {key[:80]!r}")
        return self.script[key]

    def identity(self) -> dict[str, Any]:
        return {"backend": "fake", "policy": self.policy}

    def checkpoint(self) -> dict[str, Any]:
        """No weights: the policy is the whole model."""
        return {"path": None, "revision": None, "commit": None, "weights_sha256": None, "policy": self.policy}

    def chat_template(self) -> dict[str, Any]:
        return {"format": None, "sha256": None, "system_prompt": None}

    def one_at_a_time(self) -> AbstractContextManager[None]:
        return nullcontext()  # a fake answers the same at any batch size

    def model_tokenizer(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"backend": "fake", "policy": self.policy, "calls": self.calls}
