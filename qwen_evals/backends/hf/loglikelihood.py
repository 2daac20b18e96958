"""Log-likelihood scoring on a transformers model: logits only where they are read, shared prefixes encoded once.

Continuations of one token (multiple-choice letters " A".." D") that share a
context cost one forward whose last position is read for each of them; a
few-shot prefix shared by many contexts is encoded once and its KV cache
reused for every question. Other continuations go through the general path
that reads every continuation position.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import torch
from tqdm import tqdm

from qwen_evals.backends.batching import shared_prefix_groups
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.compat import ModelCompat
from qwen_evals.backends.prompting import PromptEncoder
from qwen_evals.core.types import LogLikelihood, LogLikelihoodResult


class LogLikelihoodScorer:
    def __init__(
        self, model: Any, compat: ModelCompat, prompts: PromptEncoder, batcher: Batcher, reuse_prefix: bool, min_prefix_tokens: int
    ) -> None:
        self.model = model
        self.compat = compat
        self.prompts = prompts
        self.batcher = batcher
        # Prefix reuse needs logit slicing and transformers' own cache classes.
        self.reuse_prefix = reuse_prefix and compat.slices_logits
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
        encoded: dict[str, list[int]] = {}
        pairs = [self.prompts.split(r, encoded) for r in requests]
        results: list[LogLikelihoodResult | None] = [None] * len(requests)
        by_context: dict[tuple[int, ...], list[int]] = {}
        multi = []
        for index, (context, continuation) in enumerate(pairs):
            if len(continuation) == 1:
                by_context.setdefault(tuple(context), []).append(index)
            else:
                multi.append(index)
        contexts = [list(c) for c in by_context]
        with self.batcher.progress(len(contexts) + len(multi), "loglikelihood") as bar:
            wanted = [[pairs[i][1][0] for i in by_context[tuple(c)]] for c in contexts]
            for context, token_results in zip(contexts, self._next_tokens(contexts, wanted, bar)):
                for index, result in zip(by_context[tuple(context)], token_results):
                    results[index] = result
            rows = [pairs[i][0] + pairs[i][1] for i in multi]
            continuations = [pairs[i][1] for i in multi]
            for index, result in zip(multi, self._continuations(rows, continuations, bar)):
                results[index] = result
        return [replace(r, context_tokens=len(context)) for r, (context, _) in zip(results, pairs)]  # type: ignore[arg-type]

    def _continuations(self, rows: list[list[int]], continuations: list[list[int]], bar: tqdm) -> list[LogLikelihoodResult]:
        def run(batch: list[int]) -> list[LogLikelihoodResult]:
            ids, mask, positions = self.batcher.left_pad([rows[i] for i in batch])
            keep = max(len(continuations[i]) for i in batch) + 1
            logprobs = self._logprobs(ids, mask, positions, keep)[:, :-1]
            out = []
            for row, i in enumerate(batch):
                target = torch.tensor(continuations[i], device=logprobs.device)
                scores = logprobs[row, -len(target) :]
                picked = scores.gather(-1, target[:, None]).squeeze(-1)
                out.append(LogLikelihoodResult(float(picked.sum()), bool((scores.argmax(-1) == target).all())))
            return out

        return self.batcher.run(rows, 0, run, bar)

    def _next_tokens(self, contexts: list[list[int]], wanted: list[list[int]], bar: tqdm) -> list[list[LogLikelihoodResult]]:
        """For each context, the log-prob of each wanted next token, reusing shared prefixes."""
        results: list[list[LogLikelihoodResult]] = [[] for _ in contexts]
        if self.reuse_prefix:
            groups = shared_prefix_groups(contexts, self.min_prefix_tokens)
        else:
            groups = [(0, list(range(len(contexts))))]
        for prefix_len, members in groups:
            chosen = [wanted[i] for i in members]
            if prefix_len and len(members) > 1:
                prefix = contexts[members[0]][:prefix_len]
                scored = self._after_prefix(prefix, [contexts[i][prefix_len:] for i in members], chosen, bar)
            else:
                scored = self._plain([contexts[i] for i in members], chosen, bar)
            for index, result in zip(members, scored):
                results[index] = result
        return results

    def _plain(self, rows: list[list[int]], wanted: list[list[int]], bar: tqdm) -> list[list[LogLikelihoodResult]]:
        def run(batch: list[int]) -> list[list[LogLikelihoodResult]]:
            ids, mask, positions = self.batcher.left_pad([rows[i] for i in batch])
            last = self._logprobs(ids, mask, positions, 1)[:, -1]
            return [_pick(last[row], wanted[i]) for row, i in enumerate(batch)]

        return self.batcher.run(rows, 0, run, bar)

    def _after_prefix(
        self, prefix: list[int], suffixes: list[list[int]], wanted: list[list[int]], bar: tqdm
    ) -> list[list[LogLikelihoodResult]]:
        """Encode `prefix` once, then run the suffixes in batches on top of its KV cache.

        Suffixes are left-padded *after* the prefix (prefix, pads, suffix), with
        the pads masked out and positions continuing from the prefix, so every
        row ends at the last position and reads one logit row.
        """
        prefix_ids = torch.tensor([prefix], device=self.batcher.device)
        output = self.model(input_ids=prefix_ids, use_cache=True, **self.compat.forward_kwargs(keep=1))
        kv = self.compat.layer_tensors(self.compat.cache_of(output))
        self.batcher.count(len(prefix))
        stats = self.batcher.stats
        stats["prefix_tokens_reused"] = stats.get("prefix_tokens_reused", 0) + len(prefix) * (len(suffixes) - 1)

        def run(batch: list[int]) -> list[list[LogLikelihoodResult]]:
            ids, mask, positions = self.batcher.left_pad([suffixes[i] for i in batch])
            size = len(batch)
            cache = self.compat.cache_from([(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1)) for k, v in kv])
            full_mask = torch.cat([torch.ones((size, len(prefix)), dtype=mask.dtype, device=mask.device), mask], dim=1)
            last = self._logprobs(ids, full_mask, positions + len(prefix), 1, cache, counted=mask)[:, -1]
            return [_pick(last[row], wanted[i]) for row, i in enumerate(batch)]

        return self.batcher.run(suffixes, len(prefix), run, bar)

    def _logprobs(self, ids, mask, positions, keep: int, cache=None, counted=None) -> torch.Tensor:
        """float32 log-softmax over the last `keep` positions."""
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=cache is not None,
            **self.compat.forward_kwargs(keep=keep, cache=cache),
        ).logits  # fmt: skip
        self.batcher.count(int((mask if counted is None else counted).sum()))
        return torch.log_softmax(logits[:, -keep:].float(), dim=-1)


def _pick(logprobs: torch.Tensor, tokens: list[int]) -> list[LogLikelihoodResult]:
    """Results for single-token continuations from one next-token distribution."""
    best = int(logprobs.argmax())
    return [LogLikelihoodResult(float(logprobs[t]), t == best) for t in tokens]
