"""A transformers decoder-only model run layer by layer on packed tokens, with attention supplied by the caller.

transformers' forward takes a padded (batch, length) grid and its own cache
classes; evaluation wants other shapes: many short rows over one shared
few-shot prefix, and decoding slots that are refilled as sequences finish.
`Decoder` calls the model's own modules (projections, rotary embedding,
norms and MLP: its weights and arithmetic) on all tokens of a batch packed
into one sequence, so no padded position costs a matmul, and hands each
layer's query, key and value to an attention object (`attention.py`) that
decides what every token attends to and where keys and values are kept.

Three element-wise steps take a shorter road to the same numbers: in float32
the RMSNorms run their formula with the steps in place, and the rotary
embedding skips its negated, concatenated copy of every head (each only where
it reproduces the model's own function bit for bit on a probe); the SiLU-gated
MLP applies its activation and gate in place on the projections' fresh outputs.
The projections (the MLP's where it is SiLU-gated) and the LM head, in
float32 on the CPU, multiply through oneDNN on weights laid out once where
`cpu_linear.py` finds that faster: the same weights, another kernel, whose
sums round in another order than torch's `linear`.
A layer runs on all tokens of a forward at once: splitting them into chunks
of 512-1,024 tokens, to keep the element-wise steps' data in cache, measured
5-10% slower on the CPU (the chunks' outputs must be joined again).

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

from qwen_evals.backends.hf.cpu_linear import PackedLinears

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
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

    def __init__(self, model: Any, pack_linears: bool | str = "auto") -> None:
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
        self.linear = PackedLinears(self._linear_modules(), [model.lm_head], self.dtype, self.device, pack_linears)
        self._fast_rope = self.dtype == torch.float32 and self._fast_rope_matches(inner.rotary_emb)
        self._fast_norm = self.dtype == torch.float32 and self._fast_norms_match()

    def _linear_modules(self) -> list[list[Any]]:
        """Each layer's projections, and its MLP's where the engine calls them itself."""
        names = [("self_attn", p) for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
        if self._silu_mlp:
            names += [("mlp", p) for p in ("gate_proj", "up_proj", "down_proj")]
        return [[getattr(getattr(layer, part), name) for part, name in names] for layer in self.layers]

    @classmethod
    def of(cls, model: Any, pack_linears: bool | str = "auto") -> Decoder | None:
        return None if unsupported_reason(model) else cls(model, pack_linears)

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

    def _probe(self, *shape: int) -> torch.Tensor:
        """7 rows of seeded random values in the model's dtype and device: an input for the fast-path checks."""
        generator = torch.Generator(device="cpu").manual_seed(0)
        return torch.randn((7, *shape), generator=generator).to(self.device, self.dtype)

    @torch.inference_mode()
    def _fast_rope_matches(self, rotary_emb: Any) -> bool:
        """Whether `rotated` gives exactly the model's `apply_rotary_pos_emb` on a random probe."""
        probe = self._probe(self.shapes.heads, self.shapes.head_dim)
        cos, sin = rotary_emb(probe, torch.arange(3, 10, device=self.device)[None] * 37)
        expected, _ = self._rope(probe, probe, cos[0], sin[0], unsqueeze_dim=1)
        return torch.equal(rotated(probe, cos[0], sin[0]), expected)

    @torch.inference_mode()
    def _fast_norms_match(self) -> bool:
        """Whether `rms_normed` gives exactly each layer norm's own output on a random probe."""
        norms = [n for layer in self.layers for n in (layer.input_layernorm, layer.post_attention_layernorm)]
        if not all(hasattr(n, "variance_epsilon") and n.weight.dtype == self.dtype for n in norms):
            return False
        probe = self._probe(self.shapes.hidden)
        return all(torch.equal(rms_normed(probe, n.weight, n.variance_epsilon), n(probe)) for n in norms)

    def _project(self, layer: Any, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Queries, keys and values (T, heads, d) of a layer, rotary embedding applied."""
        attn, s = layer.self_attn, self.shapes
        h = self._norm(layer.input_layernorm, x)
        q = self.linear(attn.q_proj, h).view(-1, s.heads, s.head_dim)
        k = self.linear(attn.k_proj, h).view(-1, s.kv_heads, s.head_dim)
        if self._qk_norm:
            q, k = attn.q_norm(q), attn.k_norm(k)
        if self._fast_rope:
            q, k = rotated(q, cos, sin), rotated(k, cos, sin)
        else:
            q, k = self._rope(q, k, cos, sin, unsqueeze_dim=1)
        return q, k, self.linear(attn.v_proj, h).view(-1, s.kv_heads, s.head_dim)

    def _mix(self, layer: Any, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        """The layer's output: residual + attention output projection, then residual + MLP."""
        y = self.linear(layer.self_attn.o_proj, attended).add_(x)
        return self._mlp(layer.mlp, self._norm(layer.post_attention_layernorm, y)).add_(y)

    def _norm(self, norm: Any, x: torch.Tensor) -> torch.Tensor:
        return rms_normed(x, norm.weight, norm.variance_epsilon) if self._fast_norm else norm(x)

    def _mlp(self, mlp: Any, h: torch.Tensor) -> torch.Tensor:
        """down(silu(gate(h)) * up(h)), the element-wise steps in place on the projections' fresh outputs."""
        if not self._silu_mlp:
            return mlp(h)
        linear = self.linear
        return linear(mlp.down_proj, F.silu(linear(mlp.gate_proj, h), inplace=True).mul_(linear(mlp.up_proj, h)))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """float32 logits of the LM head over the given hidden rows only."""
        return self.linear(self.model.lm_head, hidden).float()


def rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of `x` (T, heads, d) as transformers writes it, x * cos + rotate_half(x) * sin.

    rotate_half(x) is (-x2, x1) for the halves x1, x2 of each head, so each half of
    x * cos takes its partner's product with sin, subtracted or added in place: the
    same roundings (x1 * c - x2 * s is x1 * c + (-x2) * s exactly), without the
    negated, concatenated copy of every head. A fused multiply-add (`addcmul_`)
    would round once where the model rounds twice, so the products stay separate.
    """
    half = x.shape[-1] // 2
    out = x * cos[:, None]
    out[..., :half].sub_(x[..., half:] * sin[:, None, :half])
    out[..., half:].add_(x[..., :half] * sin[:, None, half:])
    return out


def rms_normed(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """weight * x / sqrt(mean(x^2) + eps), transformers' RMSNorm formula in float32, its steps in place
    (the module allocates a tensor for each; torch's `rms_norm` runs the same steps on the CPU)."""
    return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(eps))).mul_(weight)
