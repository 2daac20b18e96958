"""Generation in refilled slots: a finished sequence leaves at once and a waiting prompt takes its place.

transformers' own continuous batching (`generate_batch`) is slower than its
static `generate` on CPU (BENCHMARKS.md): without a varlen attention kernel
it packs every live sequence into one row and attends each new token to the
keys of *all* sequences under a block-diagonal mask, so a decoding step costs
batch x (all cached tokens) instead of batch x (own tokens), and it sizes and
zero-fills its cache from the machine's total memory. This loop keeps each
sequence's keys and values in a slot of its own (`SlotCache`) and runs:

- prefill: waiting prompts, longest first, packed without padding into free
  slots (as many as the token budget allows per forward);
- decode: one token for every live slot per forward, attending to its own
  slot only; a sequence that ends (end token, `max_new`, stop string) frees
  its slot, and the last live slot moves into the hole so live slots stay
  leading and a step reads a slice of the cache, never a gathered copy.

Tokens are chosen as transformers' `generate` chooses them for the same
settings: the repetition penalty, then (sampling) temperature, top-k, top-p,
using transformers' own logits processors.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from qwen_evals.backends.batching import causal_pairs
from qwen_evals.backends.hf.attention import RowsAttention, SlotAttention, SlotCache
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.decoder import Decoder
from qwen_evals.core.types import Decoding


@dataclass
class Live:
    """One sequence in a slot."""

    request: int
    length: int
    """Tokens in its slot so far (prompt + generated, the last one not yet fed)."""
    generated: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Finished:
    generated: list[int]
    seconds: float
    """From this sequence's prefill to its last token."""


def token_chooser(decoding: Decoding) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """(logits (n, vocab), tokens so far (n, length) or None) -> next token ids (n,)."""
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    processors = LogitsProcessorList()
    if decoding.repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(decoding.repetition_penalty))
    if not decoding.greedy:
        if decoding.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(decoding.temperature))
        if decoding.top_k:
            processors.append(TopKLogitsWarper(decoding.top_k))
        if decoding.top_p < 1.0:
            processors.append(TopPLogitsWarper(decoding.top_p))

    def choose(logits: torch.Tensor, history: torch.Tensor | None) -> torch.Tensor:
        if processors:
            logits = processors(history, logits)
        if decoding.greedy:
            # The first index of each row's maximum, as argmax gives (documented for both); torch's CPU
            # max-with-index reduction runs 2.5-3x faster than argmax over 50 rows of a 49k-152k vocabulary.
            return logits.max(-1).indices
        return torch.multinomial(torch.softmax(logits, dim=-1), 1)[:, 0]

    return choose


