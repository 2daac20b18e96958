"""Generation on a transformers model: refilled slots (`refill.py`), batched `generate`, or transformers' continuous batching.

Requests are grouped by their generation settings (one engine call per
group), prompts are fitted to the context window, and the text after the
earliest stop string is cut, since generation may run past a stop string that
ends inside a token. The engine `auto` is `refill` where `Decoder` runs the
model and no `model.generation_kwargs` ask for more than a `Decoding` says
(only `generate` honours those), else `static`.

Decoding is the request's (`Decoding`: the protocol's settings) and nothing
else: the checkpoint's own generation config is emptied of its sampling
defaults when the model is loaded (`neutralize_generation_config`), because
transformers fills every setting a call leaves unset from it (Qwen-7B-Chat's
repetition_penalty 1.1 would otherwise apply to "greedy" runs). What was
removed is recorded; `model.generation_kwargs` stays an explicit, recorded override.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from qwen_evals.backends.batching import by_generation_settings
from qwen_evals.backends.decoding import VOCABULARY_FIELDS, decoding_defaults
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.decoder import Decoder, unsupported_reason
from qwen_evals.backends.hf.refill import RefillLoop, Settings
from qwen_evals.backends.prompting import PromptEncoder, split_at_stop
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Decoding, Generate, Generation

ENGINES = ("auto", "refill", "static", "continuous")
STOP_WINDOW_SLACK = 4
"""Tokens decoded beyond the longest stop string's length when looking for it at each step."""
PAGE_TOKENS = 256
"""Tokens per page of transformers' paged cache (its default)."""
CONTINUOUS_STEP_TOKENS = 1024
"""Tokens one continuous-batching forward takes at most: its attention mask is these x every cached token."""


def neutralize_generation_config(model: Any) -> dict[str, Any]:
    """Replace the model's generation config by one without decoding defaults; returns what was removed."""
    from transformers import GenerationConfig

    checkpoint = model.generation_config
    removed = decoding_defaults(checkpoint)
    model.generation_config = GenerationConfig(**{k: getattr(checkpoint, k, None) for k in VOCABULARY_FIELDS})
    return removed


def decoding_settings(decoding: Decoding) -> dict[str, Any]:
    """transformers `generate` settings for exactly this decoding (every one set, none left to defaults)."""
    if decoding.greedy:
        return {"do_sample": False, "repetition_penalty": decoding.repetition_penalty}
    return {
        "do_sample": True,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "top_k": decoding.top_k,
        "repetition_penalty": decoding.repetition_penalty,
    }


