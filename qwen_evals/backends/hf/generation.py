"""Generation on a transformers model: batched `generate` with stop strings, or transformers' continuous batching.

Requests are grouped by their generation settings (one `generate` call per
group), prompts are fitted to the context window, and the text after the
earliest stop string is cut, since generation may run past a stop string that
ends inside a token.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from qwen_evals.backends.batching import by_generation_settings
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.prompting import PromptEncoder, cut_at_stop
from qwen_evals.core.errors import EvalError
from qwen_evals.core.types import Generate

ENGINES = ("static", "continuous")


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
    ) -> None:
        if engine not in ENGINES:
            raise EvalError(f"model.generation_engine={engine!r} is not one of {list(ENGINES)}")
        if engine == "continuous" and not continuous_available:
            raise EvalError("model.generation_engine=continuous needs a transformers version with generate_batch")
        self.model = model
        self.prompts = prompts
        self.batcher = batcher
        self.engine = engine
        self.max_length = max_length
        self.generation_kwargs = generation_kwargs

    @torch.inference_mode()
    def __call__(self, requests: Sequence[Generate]) -> list[str]:
        results: list[str] = [""] * len(requests)
        for (max_new, stop, temperature), members in by_generation_settings(requests).items():
            rows = [self.prompts.fit(self.prompts.encode(requests[i].prompt), self.max_length - max_new) for i in members]
            with self.batcher.progress(len(rows), "generate") as bar:
                if self.engine == "continuous":
                    texts = self._continuous(rows, max_new, stop, temperature, bar)
                else:
                    batch = partial(self._static_batch, rows, max_new, stop, temperature)
                    texts = self.batcher.run(rows, max_new, batch, bar)
            for index, text in zip(members, texts):
                results[index] = text
        return results

    def _stop_ids(self) -> list[int]:
        return self.prompts.stop_token_ids(self.model.generation_config.eos_token_id)

    def _continuous(self, rows: list[list[int]], max_new: int, stop: tuple[str, ...], temperature: float, bar: tqdm) -> list[str]:
        """transformers' continuous batching (paged attention): a finished sequence frees its slot at once.

        Stop strings are applied to the finished text, so a sequence that meets
        one runs on to its end-of-turn token or `max_new`.
        """
        from transformers import GenerationConfig

        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            eos_token_id=self._stop_ids(),
            pad_token_id=self.batcher.pad_id,
            **self.generation_kwargs,
        )
        start = time.perf_counter()
        outputs = self.model.generate_batch(inputs=rows, generation_config=config, progress_bar=False)
        # Request ids are "req_<position in inputs>".
        generated = [outputs[f"req_{i}"].generated_tokens for i in range(len(rows))]
        self.batcher.count(sum(len(r) for r in rows) + sum(len(g) for g in generated), time.perf_counter() - start)
        bar.update(len(rows))
        return [cut_at_stop(self.prompts.tokenizer.decode(g, skip_special_tokens=True), stop) for g in generated]

    def _static_batch(
        self, rows: list[list[int]], max_new: int, stop: tuple[str, ...], temperature: float, batch: list[int]
    ) -> list[str]:
        ids, mask, _ = self.batcher.left_pad([rows[i] for i in batch])
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        stops = {"stop_strings": list(stop), "tokenizer": self.prompts.tokenizer} if stop else {}
        out = self.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new,
            eos_token_id=self._stop_ids(),
            pad_token_id=self.batcher.pad_id,
            **sampling,
            **stops,
            **self.generation_kwargs,
        )
        new = out[:, ids.shape[1] :]
        self.batcher.count(int(mask.sum()) + int((new != self.batcher.pad_id).sum()))
        return [cut_at_stop(self.prompts.tokenizer.decode(row, skip_special_tokens=True), stop) for row in new]