class RefillLoop:
    """Runs groups of prompts that share their settings through refilled slots."""

    def __init__(self, decoder: Decoder, batcher: Batcher) -> None:
        self.decoder = decoder
        self.batcher = batcher
        """Its token budget and batch size limit the slots (batch size 1 for the canary); its stats are the run's."""

    def slots_for(self, rows: Sequence[list[int]], max_new: int) -> tuple[int, int]:
        """(slots, capacity): every sequence fits a slot; slots x capacity stays within the token budget."""
        capacity = max(len(r) for r in rows) + max_new
        limit = min(self.batcher.max_batch_size, len(rows), self.batcher.max_batch_tokens // capacity)
        return max(1, limit), capacity

    @torch.inference_mode()
    def run(self, rows: Sequence[list[int]], settings: Settings, on_finish: Callable[[], None]) -> list[Finished]:
        """Generated token ids of every row (the end token included when one ended it)."""
        slots, capacity = self.slots_for(rows, settings.max_new)
        run = _SlotRun(self, rows, settings, slots, capacity, on_finish)
        run.loop()
        totals = self.batcher.stats.setdefault("refill", {})
        for key, value in run.counts.items():
            totals[key] = totals.get(key, 0) + value
        totals["slots"] = max(totals.get("slots", 0), slots)
        return run.done  # type: ignore[return-value]


@dataclass(frozen=True)
class Settings:
    """What ends a sequence and how its tokens are chosen."""

    max_new: int
    decoding: Decoding
    end_ids: frozenset[int]
    stopped: Callable[[list[int]], bool]
    """True once the generated ids contain a stop string."""


class _SlotRun:
    """The state of one `RefillLoop.run`: the cache, the live sequences in slot order, the results."""

    def __init__(self, loop: RefillLoop, rows, settings: Settings, slots: int, capacity: int, on_finish) -> None:
        decoder = self.decoder = loop.decoder
        shapes = decoder.shapes
        self.cache = SlotCache(shapes.layers, slots, shapes.kv_heads, capacity, shapes.head_dim, decoder.dtype, decoder.device)
        self.rows, self.settings, self.slots, self.on_finish = rows, settings, slots, on_finish
        self.batcher = loop.batcher
        # The repetition penalty reads every token so far; unused cells repeat the row's first token.
        penalized = settings.decoding.repetition_penalty != 1.0
        self.history = torch.zeros((slots, capacity), dtype=torch.long, device=decoder.device) if penalized else None
        self.choose = token_chooser(settings.decoding)
        self.waiting = deque(sorted(range(len(rows)), key=lambda i: -len(rows[i])))
        self.live: list[Live] = []
        self.done: list[Finished | None] = [None] * len(rows)
        self.counts = {"prefills": 0, "decode_steps": 0, "decoded_tokens": 0, "decode_attended": 0, "decode_seconds": 0.0}
        """The run's share of stats["refill"]: decoding steps, the tokens and query-key pairs they ran, their time."""

    def loop(self) -> None:
        while self.waiting or self.live:
            if self.waiting and len(self.live) < self.slots:
                first = len(self.live)
                self._append(first, self._prefill(self._admit(self.slots - first)))
            else:
                start = time.perf_counter()
                self._append(0, self._decode())
                self.counts["decode_seconds"] += time.perf_counter() - start
            self._retire()

    def _admit(self, free: int) -> list[int]:
        """Waiting rows for one prefill: up to `free`, within the token budget (at least one)."""
        admitted, tokens = [], 0
        while self.waiting and len(admitted) < free:
            size = len(self.rows[self.waiting[0]])
            if admitted and tokens + size > self.batcher.max_batch_tokens:
                break
            tokens += size
            admitted.append(self.waiting.popleft())
        return admitted

    def _prefill(self, admitted: list[int]) -> torch.Tensor:
        """Next-token logits after each admitted prompt; its keys and values land in the next free slots."""
        device, first = self.decoder.device, len(self.live)
        prompts = [self.rows[i] for i in admitted]
        lengths = [len(p) for p in prompts]
        self.live += [Live(i, n) for i, n in zip(admitted, lengths)]
        if self.history is not None:
            for slot, prompt in enumerate(prompts, start=first):
                self.history[slot, : len(prompt)] = torch.tensor(prompt)
                self.history[slot, len(prompt) :] = prompt[0]
        attention = RowsAttention(lengths, device, self.decoder.dtype, sink=self.cache.filler(range(first, len(self.live)), lengths))
        tokens = torch.tensor([t for p in prompts for t in p], device=device)
        hidden = self.decoder.hidden(tokens, attention.positions(), attention)
        self.counts["prefills"] += 1
        self.batcher.count(sum(lengths), attended=sum(causal_pairs(n) for n in lengths), logit_rows=len(lengths))
        return self.decoder.logits(hidden[torch.cumsum(torch.tensor(lengths, device=device), 0) - 1])

    def _decode(self) -> torch.Tensor:
        """Next-token logits of every live sequence after feeding its last token."""
        device = self.decoder.device
        positions = torch.tensor([s.length for s in self.live], device=device)
        tokens = torch.tensor([s.generated[-1] for s in self.live], device=device)
        logits = self.decoder.logits(self.decoder.hidden(tokens, positions, SlotAttention(self.cache, positions)))
        for s in self.live:
            s.length += 1
        attended = sum(s.length for s in self.live)
        self.batcher.count(len(self.live), attended=attended, logit_rows=len(self.live))
        counts = self.counts
        counts["decode_steps"] += 1
        counts["decoded_tokens"] += len(self.live)
        counts["decode_attended"] += attended
        return logits

    def _append(self, first: int, logits: torch.Tensor) -> None:
        """Choose the next token of the live sequences from slot `first` on."""
        history = None
        if self.history is not None:
            history = self.history[first : len(self.live), : max(s.length for s in self.live[first:])]
        for slot, token in enumerate(self.choose(logits, history).tolist(), start=first):
            s = self.live[slot]
            s.generated.append(token)
            if self.history is not None and s.length < self.history.shape[1]:
                self.history[slot, s.length] = token

    def _retire(self) -> None:
        """Drop finished sequences; the last live sequence moves into each freed slot."""
        settings, live = self.settings, self.live
        now = time.perf_counter()
        slot = 0
        while slot < len(live):
            s = live[slot]
            if not (s.generated[-1] in settings.end_ids or len(s.generated) >= settings.max_new or settings.stopped(s.generated)):
                slot += 1
                continue
            self.done[s.request] = Finished(s.generated, now - s.started)
            self.on_finish()
            last = live.pop()
            if last is not s:
                live[slot] = last
                self.cache.move(len(live), slot, last.length)
                if self.history is not None:
                    self.history[slot] = self.history[len(live)]