class Generator:
    def __init__(
        self,
        model: Any,
        prompts: PromptEncoder,
        batcher: Batcher,
        engine: str,
        max_length: int,
        generation_kwargs: dict[str, Any],
        continuous_available: bool,
        decoder: Decoder | None,
    ) -> None:
        if engine not in ENGINES:
            raise EvalError(f"model.generation_engine={engine!r} is not one of {list(ENGINES)}")
        if engine == "continuous" and not continuous_available:
            raise EvalError("model.generation_engine=continuous needs a transformers version with generate_batch")
        if engine == "refill" and decoder is None:
            raise EvalError(f"model.generation_engine=refill cannot run this model: {unsupported_reason(model)}")
        if engine == "refill" and generation_kwargs:
            raise EvalError("model.generation_engine=refill takes no model.generation_kwargs (only generate does)")
        if engine == "auto":
            engine = "refill" if decoder is not None and not generation_kwargs else "static"
        self.model = model
        self.prompts = prompts
        self.batcher = batcher
        self.engine = engine
        self.refill = RefillLoop(decoder, batcher) if decoder else None
        self.max_length = max_length
        self.generation_kwargs = generation_kwargs
        self.checkpoint_defaults_overridden = neutralize_generation_config(model)
        self.effective: list[dict[str, Any]] = []
        """Every distinct set of generation settings a call used (recorded in summary.json)."""

    @torch.inference_mode()
    def __call__(self, requests: Sequence[Generate]) -> list[Generation]:
        results: list[Generation | None] = [None] * len(requests)
        for (max_new, stop, decoding), members in by_generation_settings(requests).items():
            config = self._config(max_new, decoding, stop)
            prompts = [requests[i].prompt for i in members]
            encoded = [self.prompts.encode(p) for p in prompts]
            room = self.max_length - max_new
            rows = [self.prompts.fit(ids, room) for ids in encoded]
            plan = f"{len(rows):,} prompts, {sum(map(len, rows)):,} prompt tokens, up to {max_new} new tokens each"
            with self.batcher.progress(len(rows), "generate", plan) as bar:
                if self.engine == "refill":
                    made = self._refilled(rows, max_new, decoding, stop, bar)
                elif self.engine == "continuous":
                    made = self._continuous(rows, config, stop, bar)
                else:
                    made = self.batcher.run(rows, max_new, partial(self._static_batch, rows, config, stop), bar)
            for index, prompt, ids, row, (text, reason, ended_by, n_new, seconds) in zip(
                members, prompts, encoded, rows, made
            ):
                results[index] = Generation(
                    text, reason, ended_by, len(row), n_new, len(ids) > room, self.prompts.render(prompt), seconds
                )
        return results  # type: ignore[return-value]

    def _config(self, max_new: int, decoding: Decoding, stop: tuple[str, ...]) -> Any:
        from transformers import GenerationConfig

        settings = {
            "max_new_tokens": max_new,
            **decoding_settings(decoding),
            "eos_token_id": self.stop_ids(),
            "pad_token_id": self.batcher.pad_id,
            **({"stop_strings": list(stop)} if stop else {}),
            **self.generation_kwargs,
        }
        if settings not in self.effective:
            self.effective.append(settings)
        return GenerationConfig(**settings)

    def stop_ids(self) -> list[int]:
        """Every eos id the model declares (generation config and model config) and the chat format's turn tokens."""
        return self.prompts.stop_token_ids(self.model.generation_config.eos_token_id, self.model.config.eos_token_id)

    def _finish(self, new_ids: list[int], max_new: int, stop: tuple[str, ...]) -> tuple[str, str, str | None, int]:
        """(text, finish reason, what ended it, generated token count) of one row of new token ids."""
        stop_ids = set(self.stop_ids())
        end = next((k for k, token in enumerate(new_ids) if token in stop_ids), None)
        kept = new_ids if end is None else new_ids[:end]
        if end is None:  # a row finished by a stop string is padded after it
            while kept and kept[-1] == self.batcher.pad_id and len(kept) < max_new:
                kept = kept[:-1]
        text, string = split_at_stop(self.prompts.tokenizer.decode(kept, skip_special_tokens=True), stop)
        if string is not None:
            return text, "stop", string, len(kept)
        if end is not None:
            return text, "eos", self.prompts.tokenizer.decode([new_ids[end]]), end + 1
        return text, "length", None, len(kept)

    def _refilled(self, rows: list[list[int]], max_new: int, decoding: Decoding, stop: tuple[str, ...], bar: tqdm) -> list[tuple]:
        start = time.perf_counter()
        settings = Settings(max_new, decoding, frozenset(self.stop_ids()), self._stop_check(stop))
        finished = self.refill.run(rows, settings, lambda: bar.update(1))
        self.batcher.count(0, time.perf_counter() - start)  # the loop counted its tokens
        return [(*self._finish(f.generated, max_new, stop), f.seconds) for f in finished]

    def _stop_check(self, stop: tuple[str, ...]):
        """Whether generated ids contain a stop string, decoding only the last few tokens."""
        if not stop:
            return lambda ids: False
        window = max(len(s) for s in stop) + STOP_WINDOW_SLACK
        decode = self.prompts.tokenizer.decode
        return lambda ids: any(s in decode(ids[-window:], skip_special_tokens=True) for s in stop)

    def _continuous(self, rows: list[list[int]], config: Any, stop: tuple[str, ...], bar: tqdm) -> list[tuple]:
        """transformers' continuous batching (paged attention): a finished sequence frees its slot at once.

        Stop strings are applied to the finished text, so a sequence that meets
        one runs on to its end-of-turn token or `max_new`.
        """
        start = time.perf_counter()
        outputs = self.model.generate_batch(
            inputs=rows, generation_config=config, continuous_batching_config=self._paged_cache_size(rows, config.max_new_tokens),
            progress_bar=False,
        )  # fmt: skip
        # Request ids are "req_<position in inputs>".
        generated = [list(outputs[f"req_{i}"].generated_tokens) for i in range(len(rows))]
        seconds = time.perf_counter() - start
        finished = [self._finish(g, config.max_new_tokens, stop) for g in generated]
        self.batcher.count(sum(len(r) for r in rows) + sum(f[3] for f in finished), seconds)
        bar.update(len(rows))
        return [(*f, seconds) for f in finished]

    def _paged_cache_size(self, rows: list[list[int]], max_new: int) -> Any:
        """A paged cache no larger than the run needs and the token budget allows.

        Left to itself, transformers sizes the cache (and the attention masks,
        step tokens x cached tokens) from the device's free memory, which on a
        CPU is most of the machine's RAM.
        """
        from transformers import ContinuousBatchingConfig

        longest = max(len(r) for r in rows) + max_new
        kv_tokens = max(longest, min(sum(len(r) + max_new for r in rows), self.batcher.max_batch_tokens))
        return ContinuousBatchingConfig(
            num_blocks=-(-kv_tokens // PAGE_TOKENS), page_size=PAGE_TOKENS,
            max_batch_tokens=min(CONTINUOUS_STEP_TOKENS, self.batcher.max_batch_tokens),
        )  # fmt: skip

    def _static_batch(self, rows: list[list[int]], config: Any, stop: tuple[str, ...], batch: list[int]) -> list[tuple]:
        ids, mask, _ = self.batcher.left_pad([rows[i] for i in batch])
        start = time.perf_counter()
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, tokenizer=self.prompts.tokenizer
        )
        seconds = time.perf_counter() - start
        finished = [self._finish(row.tolist(), config.max_new_tokens, stop) for row in out[:, ids.shape[1] :]]
        self.batcher.count(int(mask.sum()) + sum(f[3] for f in finished))
        return [(*f, seconds) for f in finished]
