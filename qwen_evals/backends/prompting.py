"""From prompts to token ids, the same way for every local backend (transformers, vLLM).

What a prompt holds is text: a special-token spelling inside a message or a text
prompt ("<|im_end|>" in a question, "</s>" in code) is encoded as the characters
it is, never as the control token, so no data row can close its turn or end the
sequence. Only the chat format writes control tokens.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import cached_property
from typing import Any

from qwen_evals.backends.chat_format import (
    CHATML_STOP_TOKENS,
    CHATML_TEMPLATE,
    QWEN_DEFAULT_SYSTEM,
    chatml_pieces,
    render_chatml,
    with_system,
)
from qwen_evals.core.errors import EvalError
from qwen_evals.core.fingerprint import json_sha256, text_sha256
from qwen_evals.core.types import LogLikelihood, Message, Prompt

CHAT_FORMATS = {
    "chatml": "Qwen's ChatML, ids as Qwen's make_context builds them (role, newline and content encoded apart)",
    "template": "the tokenizer's chat template",
}
TURN_PROBES: tuple[tuple[Message, ...], ...] = (
    ({"role": "user", "content": "1"}, {"role": "assistant", "content": "2"}, {"role": "user", "content": "3"}),
    ({"role": "user", "content": "1"},),
)
"""Conversations rendered to find the chat format's turn tokens (the first one the template accepts)."""
PROBE_SYSTEM, PROBE_USER = "\ue000system\ue000", "\ue000user\ue000"


