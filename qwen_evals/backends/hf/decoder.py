"""A transformers decoder-only model run layer by layer on packed tokens, with attention supplied by the caller.

transformers' forward takes a padded (batch, length) grid and its own cache
classes; evaluation wants other shapes: many short rows over one shared
few-shot prefix, and decoding slots that are refilled as sequences finish.
`Decoder` calls the model's own modules (projections, rotary embedding,
norms and MLP: its weights and arithmetic) on all tokens of a batch packed
into one sequence, so no padded position costs a matmul, in chunks of tokens
small enough for the element-wise steps to stay in cache, and hands each
layer's query, key and value to an attention object (`attention.py`) that
decides what every token attends to and where keys and values are kept. Two
element-wise steps take a shorter road to the same formula: in float32 the
RMSNorms run as torch's fused `rms_norm`, and the SiLU-gated MLP applies its
activation and gate in place on the projections' fresh outputs.

Only the common decoder layout is run this way (Llama, Mistral, Qwen2,
Qwen3: pre-norm, rotary, grouped-query attention, no sliding window, one
device); `Decoder.of(model)` says why another model is not, and the backend
then uses transformers' forward and `generate`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
CHUNK_TOKENS = 512
"""Tokens that go through a layer's norms, projections and MLP together: the element-wise steps between
the matmuls then work on data still in cache, not on activations streamed from memory."""

Attention = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(layer index, queries (T, heads, d), keys (T, kv heads, d), values) -> outputs (T, heads * d)."""


@dataclass(frozen=True)
class Shapes:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    vocab: int
    non_embedding_params: int
    """Parameters of the layers and the final norm: 2 x this is the matmul FLOPs per token outside the LM head."""


def unsupported_reason(model: Any) -> str | None:
    """Why `Decoder` cannot run this model (None when it can)."""
    config = model.config
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        return f"model_type {config.model_type!r} is not one of {SUPPORTED_MODEL_TYPES}"
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "the model does not have the embed_tokens / layers / norm / rotary_emb layout"
    if "dynamic" in str(getattr(inner.rotary_emb, "rope_type", "")):
        return "dynamic RoPE scaling (its positions depend on the longest sequence of a forward)"
    attention = inner.layers[0].self_attn
    if any(getattr(layer.self_attn, "sliding_window", None) for layer in inner.layers):
        return "sliding-window attention"
    if not all(hasattr(attention, a) for a in ("q_proj", "k_proj", "v_proj", "o_proj", "scaling", "head_dim")):
        return "the attention module does not have separate q/k/v/o projections"
    if abs(float(attention.scaling) - attention.head_dim**-0.5) > 1e-12:
        return "attention scaling other than 1/sqrt(head_dim)"
    if not hasattr(sys.modules[type(attention).__module__], "apply_rotary_pos_emb"):
        return "the modeling module has no apply_rotary_pos_emb"
    if len({p.device for p in model.parameters()}) > 1:
        return "the weights are spread over several devices"
    return None


class Decoder:
    """Packed forward passes through one loaded model's modules."""

    def __init__(self, model: Any) -> None:
        reason = unsupported_reason(model)
        if reason is not None:
            raise ValueError(reason)
        self.model = model
        inner = model.model
        self.layers = list(inner.layers)
        first = self.layers[0].self_attn
        self._rope = sys.modules[type(first).__module__].apply_rotary_pos_emb
        self._qk_norm = hasattr(first, "q_norm")
        config = model.config
        embedding = inner.embed_tokens.weight
        self.device = embedding.device
        self.dtype = embedding.dtype
        norms = [n for layer in self.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        self._fused_norm = self.dtype == torch.float32 and all(
            type(n).__name__.endswith("RMSNorm") and n.weight.dtype == torch.float32 and hasattr(n, "variance_epsilon")
            for n in norms
        )
        self._silu_mlp = config.hidden_act == "silu" and all(
            hasattr(layer.mlp, a) for layer in self.layers for a in ("gate_proj", "up_proj", "down_proj")
        )
        self.shapes = Shapes(
            layers=len(self.layers),
            heads=config.num_attention_heads,
            kv_heads=config.num_key_value_heads,
            head_dim=first.head_dim,
            hidden=config.hidden_size,
            vocab=model.lm_head.weight.shape[0],
            non_embedding_params=sum(p.numel() for p in inner.layers.parameters()) + inner.norm.weight.numel(),
        )

    @classmethod
    def of(cls, model: Any) -> Decoder | None:
        return None if unsupported_reason(model) else cls(model)

    def kv_bytes_per_token(self) -> int:
        s = self.shapes
        return 2 * s.layers * s.kv_heads * s.head_dim * self.dtype.itemsize

    @torch.inference_mode()
    def hidden(self, tokens: torch.Tensor, positions: torch.Tensor, attention: Attention) -> torch.Tensor:
        """Final-norm hidden states (T, hidden) of packed `tokens` at `positions` (both (T,), on the device)."""
        inner = self.model.model
        x = inner.embed_tokens(tokens)
        cos, sin = inner.rotary_emb(x, positions[None])
        cos, sin = cos[0], sin[0]
        for index, layer in enumerate(self.layers):
            q, k, v = self._project(layer, x, cos, sin)
            x = self._mix(layer, x, attention(index, q, k, v))
        return inner.norm(x)

    def _chunks(self, count: int) -> list[slice]:
        return [slice(start, min(start + CHUNK_TOKENS, count)) for start in range(0, count, CHUNK_TOKENS)]

    def _by_chunks(self, step: Callable[[slice], tuple[torch.Tensor, ...]], count: int) -> tuple[torch.Tensor, ...]:
        """`step` over chunks of the packed tokens, its outputs joined (no copy when one chunk holds them all)."""
        parts = [step(part) for part in self._chunks(count)]
        return parts[0] if len(parts) == 1 else tuple(torch.cat(outputs) for outputs in zip(*parts))

    def _project(self, layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values (T, heads, d) of a layer, rotary embedding applied."""
        attn, s = layer.self_attn, self.shapes

        def step(part: slice) -> tuple[torch.Tensor, ...]:
            h = self._norm(layer.input_layernorm, x[part])
            q = attn.q_proj(h).view(-1, s.heads, s.head_dim)
            k = attn.k_proj(h).view(-1, s.kv_heads, s.head_dim)
            if self._qk_norm:
                q, k = attn.q_norm(q), attn.k_norm(k)
            q, k = self._rope(q, k, cos[part], sin[part], unsqueeze_dim=1)
            return q, k, attn.v_proj(h).view(-1, s.kv_heads, s.head_dim)

        return self._by_chunks(step, x.shape[0])

    def _mix(self, layer: Any, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output: residual + attention output projection, then residual + MLP."""

        def step(part: slice) -> tuple[torch.Tensor]:
            y = layer.self_attn.o_proj(attended[part]).add_(x[part])
            return (self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, y)).add_(y),)

        return self._by_chunks(step, x.shape[0])[0]

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        # torch's fused RMSNorm computes the module's formula, equal to rounding in float32; in other
        # dtypes the module's own casts (up to float32, back before the weight) decide, so it runs itself.
        if self._fused_norm:
            return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)
        return norm(x)

    def _mlp(self, mlp: Any, h: torch.Tensor) -> torch.Tensor:
        """down(silu(gate(h)) * up(h)), the element-wise steps in place on the projections' fresh outputs."""
        if not self._silu_mlp:
            return mlp(h)
        return mlp.down_proj(F.silu(mlp.gate_proj(h), inplace=True).mul_(mlp.up_proj(h)))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits of the LM head over the given hidden rows only."""
        return self.model.lm_head(hidden).float()
