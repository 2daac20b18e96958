"""Reading past the training length: dynamic NTK RoPE scaling and Qwen's LogN attention, as config overrides."""

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
    """Config overrides for dynamic NTK RoPE scaling and LogN attention scaling.

    Args:
        config: the checkpoint's config as loaded (`AutoConfig.from_pretrained`,
            with `trust_remote_code` for Qwen v1).
        dynamic_ntk: rescale the RoPE base when the input outgrows the training
            length; None keeps the checkpoint's setting.
        logn_attn: scale queries by log(position) / log(training length) past it;
            None keeps the checkpoint's setting.
        rope_factor: transformers' `factor` of the "dynamic" RoPE type (ignored by
            Qwen v1, whose NTK alpha follows the input length). With 1.0 the base is
            scaled by the plain length ratio; transformers requires >= 1.

    Qwen v1 remote code (`model_type == "qwen"`) has both switches itself
    (`use_dynamic_ntk`, `use_logn_attn`; Qwen-7B-Chat ships both on, relative to
    its `seq_length`). Models with transformers' RoPE config (Qwen2, Llama, ...)
    get `rope_type: dynamic` merged into the checkpoint's RoPE parameters: a bare
    `rope_scaling={"rope_type": "dynamic", ...}` passed to transformers 5 replaces
    them and loses `rope_theta` (it becomes None), which silently changes every
    position encoding. transformers has no LogN scaling: reported as unsupported.
    Either way `max_position_embeddings` stays the training length (dynamic NTK
    scales relative to it); the backend's context length must be raised
    separately (`model.max_length`).
    """
    overrides: dict[str, Any] = {}
    applied: dict[str, Any] = {}
    unsupported: list[str] = []
    if getattr(config, "model_type", None) == "qwen" and hasattr(config, "use_dynamic_ntk"):
        for name, wanted in (("use_dynamic_ntk", dynamic_ntk), ("use_logn_attn", logn_attn)):
            if wanted is not None:
                overrides[name] = wanted
            applied[name] = wanted if wanted is not None else getattr(config, name, None)
        return LongContextSettings(overrides, applied, ())
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
