"""From prompts to token ids, the same way for every local backend (transformers, vLLM)."""

from __future__ import annotations

from typing import Any

from qwen_evals.backends.chat_format import CHATML_STOP_TOKENS, render_chatml
from qwen_evals.core.errors import EvalError
from qwen_evals.core.fingerprint import json_sha256, text_sha256
from qwen_evals.core.types import LogLikelihood, Prompt


class PromptEncoder:
    """Renders chat prompts in the model's format, tokenizes, and fits the context window.

    Chat messages use the tokenizer's chat template when it has one, else ChatML
    with the configured system prompt (Qwen v1 tokenizers ship no template).
    """

    def __init__(self, tokenizer: Any, system_prompt: str, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.truncated = 0

    @property
    def chat_format(self) -> str:
        return "template" if getattr(self.tokenizer, "chat_template", None) else "chatml"

    def template_record(self) -> dict[str, Any]:
        """How chat prompts are rendered: the tokenizer's template (its sha256), or ChatML with the system prompt."""
        if self.chat_format == "template":
            template = self.tokenizer.chat_template  # a string, or named templates in a dict
            digest = text_sha256(template) if isinstance(template, str) else json_sha256(template)
            return {"format": "template", "sha256": digest, "system_prompt": None}
        return {"format": "chatml", "sha256": None, "system_prompt": self.system_prompt}

    def render(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        if self.chat_format == "template":
            return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        return render_chatml(prompt, self.system_prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        # Rendered chat text already holds its special tokens; adding them again
        # would give a double BOS on tokenizers that prepend one.
        return self.tokenizer.encode(self.render(prompt), add_special_tokens=isinstance(prompt, str))

    def fit(self, ids: list[int], room: int) -> list[int]:
        """Keep the last `room` tokens (the end of a prompt is where the question is)."""
        if len(ids) <= room:
            return ids
        self.truncated += 1
        return ids[-room:]

    def split(self, request: LogLikelihood, memo: dict[str, list[int]]) -> tuple[list[int], list[int]]:
        """(context, continuation) token ids; `memo` caches texts shared by several requests."""
        plain = isinstance(request.prompt, str)
        text = self.render(request.prompt)
        if text not in memo:
            memo[text] = self.tokenizer.encode(text, add_special_tokens=plain)
        context = memo[text]
        both = self.tokenizer.encode(text + request.continuation, add_special_tokens=plain)
        if both[: len(context)] == context and len(both) > len(context):
            continuation = both[len(context) :]
        else:  # the continuation merged into the last prompt token; score it on its own
            continuation = self.tokenizer.encode(request.continuation, add_special_tokens=False)
        if not continuation:
            raise EvalError(f"empty continuation for log-likelihood request {request.continuation!r}")
        if len(continuation) >= self.max_length:
            raise EvalError(f"continuation of {len(continuation)} tokens exceeds model.max_length={self.max_length}")
        return self.fit(context, self.max_length - len(continuation)), continuation

    def stop_token_ids(self, model_eos: Any) -> list[int]:
        """End-of-sequence ids: the tokenizer's, the model's, and ChatML's end-of-turn tokens."""
        ids = {self.tokenizer.eos_token_id, *(model_eos if isinstance(model_eos, (list, tuple)) else [model_eos])}
        if self.chat_format == "chatml":
            vocab = self.tokenizer.get_vocab()
            ids |= {vocab[t] for t in CHATML_STOP_TOKENS if t in vocab}
        return sorted(i for i in ids if i is not None)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """Text before the earliest stop string (generation may run past it inside a token)."""
    return split_at_stop(text, stop)[0]


def split_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, str | None]:
    """(text before the earliest stop string, that string); (text, None) when none occurs."""
    found = [(text.find(s), s) for s in stop if s and s in text]
    if not found:
        return text, None
    cut, string = min(found)
    return text[:cut], string