class PromptEncoder:
    """Renders prompts in the model's chat format, tokenizes them, and fits the context window.

    Chat formats (`chat_format`):
    - "chatml": when the tokenizer has no chat template (Qwen v1 checkpoints) or the
      Qwen v1 converter's (`CHATML_TEMPLATE`): Qwen-7B-Chat's ChatML, with ids built as
      its `make_context` builds them, so a message starting with a newline gets
      Qwen's ids (198, 198, not 271).
    - "template": the tokenizer's chat template. Control-token spellings inside the
      messages are encoded as text by transformers' `sanitize_control_tokens`
      (transformers >= 5.20); with an older transformers a message holding one is refused.

    `system_prompt` is sent as the system message (first turn) of every chat prompt
    that has none, through the format itself; None keeps the format's default (the
    template's own system turn, if any; Qwen's "You are a helpful assistant." for ChatML).
    """

    def __init__(self, tokenizer: Any, system_prompt: str | None, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.system_prompt = system_prompt
        self.max_length = max_length
        self.truncated = 0
        template = getattr(tokenizer, "chat_template", None)
        self.chat_format = "chatml" if not template or template == CHATML_TEMPLATE else "template"
        self.sanitizes = "sanitize_control_tokens" in inspect.signature(tokenizer.apply_chat_template).parameters
        self._plain_memo: dict[str, list[int]] = {}

    # ---- prompts to text and ids ---------------------------------------------------

    def messages(self, prompt: list[Message]) -> list[Message]:
        """A chat prompt's messages as the format receives them: the configured system turn first."""
        return with_system(prompt, self.system_prompt)

    def template_record(self) -> dict[str, Any]:
        """How chat prompts are rendered: the tokenizer's template (its sha256), or ChatML with the system prompt."""
        if self.chat_format == "template":
            template = self.tokenizer.chat_template  # a string, or named templates in a dict
            digest = text_sha256(template) if isinstance(template, str) else json_sha256(template)
            return {"format": "template", "sha256": digest, "system_prompt": None}
        return {"format": "chatml", "sha256": None, "system_prompt": self.system_prompt}

    def render(self, prompt: Prompt) -> str:
        """The exact text the prompt is tokenized as (the rendered chat)."""
        if isinstance(prompt, str):
            return prompt
        if self.chat_format == "chatml":
            return render_chatml(self.messages(prompt))
        return self._apply_template(self.messages(prompt), tokenize=False)

    def encode(self, prompt: Prompt) -> list[int]:
        """A prompt's token ids as the model reads them: the chat format's control tokens, the rest as text."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt, add_special_tokens=True, split_special_tokens=True)
        messages = self.messages(prompt)
        if self.chat_format == "chatml":
            return [i for piece, control in chatml_pieces(messages) for i in self._chatml_piece(piece, control)]
        if any(self._added_token_text.search(m["content"]) for m in messages):
            if self.sanitizes:
                return self._apply_template(messages, tokenize=True, sanitize_control_tokens=True, return_dict=False)
            self._refuse_control_tokens(messages)
        # Nothing the sanitizer would mark: the same ids without its cost (2.5x the plain call).
        return self._apply_template(messages, tokenize=True, return_dict=False)

    def plain(self, text: str) -> list[int]:
        """`text` encoded as text alone: no special tokens added, none recognised (Qwen's `allowed_special=set()`)."""
        if len(text) > 32:
            return self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        if text not in self._plain_memo:  # roles, newlines, the system prompt: encoded once
            self._plain_memo[text] = self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)
        return self._plain_memo[text]

    def _chatml_piece(self, piece: str, control: bool) -> list[int]:
        if not control:
            return self.plain(piece)
        token_id = self.tokenizer.convert_tokens_to_ids(piece)
        if not isinstance(token_id, int) or token_id == self.tokenizer.unk_token_id or token_id not in self._special_ids:
            raise EvalError(
                f"the tokenizer has no chat template and no ChatML token {piece}: chat protocols cannot be "
                "rendered for this model; use a text protocol (task.protocol=base_*) or a tokenizer with a chat template"
            )
        return [token_id]

    def _apply_template(self, messages: list[Message], **kwargs: Any) -> Any:
        from jinja2 import TemplateError

        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)
        except TemplateError as error:
            hint = "; model.system_prompt=null keeps the template's own system turn" if self.system_prompt else ""
            raise EvalError(f"the model's chat template refused a prompt: {error}{hint}") from error

    def _refuse_control_tokens(self, messages: list[Message]) -> None:
        """Without transformers' sanitizer, a message holding a special-token spelling cannot be encoded as text."""
        for message in messages:
            found = sorted((message["content"].find(t), t) for t in self._special_spellings if t in message["content"])
            if found:
                raise EvalError(
                    f"a {message['role']} message holds the special-token text {found[0][1]!r}; this transformers "
                    "version cannot keep it as text inside a chat template (sanitize_control_tokens needs "
                    f"transformers >= 5.20): {message['content'][:80]!r}"
                )

    @cached_property
    def _special_ids(self) -> set[int]:
        return {i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special}

    @cached_property
    def _special_spellings(self) -> list[str]:
        return [token.content for token in self.tokenizer.added_tokens_decoder.values() if token.special]

    @cached_property
    def _added_token_text(self) -> re.Pattern[str]:
        """Any added token's spelling: a message without one has nothing for the sanitizer to mark."""
        spellings = sorted((t.content for t in self.tokenizer.added_tokens_decoder.values()), key=len, reverse=True)
        return re.compile("|".join(map(re.escape, spellings)) or "(?!)")

    # ---- context window ----------------------------------------------------------------

    def fit(self, ids: list[int], room: int) -> list[int]:
        """Keep the last `room` tokens (the end of a prompt is where the question is)."""
        if len(ids) <= room:
            return ids
        self.truncated += 1
        return ids[-room:]

    def split(self, request: LogLikelihood, memo: dict[str, list[int]]) -> tuple[list[int], list[int]]:
        """(context, continuation) token ids; `memo` caches contexts shared by several requests."""
        text = self.render(request.prompt)
        if text not in memo:
            memo[text] = self.encode(request.prompt)
        context = memo[text]
        continuation = None
        if isinstance(request.prompt, str):
            both = self.encode(text + request.continuation)
            if both[: len(context)] == context and len(both) > len(context):
                continuation = both[len(context) :]
        if continuation is None:
            # A chat prompt ends with the format's assistant header, or the continuation merged
            # into the last prompt token: the continuation is scored as text of its own.
            continuation = self.plain(request.continuation)
        if not continuation:
            raise EvalError(f"empty continuation for log-likelihood request {request.continuation!r}")
        if len(continuation) >= self.max_length:
            raise EvalError(f"continuation of {len(continuation)} tokens exceeds model.max_length={self.max_length}")
        return self.fit(context, self.max_length - len(continuation)), continuation

    # ---- what ends a reply, and what the record says --------------------------------

    def stop_token_ids(self, *declared_eos: Any) -> list[int]:
        """Token ids that end generation: every eos id the model declares (one id or a list each),
        the tokenizer's eos, and the chat format's turn tokens, whatever the checkpoint's eos says."""
        ids = {self.tokenizer.eos_token_id, *self.turn_token_ids}
        for eos in declared_eos:
            ids |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
        return sorted(i for i in ids if i is not None)

    @cached_property
    def turn_token_ids(self) -> tuple[int, ...]:
        """The chat format's start- and end-of-turn tokens: no reply holds one.

        ChatML: what ends a reply in Qwen's `chat()` (<|im_end|>, <|im_start|>, <|endoftext|>).
        A template: every special token it writes around the turns of a short conversation.
        """
        if self.chat_format == "chatml":
            ids = (self.tokenizer.convert_tokens_to_ids(t) for t in CHATML_STOP_TOKENS)
            return tuple(sorted(i for i in ids if i in self._special_ids))
        for probe in TURN_PROBES:
            try:
                ids = self.encode(list(probe))
            except EvalError:
                continue
            return tuple(sorted({i for i in ids if i in self._special_ids}))
        return ()

    def token_names(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.convert_ids_to_tokens(i) for i in ids]

    @cached_property
    def system_prompt_used(self) -> str | None:
        """The system turn chat prompts get: model.system_prompt when set, else the format's default (None: none)."""
        if self.system_prompt is not None:
            return self.system_prompt
        if self.chat_format == "chatml":
            return QWEN_DEFAULT_SYSTEM
        return default_system_turn(lambda messages: self._apply_template(messages, tokenize=False))

    @property
    def encoding(self) -> str:
        """How chat prompts become ids, special-token text included (part of the backends' identity)."""
        if self.chat_format == "chatml":
            return "make_context: special-token text encoded as text"
        if self.sanitizes:
            return "chat template: special-token text encoded as text (transformers sanitize_control_tokens)"
        return "chat template: special-token text refused (transformers < 5.20 cannot sanitize it)"

    def describe(self) -> dict[str, Any]:
        """The chat format and system prompt, for summary.json."""
        return {
            "chat_format": self.chat_format,
            "chat_format_description": CHAT_FORMATS[self.chat_format],
            "prompt_encoding": self.encoding,
            "system_prompt": {
                "configured": self.system_prompt,
                "used": self.system_prompt_used,
                "source": "model.system_prompt" if self.system_prompt is not None else f"{self.chat_format} default",
            },
        }


def default_system_turn(render: Callable[[list[Message]], str]) -> str | None:
    """The system prompt a chat template writes when a conversation has none (None when it writes none).

    Renders a conversation with a marked system message and one without, and reads the
    default from where the marked one stood (Qwen2.5's template: "You are Qwen, created by ...").
    """
    user: list[Message] = [{"role": "user", "content": PROBE_USER}]
    try:
        marked = render([{"role": "system", "content": PROBE_SYSTEM}, *user])
        plain = render(user)
    except EvalError:
        return None
    before, found, after = marked.partition(PROBE_SYSTEM)
    between, head = after.partition(PROBE_USER)[0], plain.partition(PROBE_USER)[0]
    if not found or not head.startswith(before) or not head.endswith(between) or len(head) < len(before) + len(between):
        return None
    return head[len(before) : len(head) - len(between)]


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
