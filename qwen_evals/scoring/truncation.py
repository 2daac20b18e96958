"""Long inputs: head-and-tail truncation in the model's own tokens.

`keep_head_and_tail` is LongBench's rule for inputs longer than the model can
read (THUDM/LongBench `pred.py`): tokenize, keep the first and the last halves
of the budget, drop the middle. The beginning and the end of a document hold
the instructions and the conclusions; the middle is what a model can best do
without. Every cut is reported (`Cut`), so a task can record per sample whether
and how much it dropped. A task gets the model's tokenizer from the runner
(`Task.bind_model`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_evals.core.types import TextTokenizer

BOUNDARY_STEPS = 3
"""How many tokens a cut may move inward to avoid splitting a character.

Byte-level BPE vocabularies (Qwen, GPT-2) spell rare characters as up to four
byte tokens; a cut between them would decode to U+FFFD."""


@dataclass(frozen=True)
class Cut:
    """A text fitted to a token budget: `text` is the first `head_tokens` and the last `tail_tokens` tokens."""

    text: str
    original_tokens: int
    head_tokens: int
    tail_tokens: int

    @property
    def kept_tokens(self) -> int:
        return self.head_tokens + self.tail_tokens

    @property
    def dropped_tokens(self) -> int:
        return self.original_tokens - self.kept_tokens

    @property
    def truncated(self) -> bool:
        return self.dropped_tokens > 0


def keep_head_and_tail(text: str, tokenizer: TextTokenizer, max_tokens: int) -> Cut:
    """`text` unchanged when it fits in `max_tokens` tokens, else its head and tail halves.

    The head gets `max_tokens // 2` tokens and the tail the rest; no marker is
    inserted where the middle was (LongBench inserts none). A cut that would
    split a character moves inward by up to `BOUNDARY_STEPS` tokens, so the
    kept pieces are exact substrings of `text` and re-encode to the same
    tokens. Tokens are counted without special tokens (no BOS).
    """
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return Cut(text, len(ids), len(ids), 0)
    head = _clean_count(max_tokens // 2, lambda n: tokenizer.decode(ids[:n]), text.startswith)
    tail = _clean_count(max_tokens - max_tokens // 2, lambda n: tokenizer.decode(ids[len(ids) - n :]), text.endswith)
    head_text = tokenizer.decode(ids[:head]) if head else ""
    tail_text = tokenizer.decode(ids[len(ids) - tail :]) if tail else ""
    return Cut(head_text + tail_text, len(ids), head, tail)


def _clean_count(wanted: int, decode: Any, is_part: Any) -> int:
    """The largest n in [wanted - BOUNDARY_STEPS, wanted] whose decoded piece is part of the text.

    Falls back to `wanted` (LongBench's plain decode) for tokenizers whose
    decode never reproduces the text exactly (e.g. normalizing ones).
    """
    for n in range(wanted, max(wanted - BOUNDARY_STEPS, 0) - 1, -1):
        if n == 0 or is_part(decode(n)):
            return n
    return wanted
