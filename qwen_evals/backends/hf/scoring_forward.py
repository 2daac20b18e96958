"""The two ways the log-likelihood scorer runs a batch of rows over a shared prefix.

`PackedForward` (models `Decoder` runs): the rows' tokens packed into one
sequence, no padding in any matmul, the prefix's keys and values read by
every row's attention. `PaddedForward` (any other model): transformers'
forward on left-padded rows, the prefix cache expanded over the batch.
Both compute the LM head only at the positions that are read.
"""

from __future__ import annotations

from typing import Any

import torch

from qwen_evals.backends.hf.attention import KeyValues, RowsAttention, record_into
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.compat import ModelCompat
from qwen_evals.backends.hf.decoder import Decoder


def last_positions(lengths: list[int], reads: list[int], device: Any) -> torch.Tensor:
    """Indices, in rows packed back to back, of each row's last `reads[i]` tokens."""
    ends = torch.cumsum(torch.tensor(lengths, device=device), 0)
    counts = torch.tensor(reads, device=device)
    back = torch.arange(int(counts.sum()), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0), counts)
    return torch.repeat_interleave(ends, counts) + back


class PackedForward:
    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder

    def prefix(self, tokens: list[int]) -> KeyValues:
        kv: KeyValues = []
        attention = RowsAttention([len(tokens)], self.decoder.device, self.decoder.dtype, sink=record_into(kv))
        self.decoder.hidden(torch.tensor(tokens, device=self.decoder.device), attention.positions(), attention)
        return kv

    def logprobs(self, rows: list[list[int]], reads: list[int], prefix: KeyValues | None, offset: int) -> torch.Tensor:
        device = self.decoder.device
        lengths = [len(r) for r in rows]
        attention = RowsAttention(lengths, device, self.decoder.dtype, prefix=prefix)
        tokens = torch.tensor([t for row in rows for t in row], device=device)
        hidden = self.decoder.hidden(tokens, attention.positions(offset), attention)
        return torch.log_softmax(self.decoder.logits(hidden[last_positions(lengths, reads, device)]), dim=-1)


class PaddedForward:
    def __init__(self, model: Any, compat: ModelCompat, batcher: Batcher) -> None:
        self.model = model
        self.compat = compat
        self.batcher = batcher

    @torch.inference_mode()
    def prefix(self, tokens: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        ids = torch.tensor([tokens], device=self.batcher.device)
        output = self.model(input_ids=ids, use_cache=True, **self.compat.forward_kwargs(keep=1))
        return self.compat.layer_tensors(self.compat.cache_of(output))

    @torch.inference_mode()
    def logprobs(self, rows: list[list[int]], reads: list[int], prefix: Any, offset: int) -> torch.Tensor:
        """Rows left-padded *after* the prefix (prefix, pads, row), pads masked out, positions continuing from it."""
        ids, mask, positions = self.batcher.left_pad(rows)
        keep = max(reads)
        cache = None
        if prefix is not None:
            size = len(rows)
            cache = self.compat.cache_from([(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in prefix])
            mask = torch.cat([torch.ones((size, offset), dtype=mask.dtype, device=mask.device), mask], dim=1)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions + offset, use_cache=cache is not None,
            **self.compat.forward_kwargs(keep=keep, cache=cache),
        ).logits[:, -keep:]  # fmt: skip
        read = torch.cat([logits[i, keep - n :] for i, n in enumerate(reads)])
        return torch.log_softmax(read.float(), dim=-1)
