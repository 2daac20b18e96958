"""Log-likelihood scoring on a transformers model: logits only where they are read, shared prefixes encoded once.

Requests become rows: continuations of one token (multiple-choice letters
" A".." D") that share a context are one row whose last position is read for
each of them; a longer continuation is a row of its own, fed its context and
all its tokens but the last, whose last positions are read. Rows that start
with the same few-shot prefix form a group: the prefix is encoded once and
its keys and values serve every row of the group, in batches under the token
budget. How a batch of rows is run is the forward's business
(`scoring_forward.py`): packed through `Decoder` where the model allows it,
else transformers' padded forward.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch
from tqdm import tqdm

from qwen_evals.backends.batching import causal_pairs, shared_prefix_groups
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.prompting import PromptEncoder
from qwen_evals.core.types import LogLikelihood, LogLikelihoodResult

WINDOW = 4096
"""Requests tokenized and scored at a time: the token lists of a huge call never all live at once."""


class ScoringForward(Protocol):
    def prefix(self, tokens: list[int]) -> Any:
        """Keys and values of a shared prefix, for `logprobs(prefix=...)`."""
        ...

    def logprobs(self, rows: list[list[int]], reads: list[int], prefix: Any, offset: int) -> torch.Tensor:
        """float32 log-softmax at the last `reads[i]` positions of each row, rows after rows: (sum(reads), vocab)."""
        ...


@dataclass
class Row:
    """Tokens fed to the model once, and the continuations read from its last positions."""

    tokens: list[int]
    targets: list[list[int]] = field(default_factory=list)

    @property
    def read(self) -> int:
        return max(len(t) for t in self.targets)


class LogLikelihoodScorer:
    def __init__(
        self, forward: ScoringForward, prompts: PromptEncoder, batcher: Batcher, reuse_prefix: bool, min_prefix_tokens: int
    ) -> None:
        self.forward = forward
        self.prompts = prompts
        self.batcher = batcher
        self.reuse_prefix = reuse_prefix
        self.min_prefix_tokens = min_prefix_tokens

    @contextmanager
    def without_prefix_reuse(self) -> Iterator[None]:
        saved, self.reuse_prefix = self.reuse_prefix, False
        try:
            yield
        finally:
            self.reuse_prefix = saved

    @torch.inference_mode()
    def __call__(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]:
        results: list[LogLikelihoodResult] = []
        with self.batcher.progress(len(requests), "loglikelihood") as bar:
            for start in range(0, len(requests), WINDOW):
                window = requests[start : start + WINDOW]
                label = f"requests {start + 1:,}-{start + len(window):,} of {len(requests):,}"
                results += self._window(window, label, bar)
        return results

    def _window(self, requests: Sequence[LogLikelihood], label: str, bar: tqdm) -> list[LogLikelihoodResult]:
        encoded: dict[str, list[int]] = {}
        rows: list[Row] = []
        single: dict[tuple[int, ...], int] = {}
        places, context_tokens = [], []
        for request in requests:
            context, continuation = self.prompts.split(request, encoded)
            if len(continuation) == 1:
                index = single.setdefault(tuple(context), len(rows))
                if index == len(rows):
                    rows.append(Row(context))
            else:
                index = len(rows)
                rows.append(Row(context + continuation[:-1]))
            places.append((index, len(rows[index].targets)))
            rows[index].targets.append(continuation)
            context_tokens.append(len(context))
        groups = self._groups(rows)
        tokens = sum(len(r.tokens) for r in rows)
        to_run = tokens - sum(n * (len(m) - 1) for n, m in groups if len(m) > 1)
        bar.write(f"loglikelihood {label}: {len(rows):,} contexts, {tokens:,} prompt tokens, {to_run:,} to run (shared prefixes once)")
        scored = self._score(rows, groups, bar)
        return [replace(scored[r][t], context_tokens=n) for (r, t), n in zip(places, context_tokens)]

    def _groups(self, rows: list[Row]) -> list[tuple[int, list[int]]]:
        """Rows sharing a prefix of that many tokens (0: none shared)."""
        if not self.reuse_prefix:
            return [(0, list(range(len(rows))))]
        # A row's read positions stay out of the prefix: their logits are needed.
        return shared_prefix_groups([r.tokens[: len(r.tokens) - r.read + 1] for r in rows], self.min_prefix_tokens)

    def _score(self, rows: list[Row], groups: list[tuple[int, list[int]]], bar: tqdm) -> list[list[LogLikelihoodResult]]:
        results: list[list[LogLikelihoodResult]] = [[] for _ in rows]
        for prefix_len, members in groups:
            if len(members) == 1:
                prefix_len = 0
            prefix = self._prefix(rows[members[0]].tokens[:prefix_len], len(members)) if prefix_len else None
            suffixes = [rows[i].tokens[prefix_len:] for i in members]

            def run(batch: list[int], members=members, suffixes=suffixes, prefix=prefix, offset=prefix_len):
                chosen = [rows[members[j]] for j in batch]
                logprobs = self.forward.logprobs([suffixes[j] for j in batch], [r.read for r in chosen], prefix, offset)
                lengths = [len(suffixes[j]) for j in batch]
                self.batcher.count(
                    sum(lengths), attended=sum(causal_pairs(n, offset) for n in lengths), logit_rows=sum(r.read for r in chosen)
                )
                bar.update(sum(len(r.targets) for r in chosen) - len(batch))  # the batcher counts rows
                return pick(logprobs, chosen)

            for index, result in zip(members, self.batcher.run(suffixes, prefix_len, run, bar)):
                results[index] = result
        return results

    def _prefix(self, tokens: list[int], users: int) -> Any:
        kv = self.forward.prefix(tokens)
        self.batcher.count(len(tokens), attended=causal_pairs(len(tokens)))
        stats = self.batcher.stats
        stats["prefix_tokens_reused"] = stats.get("prefix_tokens_reused", 0) + len(tokens) * (users - 1)
        return kv


def pick(logprobs: torch.Tensor, rows: list[Row]) -> list[list[LogLikelihoodResult]]:
    """Each target's summed log-prob and whether every token was the argmax, from the rows' read positions.

    `logprobs` holds each row's last `row.read` positions, rows after rows; a
    target of n tokens is scored on its row's last n positions.
    """
    positions, tokens, owners = [], [], []
    end, count = 0, 0
    for row in rows:
        end += row.read
        for target in row.targets:
            positions += range(end - len(target), end)
            tokens += target
            owners += [count] * len(target)
            count += 1
    device = logprobs.device
    positions_t, tokens_t = torch.tensor(positions, device=device), torch.tensor(tokens, device=device)
    owners_t = torch.tensor(owners, device=device)
    picked = logprobs[positions_t, tokens_t]
    sums = torch.zeros(count, dtype=picked.dtype, device=device).index_add_(0, owners_t, picked)
    misses = (logprobs.argmax(-1)[positions_t] != tokens_t).to(picked.dtype)
    greedy = torch.zeros(count, dtype=picked.dtype, device=device).index_add_(0, owners_t, misses) == 0
    flat = [LogLikelihoodResult(s, g) for s, g in zip(sums.tolist(), greedy.tolist())]
    out, start = [], 0
    for row in rows:
        out.append(flat[start : start + len(row.targets)])
        start += len(row.targets)
    return out
