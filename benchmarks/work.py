"""The FLOPs and bytes a workload needs, from the model's shapes and the tokens a harness computes.

FLOPs = 2 x non-embedding parameters x tokens through the layers
      + 4 x layers x heads x head_dim x causal query-key pairs (scores and weighted values)
      + 2 x vocabulary x hidden x positions where the LM head runs.
Padding is not counted: these are the FLOPs of the harness's method, not of
its batches. Norms, rotary embedding and softmax are left out (a few percent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_evals.backends.batching import causal_pairs


@dataclass(frozen=True)
class ModelShapes:
    layers: int
    heads: int
    head_dim: int
    hidden: int
    vocab: int
    non_embedding_params: int
    dtype_bytes: int
    kv_heads: int

    @classmethod
    def of(cls, model: Any) -> ModelShapes:
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        embedding = model.get_input_embeddings().weight
        return cls(
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            head_dim=head_dim,
            hidden=config.hidden_size,
            vocab=embedding.shape[0],
            non_embedding_params=sum(p.numel() for p in model.model.layers.parameters()) + model.model.norm.weight.numel(),
            dtype_bytes=embedding.element_size(),
            kv_heads=config.num_key_value_heads,
        )

    @property
    def weight_bytes_per_step(self) -> int:
        """Weights one decoding step reads: every layer and the LM head (the embedding lookup reads a few rows)."""
        return (self.non_embedding_params + self.vocab * self.hidden) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes


@dataclass(frozen=True)
class Work:
    tokens: int
    """Tokens run through the layers."""
    attended: int
    """Causal query-key pairs of their attention."""
    logit_rows: int
    """Positions where the LM head runs."""

    def flops(self, shapes: ModelShapes) -> float:
        return (
            2.0 * shapes.non_embedding_params * self.tokens
            + 4.0 * shapes.layers * shapes.heads * shapes.head_dim * self.attended
            + 2.0 * shapes.vocab * shapes.hidden * self.logit_rows
        )

    @classmethod
    def from_stats(cls, before: dict[str, Any], after: dict[str, Any]) -> Work:
        """What the suite's backend counted between two snapshots of its stats."""
        return cls(*(after[k] - before[k] for k in ("tokens", "attended_pairs", "logit_rows")))

    @classmethod
    def full_rows(cls, lengths: list[int]) -> Work:
        """Whole rows, each alone, logits at every position (lm-eval's log-likelihood forward)."""
        return cls(sum(lengths), sum(causal_pairs(n) for n in lengths), sum(lengths))


def decode_bytes(shapes: ModelShapes, refill: dict[str, float]) -> dict[str, float]:
    """Bytes one decoding step needs to read (weights once, each live sequence's keys and values) and its time."""
    steps = refill["decode_steps"]
    kv = refill["decode_attended"] / steps * shapes.kv_bytes_per_token
    return {
        "steps": steps,
        "mean_live_sequences": refill["decoded_tokens"] / steps,
        "weight_bytes_per_step": shapes.weight_bytes_per_step,
        "kv_bytes_per_step": kv,
        "seconds_per_step": refill["decode_seconds"] / steps,
        "bytes_per_s": (shapes.weight_bytes_per_step + kv) * steps / refill["decode_seconds"],
    }
