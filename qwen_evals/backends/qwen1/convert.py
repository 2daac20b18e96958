"""Qwen (v1) checkpoints to native Qwen2: the tensor mapping, and the writing of the copy.

Qwen-7B and Qwen-7B-Chat (v1) ship remote code written for transformers 4.31
(`QWenLMHeadModel`, a tiktoken tokenizer). Their architecture is the one
transformers and vLLM know natively as Qwen2 (RMSNorm, rotate-half RoPE over the
whole head, q/k/v biases, SwiGLU MLP), so the weights are renamed and split, not
changed:

    transformer.wte                 -> model.embed_tokens
    transformer.h.N.ln_1            -> model.layers.N.input_layernorm
    transformer.h.N.attn.c_attn     -> model.layers.N.self_attn.{q,k,v}_proj  (rows split in 3, biases too)
    transformer.h.N.attn.c_proj     -> model.layers.N.self_attn.o_proj
    transformer.h.N.ln_2            -> model.layers.N.post_attention_layernorm
    transformer.h.N.mlp.w2          -> model.layers.N.mlp.gate_proj  (v1: c_proj(w1(x) * silu(w2(x))))
    transformer.h.N.mlp.w1          -> model.layers.N.mlp.up_proj
    transformer.h.N.mlp.c_proj      -> model.layers.N.mlp.down_proj
    transformer.ln_f                -> model.norm
    lm_head                         -> lm_head

The context length of the converted model is v1's `seq_length`: within it v1's
dynamic NTK and log-n attention scaling are inactive, so the two agree exactly;
beyond it v1 extrapolates in a way Qwen2 has no setting for.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from qwen_evals.backends.qwen1.checkpoint import V1_IGNORED, TensorSource, read_json, v1_config, v1_names
from qwen_evals.backends.qwen1.tokenizer import read_tiktoken_ranks, save_qwen1_tokenizer
from qwen_evals.core.errors import EvalError

CONVERTER_VERSION = 1  # bump when the output changes, so cached copies are rebuilt
MARKER = "conversion.json"  # written last: its presence means the copy is complete


def _expect_shape(name: str, tensor: Any, shape: tuple[int, ...]) -> Any:
    if tuple(tensor.shape) != shape:
        raise EvalError(f"Weight '{name}' has shape {tuple(tensor.shape)}, expected {shape} from config.json")
    return tensor


def _qwen2_tensors(source: TensorSource, config: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(Qwen2 name, tensor) pairs, one layer at a time."""
    hidden, vocab = config["hidden_size"], config["vocab_size"]
    inner = config["intermediate_size"] // 2

    def take(name: str, *shape: int) -> Any:
        return _expect_shape(name, source.get(name), shape)

    yield "model.embed_tokens.weight", take("transformer.wte.weight", vocab, hidden)
    for i in range(config["num_hidden_layers"]):
        v1, out = f"transformer.h.{i}.", f"model.layers.{i}."
        yield out + "input_layernorm.weight", take(v1 + "ln_1.weight", hidden)
        weight = take(v1 + "attn.c_attn.weight", 3 * hidden, hidden)
        bias = take(v1 + "attn.c_attn.bias", 3 * hidden)
        for part, w, b in zip("qkv", weight.split(hidden, dim=0), bias.split(hidden, dim=0)):
            # Own storage: some safetensors versions refuse views of one tensor in a file.
            yield out + f"self_attn.{part}_proj.weight", w.clone()
            yield out + f"self_attn.{part}_proj.bias", b.clone()
        yield out + "self_attn.o_proj.weight", take(v1 + "attn.c_proj.weight", hidden, hidden)
        yield out + "post_attention_layernorm.weight", take(v1 + "ln_2.weight", hidden)
        yield out + "mlp.gate_proj.weight", take(v1 + "mlp.w2.weight", inner, hidden)
        yield out + "mlp.up_proj.weight", take(v1 + "mlp.w1.weight", inner, hidden)
        yield out + "mlp.down_proj.weight", take(v1 + "mlp.c_proj.weight", hidden, inner)
    yield "model.norm.weight", take("transformer.ln_f.weight", hidden)
    yield "lm_head.weight", take("lm_head.weight", vocab, hidden)


# ---- writing the Qwen2 copy -----------------------------------------------------


def _write_shards(tensors: Iterator[tuple[str, Any]], dst: Path, max_shard_bytes: int) -> str:
    """safetensors shards + model.safetensors.index.json; returns the dtype of the weights.

    A shard is written as soon as it is full, so memory holds one shard at a time.
    """
    from safetensors.torch import save_file

    written: list[tuple[Path, list[str]]] = []
    current: dict[str, Any] = {}
    size = total = 0
    dtype = None

    def flush() -> None:
        path = dst / f".shard-{len(written) + 1:05d}.safetensors"
        save_file(current, str(path), metadata={"format": "pt"})
        written.append((path, list(current)))

    for name, tensor in tensors:
        dtype = dtype or str(tensor.dtype).removeprefix("torch.")
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            flush()
            current, size = {}, 0
        current[name] = tensor
        size += nbytes
        total += nbytes
    flush()
    umask = os.umask(0)
    os.umask(umask)
    weight_map: dict[str, str] = {}
    for number, (path, names) in enumerate(written, start=1):
        file = f"model-{number:05d}-of-{len(written):05d}.safetensors"
        path.chmod(0o666 & ~umask)  # safetensors writes 0600; the copy may be a shared cache
        path.rename(dst / file)
        weight_map.update(dict.fromkeys(names, file))
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return dtype or "float32"


