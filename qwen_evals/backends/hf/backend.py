"""Local transformers models: the `Backend` that loads a checkpoint and wires its scorer and generator.

Both request kinds are sorted by length and cut into batches under a token
budget (`batcher.py`). Where the model has the common decoder layout,
`decoder.py` runs its modules on packed tokens (no padding in any matmul),
the scorer reads shared few-shot prefixes once and generation refills slots
as sequences finish (`refill.py`); other models go through transformers'
padded forward and `generate`. Log-likelihoods are scored in
`loglikelihood.py`, generations made in `generation.py`, and what differs
between transformers versions is in `compat.py`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from qwen_evals.backends.chat_format import QWEN_DEFAULT_SYSTEM
from qwen_evals.backends.checkpoints import weights_identity
from qwen_evals.backends.hf.batcher import Batcher
from qwen_evals.backends.hf.compat import ModelCompat
from qwen_evals.backends.hf.cpu_linear import check_choice
from qwen_evals.backends.hf.decoder import Decoder
from qwen_evals.backends.hf.generation import Generator
from qwen_evals.backends.hf.loading import (
    context_length,
    load_device,
    load_model_and_tokenizer,
    local_files_fingerprint,
)
from qwen_evals.backends.hf.loglikelihood import LogLikelihoodScorer
from qwen_evals.backends.hf.scoring_forward import PackedForward, PaddedForward
from qwen_evals.backends.memory import MemoryMeter
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.prompting import PromptEncoder
from qwen_evals.backends.qwen1.cache import check_convertible, conversion_info, model_source, needs_download
from qwen_evals.core.hub import HubResource
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
        packed: bool = True,
        pack_linears: bool | str = "auto",
        generation_engine: str = "auto",
        system_prompt: str | None = QWEN_DEFAULT_SYSTEM,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_choice(pack_linears)  # before the slow load
        self.pack_linears = pack_linears
        self.name = name
        self.path = path
        self.revision = revision
        self.precision = precision
        self.memory = MemoryMeter(load_device(device_map))
        self.memory.loading()
        self.generation_engine = generation_engine
        self.gguf_file = gguf_file
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
            cache_dir=convert_cache_dir,
        )
        self.memory.loaded()
        self.load_path = load_path
        self.origin = conversion_info(load_path) if load_path != path else {}
        if self.origin:
            self.load_info.update(converted_copy=load_path, revision=self.origin.get("commit") or revision)
        self.max_length = max_length or context_length(self.model, self.tokenizer)
        self.prompts = PromptEncoder(self.tokenizer, system_prompt, self.max_length)
        self.generation_kwargs = dict(generation_kwargs or {})
        pad_id = next(
            (i for i in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id, getattr(self.tokenizer, "eod_id", None)) if i is not None),
            0,
        )  # fmt: skip
        self.batcher = Batcher(max_batch_tokens, max_batch_size, pad_id, next(self.model.parameters()).device)
        compat = ModelCompat(self.model)
        self.decoder = Decoder.of(self.model, pack_linears) if packed else None
        if self.decoder is not None:
            forward: PackedForward | PaddedForward = PackedForward(self.decoder)
        else:
            forward = PaddedForward(self.model, compat, self.batcher)
            # Prefix reuse on the padded path needs logit slicing and transformers' own cache classes.
            reuse_prefix = reuse_prefix and compat.slices_logits
        self.scorer = LogLikelihoodScorer(forward, self.prompts, self.batcher, reuse_prefix, min_prefix_tokens)
        self.generator = Generator(
            self.model, self.prompts, self.batcher, generation_engine, self.max_length, self.generation_kwargs,
            compat.continuous_batching, self.decoder,
        )  # fmt: skip

    @staticmethod
    def preflight(
        path: str,
        revision: str | None = None,
        convert: str | None = None,
        trust_remote_code: bool = False,
        convert_cache_dir: str | None = None,
        **_: Any,
    ) -> list[HubResource]:
        """Checks that need no model, run before any work; returns what loading would fetch from the hub."""
        if convert and not trust_remote_code:
            check_convertible(path)
            fetches = needs_download(path, revision, convert_cache_dir)
        else:
            fetches = not Path(path).expanduser().exists()
        return [HubResource("model", path, "model.path=<local model dir>")] if fetches else []

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

    def checkpoint(self) -> dict[str, Any]:
        return self._checkpoint

    @cached_property
    def _checkpoint(self) -> dict[str, Any]:
        """Hashed once per backend (and per weight file, across runs: `core/fingerprint.py`)."""
        return {
            "path": self.path,
            "revision": self.revision,
            "commit": self.origin.get("commit") if self.origin else self.load_info.get("commit"),
            "gguf_file": self.gguf_file,
            "converted_copy": self.load_info.get("converted_copy"),
            "converter_version": self.origin.get("converter_version"),
            **weights_identity(self.load_path, self.load_info.get("commit"), self.gguf_file),
        }

    def chat_template(self) -> dict[str, Any]:
        return self.prompts.template_record()

    def identity(self) -> dict[str, Any]:
        """Everything besides the request that determines an output (keys of the resume store)."""
        checkpoint = self.checkpoint()
        return {
            "backend": "hf",
            "path": self.path,
            "revision": self.load_info.get("revision"),
            "weights_sha256": checkpoint["weights_sha256"],
            "local_files": local_files_fingerprint(self.load_path),
            "converter_version": checkpoint["converter_version"],
            "long_context": self.load_info.get("long_context"),
            "precision": dataclasses.asdict(self.precision),
            "attn_implementation": self.load_info.get("attn_implementation") or "remote code",
            "chat_template": self.chat_template(),
            "chat_format": self.chat_format,
            "system_prompt": self.prompts.system_prompt,
            "prompt_encoding": self.prompts.encoding,
            "max_length": self.max_length,
            "generation_engine": self.generation_engine,
            "scoring_forward": self.scoring_forward,
            # The setting, not the kernel a timing trial chose: shards and resumed runs of one
            # configuration share their keys, as they do across processors and thread counts.
            "pack_linears": self.pack_linears,
            "generation_kwargs": self.generation_kwargs,
        }

    @property
    def scoring_forward(self) -> str:
        return "packed" if self.decoder is not None else "padded"

    @property
    def linear_kernel(self) -> dict[str, str]:
        """What multiplies the projections of each request kind: the packed engine's kernel (`cpu_linear.py`) where
        it runs them, `torch` where transformers' forward does (the padded path, `generate`)."""
        packed = self.decoder.linear.kernel if self.decoder is not None else "torch"
        return {"scoring": packed, "generation": packed if self.generator.engine == "refill" else "torch"}

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        """Batch size 1 and no prefix reuse, for batch-invariance checks; run stats are left untouched."""
        with self.batcher.one_at_a_time(), self.scorer.without_prefix_reuse():
            yield

    def describe(self) -> dict[str, Any]:
        stop_ids = self.generator.stop_ids()
        return {
            "backend": "hf",
            "path": self.path,
            "max_length": self.max_length,
            **self.prompts.describe(),
            "max_batch_tokens": self.batcher.max_batch_tokens,
            "scoring_forward": self.scoring_forward,
            "linear_kernel": self.linear_kernel,
            "linear_kernel_trial": self.decoder.linear.trial if self.decoder is not None else None,
            "linear_packed_bytes": self.decoder.linear.packed_bytes if self.decoder is not None else 0,
            "generation_engine": self.generator.engine,
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
            "memory": self.memory.report(self.model),
        }
