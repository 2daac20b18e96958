"""A fast Hugging Face tokenizer equal to Qwen (v1)'s tiktoken tokenizer.

Qwen-7B / Qwen-7B-Chat ship `qwen.tiktoken` (one `base64(token) rank` line per
byte-level BPE token) and a remote-code tokenizer that runs tiktoken with Qwen's
split pattern after NFC normalization, with special tokens numbered from 151643
and recognised anywhere in the text (`allowed_special="all"`). This module
rebuilds that as a `tokenizers` byte-level BPE through transformers'
`TikTokenConverter` (the maintained tiktoken-to-fast path), so the converted
checkpoint loads with `AutoTokenizer` and no remote code.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

from qwen_evals.backends.chat_format import CHATML_TEMPLATE, ENDOFTEXT, IM_END, IM_START
from qwen_evals.core.errors import EvalError

# Qwen v1's pre-tokenizer split (tokenization_qwen.py PAT_STR): digits one at a
# time (\p{N}, not tiktoken cl100k's \p{N}{1,3}).
QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
SPECIAL_START_ID = 151643  # Qwen hard-codes it: the id right after the 151643 BPE ranks
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END) + tuple(f"<|extra_{i}|>" for i in range(205))


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """`qwen.tiktoken` as {token bytes: rank}, checked to be a complete byte-level BPE vocabulary."""
    path = Path(path)
    ranks: dict[bytes, int] = {}
    try:
        lines = path.read_bytes().splitlines()
    except OSError as error:
        raise EvalError(f"Cannot read the Qwen tokenizer file {path}: {error}") from error
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as error:
            raise EvalError(f"{path} line {number} is not 'base64-token rank': {line[:80]!r}") from error
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise EvalError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps or repeats")
    missing_bytes = [b for b in range(256) if bytes([b]) not in ranks]
    if missing_bytes:
        raise EvalError(f"{path}: single-byte tokens missing for bytes {missing_bytes[:8]}; not a byte-level BPE file")
    if len(ranks) != SPECIAL_START_ID:
        raise EvalError(
            f"{path} has {len(ranks)} tokens; Qwen (v1) has {SPECIAL_START_ID}, and its special token ids start there"
        )
    return ranks


def build_tokenizer_object(tiktoken_file: str | Path) -> Any:
    """The `tokenizers.Tokenizer`: NFC, Qwen's split, byte-level BPE, Qwen's special tokens at their ids."""
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class QwenTikTokenConverter(TikTokenConverter):
        # Our own reader: validated (clear errors for a wrong file), and needs no `tiktoken` install.
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return read_tiktoken_ranks(tiktoken_url)

    tokenizer = QwenTikTokenConverter(vocab_file=str(tiktoken_file), pattern=QWEN_PATTERN).converted()
    tokenizer.normalizer = normalizers.NFC()  # QWenTokenizer.tokenize normalizes to NFC first
    if tokenizer.get_vocab_size() != SPECIAL_START_ID:
        raise EvalError(
            f"{tiktoken_file}: converted vocabulary has {tokenizer.get_vocab_size()} tokens, not {SPECIAL_START_ID}"
        )
    # Added in id order right after the BPE vocabulary, so they get Qwen's ids.
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    wrong = [t for i, t in enumerate(SPECIAL_TOKENS) if tokenizer.token_to_id(t) != SPECIAL_START_ID + i]
    if wrong:
        raise EvalError(f"special tokens got ids other than Qwen's: {wrong[:3]}")
    return tokenizer


def save_qwen1_tokenizer(tiktoken_file: str | Path, out_dir: str | Path, *, chat: bool, model_max_length: int) -> Any:
    """Write tokenizer.json + tokenizer_config.json (with the ChatML template) to `out_dir`.

    eos is `<|im_end|>` for chat models (the end of an assistant turn) and
    `<|endoftext|>` for base models; pad is `<|endoftext|>` for both.
    """
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer_object(tiktoken_file),
        eos_token=IM_END if chat else ENDOFTEXT,
        pad_token=ENDOFTEXT,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer
