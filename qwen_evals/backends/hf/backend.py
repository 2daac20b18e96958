"""Local transformers models: the `Backend` that loads a checkpoint and wires its scorer and generator.

Both request kinds are sorted by length, cut into batches under a token budget
and left-padded, with position ids taken from the attention mask so a padded
row computes what it would alone (`batcher.py`); log-likelihoods are scored in
`loglikelihood.py`, generations made in `generation.py`, and what differs
between transformers versions is in `compat.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from qwen_evals.backends.chat_format import QWEN_DEFAULT_SYSTEM
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.compat import ModelCompat
from qwen_evals.backends.hf.generation import Generator
from qwen_evals.backends.hf.loading import context_length, load_model_and_tokenizer, local_files_fingerprint
from qwen_evals.backends.hf.loglikelihood import LogLikelihoodScorer
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.prompting import PromptEncoder
from qwen_evals.backends.qwen1.cache import conversion_info, model_source
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, ModelTokenizer, Prompt


class HFBackend:
    def __init__(
        self,
        name: str,
        path: str,
        precision: Precision,
        revision: str | None = None,
        trust_remote_code: bool = False,
        convert: str | None = None,
        convert_cache_dir: str | None = None,
        gguf_file: str | None = None,
        long_context: dict[str, Any] | None = None,
        attn_implementation: str = "auto",
        device_map: str | None = "auto",
        max_length: int | None = None,
        max_batch_tokens: int = 32768,
        max_batch_size: int = 64,
        reuse_prefix: bool = True,
        min_prefix_tokens: int = 32,
        generation_engine: str = "static",
        system_prompt: str | None = QWEN_DEFAULT_SYSTEM,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.precision = precision
        load_path, load_revision = model_source(
            path, revision, convert=convert, trust_remote_code=trust_remote_code, cache_dir=convert_cache_dir
        )
        self.model, self.tokenizer, self.load_info = load_model_and_tokenizer(
            load_path,
            precision,
            revision=load_revision,
            trust_remote_code=trust_remote_code,
            gguf_file=gguf_file,
            attn_implementation=attn_implementation,
            device_map=device_map,
            long_context=dict(long_context) if long_context else None,
        )
        if load_path != path:
            origin = conversion_info(load_path)
            self.load_info.update(converted_copy=load_path, revision=origin.get("commit") or revision)
        self.max_length = max_length or context_length(self.model, self.tokenizer)
        self.prompts = PromptEncoder(self.tokenizer, system_prompt, self.max_length)
        self.generation_kwargs = dict(generation_kwargs or {})
        pad_id = next(
            (i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, getattr(self.tokenizer, "eod_id", None)) if i is not None),
            0,
        )  # fmt: skip
        self.batcher = Batcher(max_batch_tokens, max_batch_size, pad_id, next(self.model.parameters()).device)
        compat = ModelCompat(self.model)
        self.scorer = LogLikelihoodScorer(self.model, compat, self.prompts, self.batcher, reuse_prefix, min_prefix_tokens)
        self.generator = Generator(
            self.model, self.prompts, self.batcher, generation_engine, self.max_length, self.generation_kwargs,
            compat.continuous_batching,
        )  # fmt: skip

    # ---- the Backend contract -------------------------------------------------------

    def loglikelihood(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]:
        return self.scorer(requests)

    def generate(self, requests: Sequence[Generate]) -> list[Generation]:
        return self.generator(requests)

    @property
    def chat_format(self) -> str:
        return self.prompts.chat_format

    def render(self, prompt: Prompt) -> str:
        return self.prompts.render(prompt)

    def encode(self, prompt: Prompt) -> list[int]:
        return self.prompts.encode(prompt)

    def model_tokenizer(self) -> ModelTokenizer:
        return ModelTokenizer(self.tokenizer, self.max_length, self.prompts.encode)

    @property
    def stats(self) -> dict[str, Any]:
        return self.batcher.stats

    def identity(self) -> dict[str, Any]:
        """Everything besides the request that determines an output (keys of the resume store)."""
        return {
            "backend": "hf",
            "path": self.path,
            "revision": self.load_info.get("revision"),
            "local_files": local_files_fingerprint(self.path),
            "long_context": self.load_info.get("long_context"),
            "precision": dataclasses.asdict(self.precision),
            "chat_format": self.chat_format,
            "system_prompt": self.prompts.system_prompt,
            "prompt_encoding": self.prompts.encoding,
            "max_length": self.max_length,
            "generation_kwargs": self.generation_kwargs,
        }

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """Batch size 1 and no prefix reuse, for batch-invariance checks; run stats are left untouched."""
        with self.batcher.one_at_a_time(), self.scorer.without_prefix_reuse():
            yield

    def describe(self) -> dict[str, Any]:
        stop_ids = self.generator.stop_ids()
        info = {
            "backend": "hf",
            "path": self.path,
            "max_length": self.max_length,
            **self.prompts.describe(),
            "max_batch_tokens": self.batcher.max_batch_tokens,
            "generation_kwargs": self.generation_kwargs,
            "generation": {
                "settings": self.generator.effective,
                "checkpoint_defaults_overridden": self.generator.checkpoint_defaults_overridden,
                "user_overrides": self.generation_kwargs,
                "stop_tokens": dict(zip(self.prompts.token_names(stop_ids), stop_ids)),
            },
            **self.load_info,
            **self.batcher.stats,
            "truncated_prompts": self.prompts.truncated,
            "tokens_per_second": self.batcher.tokens_per_second(),
        }
        if torch.cuda.is_available():
            info["peak_gpu_memory_gb"] = torch.cuda.max_memory_allocated() / 2**30
        return info
