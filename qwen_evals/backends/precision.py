"""Numeric precision of a model: a dtype, or bitsandbytes weight quantization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_evals.core.errors import EvalError

DTYPES = ("float32", "float16", "bfloat16")
QUANTIZATIONS = (None, "int8", "nf4")


@dataclass(frozen=True)
class Precision:
    """How weights are held and matmuls computed.

    Args:
        name: the label used in result paths and tables ("bf16", "nf4", ...).
        dtype: activation / non-quantized weight dtype; for nf4 also the compute dtype.
        quantization: None, "int8" (LLM.int8()) or "nf4" (4-bit NormalFloat), both bitsandbytes,
            on any device the installed bitsandbytes has kernels for (CUDA; the CPU since 0.46).
        double_quant: nf4 only: quantize the quantization constants too (saves ~0.4 bit/param).
    """

    name: str
    dtype: str
    quantization: str | None = None
    double_quant: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise EvalError(f"precision.dtype={self.dtype!r} is not one of {list(DTYPES)}")
        if self.quantization not in QUANTIZATIONS:
            raise EvalError(f"precision.quantization={self.quantization!r} is not one of {list(QUANTIZATIONS)}")
        if self.double_quant and self.quantization != "nf4":
            raise EvalError("precision.double_quant applies to quantization=nf4 only")

    def torch_dtype(self) -> Any:
        import torch

        return getattr(torch, self.dtype)

    def quantization_config(self) -> Any:
        """A transformers BitsAndBytesConfig, or None for plain dtypes."""
        if self.quantization is None:
            return None
        from transformers import BitsAndBytesConfig

        if self.quantization == "int8":
            return BitsAndBytesConfig(load_in_8bit=True)
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=self.torch_dtype(),
            bnb_4bit_use_double_quant=self.double_quant,
        )
