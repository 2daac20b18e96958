"""Loading a transformers causal LM and its tokenizer for evaluation."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any

from qwen_evals.backends.hf import host_memory
from qwen_evals.backends.hf.gguf import dequantized_copy
from qwen_evals.backends.hf.long_context import long_context_config_overrides
from qwen_evals.backends.precision import Precision
from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import require_hub


def attention_implementation(requested: str, precision: Precision, cuda: bool) -> str:
    """flash_attention_2 where it can run (installed, CUDA, half precision), else sdpa."""
    if requested != "auto":
        return requested
    flash_ready = cuda and importlib.util.find_spec("flash_attn") is not None and precision.dtype != "float32"
    return "flash_attention_2" if flash_ready else "sdpa"


def load_device(device_map: Any) -> str:
    """The kind of device the weights load on: the GPU when there is one, unless device_map says "cpu"."""
    import torch

    return "cuda" if torch.cuda.is_available() and device_map != "cpu" else "cpu"


def bitsandbytes_version(precision: Precision, device: str) -> str:
    """The installed bitsandbytes version, once it is known to run `precision` on `device` ("cuda", "cpu").

    bitsandbytes lists the torch devices it has kernels for (`supported_torch_devices`,
    with "cpu" since 0.46); the releases before it ran on CUDA only and list none.
    """
    try:
        import bitsandbytes
    except ImportError as error:
        raise EvalError(
            f"precision={precision.name} ({precision.quantization}) needs bitsandbytes: pip install 'qwen-evals[quant]'"
        ) from error
    devices = set(getattr(bitsandbytes, "supported_torch_devices", {"cuda"}))
    if device not in devices:
        raise EvalError(
            f"precision={precision.name} ({precision.quantization}): the installed bitsandbytes "
            f"{bitsandbytes.__version__} has no {device} backend (it runs on {', '.join(sorted(devices))}); "
            "bitsandbytes 0.46.1 or later runs int8 and NF4 on the CPU as well: pip install -U 'qwen-evals[quant]'"
        )
    if precision.quantization == "int8":
        _log_once("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast")
    return bitsandbytes.__version__


class _OnceFilter(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix, self.seen = prefix, False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith(self.prefix):
            return True
        seen, self.seen = self.seen, True
        return not seen


def _log_once(logger: str, prefix: str) -> None:
    """Let a logger's message that starts with `prefix` through once per process.

    LLM.int8() quantizes activations from fp16, and bitsandbytes >= 0.49 logs
    that on every int8 matmul given bf16 or fp32 inputs: thousands of lines a run.
    """
    target = logging.getLogger(logger)
    if not any(isinstance(f, _OnceFilter) and f.prefix == prefix for f in target.filters):
        target.addFilter(_OnceFilter(prefix))


def load_model_and_tokenizer(
    path: str,
    precision: Precision,
    *,
    revision: str | None,
    trust_remote_code: bool,
    gguf_file: str | None,
    attn_implementation: str,
    device_map: str | None,
    long_context: dict[str, Any] | None = None,
    cache_dir: str | None = None,
) -> tuple[Any, Any, dict[str, Any]]:
    """Model in eval mode, tokenizer, and what was chosen (for summary.json).

    Every check that can fail without reading weights runs first, so a machine
    whose bitsandbytes cannot run int8 there, or an offline machine asked for a
    hub id, fails in seconds with a message that says what to change.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = torch.cuda.is_available()
    chosen: dict[str, Any] = {"dtype": precision.dtype, "quantization": precision.quantization}
    if precision.quantization is not None:
        chosen["bitsandbytes"] = bitsandbytes_version(precision, load_device(device_map))
    if not Path(path).exists():
        require_hub("model", path, "model.path=<local model dir>")
    if gguf_file and precision.quantization is not None:
        path, gguf_file = str(dequantized_copy(path, gguf_file, precision.dtype, cache_dir)), None
        chosen["gguf_copy"] = path
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    if gguf_file:
        common["gguf_file"] = gguf_file
    if device_map == "auto" and cuda and "LOCAL_RANK" in os.environ:
        # Data parallel (torchrun / accelerate launch): one whole model per process and GPU.
        device_map = {"": int(os.environ["LOCAL_RANK"])}
    kwargs: dict[str, Any] = {"dtype": precision.torch_dtype(), "device_map": device_map}
    if precision.quantization_config() is not None:
        kwargs["quantization_config"] = precision.quantization_config()
        chosen["double_quant"] = precision.double_quant
    if long_context and any(long_context.get(k) is not None for k in ("dynamic_ntk", "logn_attn")):
        from transformers import AutoConfig

        settings = long_context_config_overrides(AutoConfig.from_pretrained(path, **common), **long_context)
        kwargs.update(settings.overrides)  # config attributes, passed through from_pretrained
        chosen["long_context"] = {"applied": settings.applied, "unsupported": list(settings.unsupported)}
    if not trust_remote_code:
        # Remote-code models (Qwen v1) pick their attention kernel from their own config.
        kwargs["attn_implementation"] = chosen["attn_implementation"] = attention_implementation(
            attn_implementation, precision, cuda
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **common)
        model = AutoModelForCausalLM.from_pretrained(path, **common, **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise EvalError(f"Could not load model.path={path!r}: {error}") from error
    model.eval()
    if load_device(device_map) == "cpu":
        chosen["weights_memory"] = host_memory.move_weights(model)
    chosen["commit"] = getattr(model.config, "_commit_hash", None)  # the hub commit a hub id resolved to
    chosen["revision"] = chosen["commit"] or revision
    return model, tokenizer, chosen


def context_length(model: Any, tokenizer: Any) -> int:
    """The longest input the model was built for (config first, then tokenizer)."""
    config = model.config
    for key in ("max_position_embeddings", "seq_length", "n_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**7:
        return limit
    raise EvalError("Cannot tell the model's context length; set model.max_length")


def local_files_fingerprint(path: str) -> str | None:
    """Names, sizes and modification times of a local model folder's files (None for hub ids).

    Weights replaced in place get a new fingerprint, so stored results of the
    old weights are not reused.
    """
    folder = Path(path)
    if not folder.is_dir():
        return None
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file())
    return hashlib.sha256(repr(entries).encode()).hexdigest()
