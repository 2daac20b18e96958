"""Batches for the transformers backend: length-sorted under a token budget, split in two on CUDA out-of-memory.

One `Batcher` serves the log-likelihood scorer and the generator alike, and
keeps the run statistics (tokens, seconds, batch sizes used, OOM splits) that
summary.json records. `one_at_a_time` switches it to batch size 1 for the
batch-invariance canary without touching those statistics.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tqdm import tqdm

from qwen_evals.backends.batching import plan_batches


class Batcher:
    def __init__(self, max_batch_tokens: int, max_batch_size: int, pad_id: int, device: Any) -> None:
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.pad_id = pad_id
        self.device = device
        self.stats: dict[str, Any] = {
            "tokens": 0, "attended_pairs": 0, "logit_rows": 0, "seconds": 0.0, "batch_sizes": {}, "oom_splits": 0,
        }  # fmt: skip
        """tokens run through the layers, query-key pairs their attention needed, positions the LM head ran at:
        the work a run needed (padding excluded), from which benchmarks/ counts FLOPs."""

    def progress(self, total: int, label: str, plan: str | None = None) -> tqdm:
        """A progress bar over `total` requests, after a line saying what work they are (`plan`)."""
        if plan is not None:
            tqdm.write(f"{label}: {plan}")
        return tqdm(total=total, desc=label, unit="req", dynamic_ncols=True)

    def left_pad(self, rows: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ids, attention mask, position ids) with rows padded on the left; positions count real tokens only."""
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def run(self, items: Sequence[list[int]], extra: int, run: Callable[[list[int]], list[Any]], bar: tqdm) -> list[Any]:
        """`run` over length-sorted batches of item indices; results in item order.

        `extra` tokens per item count against the budget besides the item itself
        (new tokens to generate, or a cached prefix).
        """
        results: list[Any] = [None] * len(items)
        pending = list(reversed(plan_batches([len(x) + extra for x in items], self.max_batch_tokens, self.max_batch_size)))
        start = time.perf_counter()
        while pending:
            batch = pending.pop()
            try:
                outputs = run(batch)
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                torch.cuda.empty_cache()
                self.stats["oom_splits"] += 1
                half = len(batch) // 2
                pending += [batch[half:], batch[:half]]
                continue
            for index, output in zip(batch, outputs):
                results[index] = output
            sizes = self.stats["batch_sizes"]
            sizes[len(batch)] = sizes.get(len(batch), 0) + 1
            bar.update(len(batch))
            elapsed = self.stats["seconds"] + time.perf_counter() - start
            bar.set_postfix(tok_s=f"{self.stats['tokens'] / max(elapsed, 1e-9):.0f}")
        self.stats["seconds"] += time.perf_counter() - start
        return results

    def count(self, tokens: int, seconds: float = 0.0, attended: int = 0, logit_rows: int = 0) -> None:
        self.stats["tokens"] += tokens
        self.stats["seconds"] += seconds
        self.stats["attended_pairs"] += attended
        self.stats["logit_rows"] += logit_rows

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """Batch size 1 within the block; the run's statistics are restored afterwards."""
        saved = (self.max_batch_size, copy.deepcopy(self.stats))
        self.max_batch_size = 1
        try:
            yield
        finally:
            self.max_batch_size, self.stats = saved

    def tokens_per_second(self) -> float | None:
        return self.stats["tokens"] / self.stats["seconds"] if self.stats["seconds"] else None
