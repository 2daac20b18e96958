"""In-process vLLM (GPU only, `pip install '.[vllm]'`): paged attention with prefix caching.

Same request contract and prompt rendering as the transformers backend (the
prompts go to vLLM as token ids from `PromptEncoder`), so the two give comparable
results files; Qwen v1 checkpoints load as their converted Qwen2 copy
(`model.convert=qwen1`). Decoding is the request's: `generation_config="vllm"`
keeps the checkpoint's sampling defaults out, and every sampling field is set.
Log-likelihoods come from vLLM's prompt log-probs of context + continuation; a
continuation token is greedy when its rank is 1.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from qwen_evals.backends.batching import by_generation_settings
from qwen_evals.backends.chat_format import QWEN_DEFAULT_SYSTEM
from qwen_evals.backends.checkpoints import weights_identity
from qwen_evals.backends.decoding import checkpoint_generation_config, decoding_defaults
from qwen_evals.backends.precision import Precision
from qwen_evals.backends.prompting import PromptEncoder, split_at_stop
from qwen_evals.backends.qwen1.cache import model_source
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, ModelTokenizer

# vLLM's own name for bitsandbytes weight loading; it quantizes to 4-bit NF4.
VLLM_QUANTIZATION = {None: None, "nf4": "bitsandbytes"}


def import_vllm() -> Any:
    """vllm, or an EvalError that says how to get it and where it runs."""
    try:
        import vllm
    except ImportError as error:
        raise EvalError(
            "model backend vllm needs the vllm package and a CUDA GPU: pip install 'qwen-evals[vllm]', "
            "or use the transformers backend (model=hf)"
        ) from error
    import torch

    if not torch.cuda.is_available():
        raise EvalError("model backend vllm runs on CUDA GPUs only and none is visible; use model=hf on this machine")
    return vllm


class VLLMBackend:
    def __init__(
        self,
        name: str,
        path: str,
        precision: Precision,
        revision: str | None = None,
        trust_remote_code: bool = False,
        convert: str | None = None,
        convert_cache_dir: str | None = None,
        max_length: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        system_prompt: str | None = QWEN_DEFAULT_SYSTEM,
    ) -> None:
        if precision.quantization not in VLLM_QUANTIZATION:
            raise EvalError(f"precision={precision.name}: vLLM loads bitsandbytes weights as nf4 only; use model=hf for int8")
        vllm = import_vllm()
        self.name = name
        self.path = path
        self.revision = revision
        self.precision = precision
        self._vllm = vllm
        load_path, load_revision = model_source(
            path, revision, convert=convert, trust_remote_code=trust_remote_code, cache_dir=convert_cache_dir
        )
        self.llm = vllm.LLM(
            model=load_path,
            revision=load_revision,
            dtype=precision.dtype,
            quantization=VLLM_QUANTIZATION[precision.quantization],
            trust_remote_code=trust_remote_code,
            max_model_len=max_length,
            enable_prefix_caching=True,
            generation_config="vllm",  # sampling defaults are the request's, never the checkpoint's
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size,
        )
        model_config = self.llm.llm_engine.model_config
        self.max_length = model_config.max_model_len
        self.prompts = PromptEncoder(self.llm.get_tokenizer(), system_prompt, self.max_length)
        checkpoint = checkpoint_generation_config(load_path, load_revision)
        self.checkpoint_defaults_overridden = decoding_defaults(checkpoint) if checkpoint is not None else {}
        self.stop_ids = self.prompts.stop_token_ids(
            checkpoint.eos_token_id if checkpoint is not None else None, model_config.hf_config.eos_token_id
        )
        self.settings: list[dict[str, Any]] = []
        """Every distinct set of sampling parameters a call used (recorded in summary.json)."""
        self._alone = False
        self._checkpoint = {"path": path, "revision": revision, "commit": None, **weights_identity(path, revision)}

    @staticmethod
    def preflight(path: str, **_: Any) -> list[HubResource]:
        """What loading would fetch from the hub (checked before any work)."""
        return [] if Path(path).expanduser().exists() else [HubResource("model", path, "model.path=<local model dir>")]

    def _run(self, token_ids: list[list[int]], params: Any) -> list[Any]:
        prompts = [self._vllm.inputs.TokensPrompt(prompt_token_ids=ids) for ids in token_ids]
        if self._alone:  # the canary: one request per engine call, nothing batched with it
            return [out for prompt in prompts for out in self.llm.generate([prompt], params, use_tqdm=False)]
        return self.llm.generate(prompts, params, use_tqdm=True)

    @contextmanager
    def one_at_a_time(self) -> Iterator[None]:
        self._alone = True
        try:
            yield
        finally:
            self._alone = False

    def model_tokenizer(self) -> ModelTokenizer:
        return ModelTokenizer(self.prompts.tokenizer, self.max_length, self.prompts.encode)

    def loglikelihood(self, requests: Sequence[LogLikelihood]) -> list[LogLikelihoodResult]:
        memo: dict[str, list[int]] = {}
        pairs = [self.prompts.split(r, memo) for r in requests]
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
        outputs = self._run([c + x for c, x in pairs], params)
        results = []
        for (context, continuation), output in zip(pairs, outputs):
            scored = output.prompt_logprobs[len(context) :]
            picked = [position[token] for position, token in zip(scored, continuation)]
            results.append(
                LogLikelihoodResult(sum(p.logprob for p in picked), all(p.rank == 1 for p in picked), len(context))
            )
        return results

    def generate(self, requests: Sequence[Generate]) -> list[Generation]:
        """Decoding exactly as each request states (vLLM's own defaults and the checkpoint's are not used)."""
        results: list[Generation | None] = [None] * len(requests)
        for (max_new, stop, decoding), members in by_generation_settings(requests).items():
            settings = {
                "max_tokens": max_new,
                "temperature": decoding.temperature,
                "top_p": decoding.top_p,
                "top_k": decoding.top_k or -1,  # vLLM's "off"
                "repetition_penalty": decoding.repetition_penalty,
                "stop": list(stop) or None,
                "stop_token_ids": self.stop_ids,
            }
            if settings not in self.settings:
                self.settings.append(settings)
            room = self.max_length - max_new
            encoded = [self.prompts.encode(requests[i].prompt) for i in members]
            rows = [self.prompts.fit(ids, room) for ids in encoded]
            start = time.perf_counter()
            outputs = self._run(rows, self._vllm.SamplingParams(**settings))
            seconds = time.perf_counter() - start
            for index, ids, row, output in zip(members, encoded, rows, outputs):
                completion = output.outputs[0]
                text, string = split_at_stop(completion.text, stop)
                reason, ended = self._finish(completion, string)
                results[index] = Generation(
                    text, reason, ended, len(row), len(completion.token_ids), len(ids) > room,
                    self.prompts.render(requests[index].prompt), seconds,
                )  # fmt: skip
        return results  # type: ignore[return-value]

    def checkpoint(self) -> dict[str, Any]:
        return self._checkpoint

    def chat_template(self) -> dict[str, Any]:
        return self.prompts.template_record()

    def _finish(self, completion: Any, cut: str | None) -> tuple[str, str | None]:
        """(finish reason, what ended it): vLLM's stop_reason is the stop string, the stop token id, or None for eos."""
        if completion.finish_reason == "length":
            return "length", None
        if isinstance(completion.stop_reason, str) or cut is not None:
            return "stop", completion.stop_reason if isinstance(completion.stop_reason, str) else cut
        token = completion.stop_reason if isinstance(completion.stop_reason, int) else self.prompts.tokenizer.eos_token_id
        return "eos", self.prompts.token_names([token])[0] if token is not None else None

    def identity(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "path": self.path,
            "revision": self.revision,
            "weights_sha256": self._checkpoint["weights_sha256"],
            "precision": dataclasses.asdict(self.precision),
            "chat_template": self.chat_template(),
            "chat_format": self.prompts.chat_format,
            "system_prompt": self.prompts.system_prompt,
            "prompt_encoding": self.prompts.encoding,
            "max_length": self.max_length,
        }

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "vllm",
            "path": self.path,
            "revision": self.revision,
            "max_length": self.max_length,
            **self.prompts.describe(),
            "generation": {
                "settings": self.settings,
                "checkpoint_defaults_overridden": self.checkpoint_defaults_overridden,
                "user_overrides": {},
                "stop_tokens": dict(zip(self.prompts.token_names(self.stop_ids), self.stop_ids)),
            },
            "truncated_prompts": self.prompts.truncated,
            "vllm_version": self._vllm.__version__,
        }
