"""Prompt pieces shared by tasks and backends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from qwen_evals.core.types import Message

LETTERS = ("A", "B", "C", "D")

QWEN_DEFAULT_SYSTEM = "You are a helpful assistant."


def options_block(options: Mapping[str, str]) -> str:
    """`A. text` lines, each ending in a newline, in letter order."""
    return "".join(f"{letter}. {options[letter]}\n" for letter in LETTERS)


def render_chatml(messages: Sequence[Message], system: str = QWEN_DEFAULT_SYSTEM) -> str:
    """ChatML as Qwen-7B-Chat's `model.chat` builds it, ending with an open assistant turn.

    Qwen v1 checkpoints ship no chat template, so this is the fallback when a
    tokenizer has none. A leading system message in `messages` replaces `system`.
    """
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    turns = [f"<|im_start|>system\n{system}<|im_end|>\n"]
    turns += [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


CHATML_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")
"""End-of-turn tokens that end generation for ChatML-rendered prompts."""
