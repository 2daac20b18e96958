"""What differs between the transformers versions the suite accepts (4.56 to 5.x), in one place.

Each function answers one question about the loaded model, so the scorer and
the generator never test versions themselves.
"""

from __future__ import annotations

import inspect
from typing import Any


class ModelCompat:
    """How to call one loaded model's `forward` and build its KV cache."""

    def __init__(self, model: Any) -> None:
        self.model = model
        parameters = inspect.signature(model.forward).parameters
        self.slices_logits = "logits_to_keep" in parameters
        """forward(logits_to_keep=k) computes the LM head at the last k positions only."""
        # transformers >= 5.24 renamed `past_key_values` to `cache`.
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.continuous_batching = hasattr(model, "generate_batch")
        """transformers' paged-attention `generate_batch` exists (transformers >= 4.56)."""

    def forward_kwargs(self, keep: int | None = None, cache: Any = None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if keep is not None and self.slices_logits:
            kwargs["logits_to_keep"] = keep
        if cache is not None:
            kwargs[self.cache_argument] = cache
        return kwargs

    @staticmethod
    def cache_of(output: Any) -> Any:
        """The KV cache a forward with use_cache=True returned."""
        return getattr(output, "cache", None) or output.past_key_values

    @staticmethod
    def layer_tensors(cache: Any) -> list[tuple[Any, Any]]:
        """(keys, values) per layer of a `DynamicCache`."""
        return [(layer.keys, layer.values) for layer in cache.layers]

    def cache_from(self, tensors: list[tuple[Any, Any]]) -> Any:
        """A `DynamicCache` holding the given (keys, values) per layer."""
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=tensors, config=self.model.config)


def dense_gguf_kwargs() -> dict[str, Any]:
    """`from_pretrained` arguments that read a GGUF file into a plain dense model that can be saved.

    transformers >= 5 loads GGUF through a quantizer that stays attached (and
    refuses `save_pretrained`) unless dequantization is asked for explicitly;
    4.x always dequantizes and has no `GgufConfig`.
    """
    import transformers

    config = getattr(transformers, "GgufConfig", None)
    return {"quantization_config": config(dequantize=True)} if config is not None else {}
