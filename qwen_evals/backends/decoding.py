"""What a checkpoint's generation config would change about decoding, for every backend's record.

The protocol decides decoding (`Decoding`); a checkpoint's generation_config.json may
carry chat sampling defaults (Qwen-7B-Chat: do_sample, top_p 0.8, top_k 0,
repetition_penalty 1.1) that the transformers backend removes at load, vLLM ignores
(`generation_config="vllm"`) and an OpenAI request overrides field by field. Each
backend records which of them it overrode.
"""

from __future__ import annotations

from typing import Any

VOCABULARY_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")
"""Generation-config fields that describe the vocabulary, not decoding: kept from the checkpoint."""
BOOKKEEPING_FIELDS = ("transformers_version", "_from_model_config")


def decoding_defaults(generation_config: Any) -> dict[str, Any]:
    """The settings a generation config sets away from transformers' defaults, vocabulary ids left out."""
    return {
        k: v
        for k, v in generation_config.to_diff_dict().items()
        if k not in VOCABULARY_FIELDS and k not in BOOKKEEPING_FIELDS
    }


def checkpoint_generation_config(path: str, revision: str | None = None) -> Any | None:
    """A checkpoint's generation_config.json as a transformers `GenerationConfig` (None when it has none)."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path, revision=revision)
    except OSError:  # no such file in the checkpoint
        return None