def _qwen2_config(config: dict[str, Any], dtype: str, eos: int | list[int]) -> Any:
    import inspect

    from transformers import Qwen2Config

    base = float(config.get("rotary_emb_base", 10000))
    rope = (
        {"rope_parameters": {"rope_type": "default", "rope_theta": base}}
        if "rope_parameters" in inspect.signature(Qwen2Config.__init__).parameters
        else {"rope_theta": base}
    )
    return Qwen2Config(
        architectures=["Qwen2ForCausalLM"],
        vocab_size=config["vocab_size"],
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"] // 2,
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_attention_heads"],
        hidden_act="silu",
        max_position_embeddings=int(config.get("seq_length") or config.get("max_position_embeddings") or 2048),
        initializer_range=config.get("initializer_range", 0.02),
        rms_norm_eps=config["layer_norm_epsilon"],
        use_cache=True,
        tie_word_embeddings=False,
        use_sliding_window=False,
        attention_dropout=0.0,
        bos_token_id=None,
        eos_token_id=eos,
        pad_token_id=151643,
        dtype=dtype,
        **rope,
    )


def _generation_config(folder: Path, eos: int | list[int]) -> Any:
    """The source's decoding defaults (kept, so the copy decodes as the original), with Qwen2 stop ids."""
    from transformers import GenerationConfig

    source = folder / "generation_config.json"
    settings = json.loads(source.read_text(encoding="utf-8")) if source.is_file() else {}
    kept = {
        k: settings[k]
        for k in ("do_sample", "top_k", "top_p", "temperature", "repetition_penalty", "max_new_tokens")
        if k in settings
    }
    return GenerationConfig(**kept, eos_token_id=eos, pad_token_id=151643, bos_token_id=None)


def _is_chat(folder: Path, name: str) -> bool:
    """Chat model? v1 generation_config says chat_format 'chatml' (chat) or 'raw' (base)."""
    source = folder / "generation_config.json"
    if source.is_file():
        chat_format = read_json(source, "generation settings").get("chat_format")
        if chat_format in ("chatml", "raw"):
            return chat_format == "chatml"
    return "chat" in name.lower()


def convert_qwen1(
    src: str | Path,
    dst: str | Path,
    *,
    chat: bool | None = None,
    tiktoken_file: str | Path | None = None,
    max_shard_bytes: int = 4 << 30,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Convert the Qwen (v1) checkpoint folder `src` into a Qwen2 checkpoint at `dst` (new or empty).

    `chat`: None reads it from the source (generation_config chat_format, else the name).
    Everything else comes from the folder: config.json, weights, qwen.tiktoken.
    """
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise EvalError(f"Qwen (v1) checkpoint folder {src} does not exist")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise EvalError(f"Output {dst} exists and is not an empty folder; remove it or choose another")
    config = v1_config(src)
    tiktoken_path = Path(tiktoken_file) if tiktoken_file else src / "qwen.tiktoken"
    if not tiktoken_path.is_file():
        raise EvalError(f"{tiktoken_path} not found: a Qwen (v1) checkpoint ships its tokenizer as qwen.tiktoken")
    read_tiktoken_ranks(tiktoken_path)  # a bad file fails here, before gigabytes of weights are written
    source = TensorSource(src)
    expected = v1_names(config)
    missing = sorted(expected - source.names())
    if missing:
        raise EvalError(
            f"Weight '{missing[0]}' is missing from the checkpoint in {src} ({len(missing)} missing in all)"
        )
    unexpected = sorted(n for n in source.names() - expected if not V1_IGNORED.match(n))
    if unexpected:
        raise EvalError(
            f"{src} holds weights a Qwen (v1) language model does not have, e.g. {unexpected[:3]} "
            f"({len(unexpected)} in all); not a plain QWenLMHeadModel checkpoint"
        )
    chat = _is_chat(src, str(provenance.get("source", src)) if provenance else str(src)) if chat is None else chat
    eos: int | list[int] = [151645, 151643] if chat else 151643  # <|im_end|>, <|endoftext|>

    created = not dst.exists()
    dst.mkdir(parents=True, exist_ok=True)
    try:
        dtype = _write_shards(_qwen2_tensors(source, config), dst, max_shard_bytes)
        qwen2 = _qwen2_config(config, dtype, eos)
        qwen2.save_pretrained(str(dst))
        _generation_config(src, eos).save_pretrained(str(dst))
        save_qwen1_tokenizer(tiktoken_path, dst, chat=chat, model_max_length=qwen2.max_position_embeddings)
        # Loadable by transformers 4.x too ("TokenizersBackend" is 5.x's name for the same class).
        tokenizer_config = dst / "tokenizer_config.json"
        settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        tokenizer_config.write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except BaseException:
        # Without its marker the copy is never used; do not leave gigabytes of it behind either.
        if created:
            shutil.rmtree(dst, ignore_errors=True)
        else:
            for leftover in dst.iterdir():
                if leftover.is_dir():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
        raise
    record = {
        "converter": "qwen1",
        "converter_version": CONVERTER_VERSION,
        "chat": chat,
        "source": str(src),
        **(provenance or {}),
    }
    (dst / MARKER).write_text(json.dumps(record, indent=2) + "\n")
    return dst
