"""GGUF checkpoints at int8 / NF4: a dequantized safetensors copy, written once and reused.

transformers reads a GGUF file by dequantizing its blocks, but will not apply a
bitsandbytes `quantization_config` in the same load ("You cannot combine
Quantization and loading a model from a GGUF file"). So for precision=int8/nf4
a GGUF checkpoint (the `smollm2` preset) is loaded from a copy written in the
precision's dtype: the very weights a GGUF load in that dtype holds in memory,
which bitsandbytes then quantizes as it would any checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from qwen_evals.backends.conversion_cache import build_once, cache_root
from qwen_evals.backends.hf.compat import dense_gguf_kwargs
from qwen_evals.core.errors import EvalError

COPY_VERSION = 1  # bump when the copy's contents change, so cached copies are rebuilt
MARKER = "gguf_copy.json"  # written last: its presence means the copy is complete


def dequantized_copy(folder: str, gguf_file: str, dtype: str, cache_dir: str | Path | None = None) -> Path:
    """A safetensors copy (model, tokenizer, chat template) of `folder/gguf_file` in `dtype`, made once.

    The cache key holds the GGUF file's absolute path, size and modification
    time, so a file replaced in place is copied again.
    """
    source = (Path(folder) / gguf_file).expanduser().resolve()
    if not source.is_file():
        raise EvalError(f"model.gguf_file={gguf_file!r}: no such file in {folder}")
    stat = source.stat()
    key = {"v": COPY_VERSION, "path": str(source), "size": stat.st_size, "mtime": stat.st_mtime_ns, "dtype": dtype}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", source.stem)[-60:]

    def build(out: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=getattr(torch, dtype), **dense_gguf_kwargs()
        )
        model.save_pretrained(out)
        AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(out)
        (out / MARKER).write_text(json.dumps({"source": str(source), "dtype": dtype}), encoding="utf-8")

    return build_once(cache_root(cache_dir) / f"gguf-{label}-{dtype}-{digest}", MARKER, build)
