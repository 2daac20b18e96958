"""A stand-in for the vllm package, which needs a CUDA GPU: it records what VLLMBackend hands it.

Only what the backend calls is there: `LLM` (engine config, tokenizer, `generate`),
`SamplingParams` (kept as the dict of its arguments) and `inputs.TokensPrompt`.
Every completion is "Hello" ended by the token `stop_reason`, as vLLM reports a stop token id.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any


class StandInEngine:
    def __init__(self, stop_reason: int | str | None) -> None:
        self.stop_reason = stop_reason
        self.loaded: dict[str, Any] = {}
        self.prompts: list[list[int]] = []
        self.params: list[dict[str, Any]] = []

    def llm(self, model: str, **kwargs: Any) -> Any:
        from transformers import AutoConfig, AutoTokenizer

        self.loaded = {"model": model, **kwargs}
        config = AutoConfig.from_pretrained(model)
        tokenizer = AutoTokenizer.from_pretrained(model)
        model_config = types.SimpleNamespace(max_model_len=kwargs.get("max_model_len") or config.max_position_embeddings,
                                             hf_config=config)  # fmt: skip
        return types.SimpleNamespace(
            llm_engine=types.SimpleNamespace(model_config=model_config),
            get_tokenizer=lambda: tokenizer,
            generate=self.generate,
        )

    def generate(self, prompts: list[list[int]], params: dict[str, Any], use_tqdm: bool = True) -> list[Any]:
        self.prompts += prompts
        self.params.append(params)
        completion = types.SimpleNamespace(text="Hello", token_ids=[9707, 151644], finish_reason="stop",
                                           stop_reason=self.stop_reason)  # fmt: skip
        return [types.SimpleNamespace(outputs=[completion]) for _ in prompts]


def install(monkeypatch: Any, model: str | Path, stop_reason: int | str | None) -> StandInEngine:
    """Put the stand-in in place of `vllm` (and claim a CUDA device) for one test."""
    import torch

    engine = StandInEngine(stop_reason)
    module = types.ModuleType("vllm")
    module.__version__ = "stand-in"
    module.LLM = engine.llm
    module.SamplingParams = lambda **settings: dict(settings)
    module.inputs = types.SimpleNamespace(TokensPrompt=lambda prompt_token_ids: prompt_token_ids)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    return engine
