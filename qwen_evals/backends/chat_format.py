"""Prompt pieces shared by backends: Qwen's ChatML, as Qwen-7B-Chat's own code builds it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qwen_evals.core.types import Message

LETTERS = ("A", "B", "C", "D")

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."
IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"

CHATML_STOP_TOKENS = (IM_END, IM_START, ENDOFTEXT)
"""What ends a reply in Qwen's `chat()`: its stop words <|im_end|> and <|im_start|>, and its eod <|endoftext|>."""


def options_block(options: Mapping[str, str]) -> str:
    """`A. text` lines, each ending in a newline, in letter order."""
    return "".join(f"{letter}. {options[letter]}\n" for letter in LETTERS)


def with_system(messages: Sequence[Message], system: str | None) -> list[Message]:
    """`messages` with `system` as a leading system turn, unless it has one or `system` is None."""
    out = [dict(m) for m in messages]
    if system is not None and not (out and out[0]["role"] == "system"):
        out.insert(0, {"role": "system", "content": system})
    return out


def chatml_pieces(messages: Sequence[Message], system: str = QWEN_DEFAULT_SYSTEM) -> list[tuple[str, bool]]:
    """ChatML as Qwen-7B-Chat's `make_context` builds it, ending with an open assistant turn.

    Returns (piece, is_control_token) in order. Role, newline and content are separate
    pieces, because `make_context` encodes each on its own as plain text
    (`encode(..., allowed_special=set())`): a content that starts with a newline keeps
    its own newline token, and special-token spellings inside it stay text. A leading
    system message in `messages` replaces `system`.
    """
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    pieces: list[tuple[str, bool]] = []
    turns = [("system", system), *((m["role"], m["content"]) for m in messages), ("assistant", None)]
    for index, (role, content) in enumerate(turns):
        if index:
            pieces.append(("\n", False))
        pieces += [(IM_START, True), (role, False), ("\n", False)]
        if content is not None:
            pieces += [(content, False), (IM_END, True)]
    return pieces


def render_chatml(messages: Sequence[Message], system: str = QWEN_DEFAULT_SYSTEM) -> str:
    """The text of `chatml_pieces`: what Qwen-7B-Chat's `model.chat` gives the model for these messages.

    Qwen v1 checkpoints ship no chat template, so this is the format when a
    tokenizer has none (and `CHATML_TEMPLATE`, the converted copy's template, renders the same).
    """
    return "".join(piece for piece, _ in chatml_pieces(messages, system))


CHATML_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system_message = messages[0]['content'] -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}"
    "{%- set system_message = " + repr(QWEN_DEFAULT_SYSTEM) + " -%}"
    "{%- set turns = messages -%}"
    "{%- endif -%}"
    "{{- '<|im_start|>system\\n' + system_message + '<|im_end|>\\n' -}}"
    "{%- for message in turns -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
"""`render_chatml` as a Jinja chat template: the one the Qwen v1 converter writes into its copies."""
