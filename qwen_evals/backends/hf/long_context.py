"""Reading past the training length: dynamic NTK RoPE scaling (and Qwen's LogN attention, which transformers lacks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwen_evals.core.errors import EvalError


@dataclass(frozen=True)
class LongContextSettings:
    """What to pass to `from_pretrained`, and what to record in summary.json."""

    overrides: dict[str, Any] = field(default_factory=dict)
    """Config attributes to override (keyword arguments of `from_pretrained`)."""
    applied: dict[str, Any] = field(default_factory=dict)
    """The requested settings that reach the model, by name."""
    unsupported: tuple[str, ...] = ()
    """Requested settings this architecture has no switch for (not applied)."""


def long_context_config_overrides(
    config: Any, *, dynamic_ntk: bool | None = None, logn_attn: bool | None = None, rope_factor: float = 1.0
) -> LongContextSettings:
    """Config overrides for dynamic NTK RoPE scaling; LogN attention scaling is reported unsupported.

    Args:
        config: the checkpoint's config as loaded (`AutoConfig.from_pretrained`).
        dynamic_ntk: rescale the RoPE base when the input outgrows the training length.
        logn_attn: scale queries by log(position) / log(training length) past it, as
            Qwen v1's own code did; transformers has no such switch, so it is recorded
            as unsupported, not applied.
        rope_factor: transformers' `factor` of the "dynamic" RoPE type: the base is scaled by
            (factor x length / training length - (factor - 1)) ** (d / (d - 2)); must be >= 1.
            2.0 equals Qwen v1's NTK alpha (2 ** ceil(log2(length / training length) + 1) - 1)
            at every power-of-two ratio and stays below it in between.

    The `rope_type: dynamic` is merged into the checkpoint's RoPE parameters: a bare
    `rope_scaling={"rope_type": "dynamic", ...}` passed to transformers 5 replaces
    them and loses `rope_theta` (it becomes None), which silently changes every
    position encoding. `max_position_embeddings` stays the training length (dynamic
    NTK scales relative to it); the backend's context length must be raised
    separately (`model.max_length`).
    """
    overrides: dict[str, Any] = {}
    applied: dict[str, Any] = {}
    unsupported: list[str] = []
    if dynamic_ntk:
        if rope_factor < 1:
            raise EvalError(f"rope_factor={rope_factor} must be >= 1 for dynamic NTK scaling")
        current = getattr(config, "rope_parameters", None)
        if isinstance(current, dict) and "rope_theta" in current:  # transformers >= 5
            overrides["rope_parameters"] = {**current, "rope_type": "dynamic", "factor": float(rope_factor)}
        elif hasattr(config, "rope_theta"):  # transformers 4: rope_theta stays a top-level attribute
            overrides["rope_scaling"] = {"rope_type": "dynamic", "factor": float(rope_factor)}
        else:
            unsupported.append("dynamic_ntk")
        if overrides:
            applied["dynamic_ntk"] = {"rope_type": "dynamic", "factor": float(rope_factor)}
    if logn_attn:
        unsupported.append("logn_attn")
    return LongContextSettings(overrides, applied, tuple(unsupported))
