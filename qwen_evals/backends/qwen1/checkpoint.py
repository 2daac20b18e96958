"""Reading a Qwen (v1) checkpoint folder: its config.json, checked against what
the Qwen2 layout can hold, and its tensors by name (safetensors or PyTorch .bin).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError

V1_REQUIRED_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "num_hidden_layers",
    "intermediate_size",
    "layer_norm_epsilon",
    "vocab_size",
)
# Buffers some v1 .bin files carry; they are recomputed, not weights.
V1_IGNORED = re.compile(r"transformer\.h\.\d+\.attn\.(rotary_emb\.inv_freq|bias|masked_bias)$")


def read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise EvalError(f"{path} not found: {what}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalError(f"{path} is not valid JSON: {error}") from error


class TensorSource:
    """Tensors of a checkpoint folder by name, read one at a time (safetensors or PyTorch .bin shards)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, Path] = {}  # tensor name -> file
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index = folder / index_name
            if index.is_file():
                weight_map = read_json(index, "shard index").get("weight_map")
                if not isinstance(weight_map, dict):
                    raise EvalError(f"{index} has no 'weight_map'")
                self.files = {name: folder / file for name, file in weight_map.items()}
                missing = sorted({str(p.name) for p in self.files.values() if not p.is_file()})
                if missing:
                    raise EvalError(f"{index} lists shard files that are missing from {folder}: {missing}")
                break
        else:
            for single in ("model.safetensors", "pytorch_model.bin"):
                if (folder / single).is_file():
                    self.files = {name: folder / single for name in self._names_in(folder / single)}
                    break
            else:
                raise EvalError(
                    f"No weights in {folder}: expected model.safetensors(.index.json) or pytorch_model.bin(.index.json)"
                )
        self._open: dict[Path, Any] = {}

    @staticmethod
    def _load_bin(path: Path) -> dict[str, Any]:
        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # torch raises several types for a bad pickle/zip
            raise EvalError(f"Cannot read PyTorch weights {path}: {error}") from error

    def _names_in(self, path: Path) -> list[str]:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(path), framework="pt") as handle:
                    return list(handle.keys())
            except Exception as error:  # safetensors raises its own error type for a bad header
                raise EvalError(f"Cannot read safetensors file {path}: {error}") from error
        return list(self._load_bin(path))

    def names(self) -> set[str]:
        return set(self.files)

    def get(self, name: str) -> Any:
        path = self.files.get(name)
        if path is None:
            raise EvalError(f"Weight '{name}' is missing from the checkpoint in {self.folder}")
        if path not in self._open:  # both kinds are memory-mapped: a tensor is read when taken
            if path.suffix == ".safetensors":
                from safetensors import safe_open

                self._open[path] = safe_open(str(path), framework="pt")
            else:
                self._open[path] = self._load_bin(path)
        handle = self._open[path]
        try:
            return handle.get_tensor(name) if path.suffix == ".safetensors" else handle[name]
        except Exception as error:
            raise EvalError(f"Weight '{name}' listed for {path.name} cannot be read from it: {error}") from error


def v1_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    config = read_json(config_path, "a Qwen (v1) checkpoint has a config.json")
    architectures = config.get("architectures") or []
    if config.get("model_type") != "qwen" and "QWenLMHeadModel" not in architectures:
        raise EvalError(
            f"{config_path} describes model_type={config.get('model_type')!r} architectures={architectures}, "
            f"not a Qwen (v1) QWenLMHeadModel checkpoint; it loads natively: model=hf model.path={folder}"
        )
    missing = [key for key in V1_REQUIRED_KEYS if key not in config]
    if missing:
        raise EvalError(f"{config_path} lacks {missing}, which a Qwen (v1) config has")
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    if hidden % heads or config.get("kv_channels", hidden // heads) * heads != hidden:
        raise EvalError(
            f"{config_path}: kv_channels={config.get('kv_channels')} x num_attention_heads={heads} must equal "
            f"hidden_size={hidden} for the Qwen2 layout"
        )
    if config.get("rotary_pct", 1.0) != 1.0:
        raise EvalError(f"{config_path}: rotary_pct={config['rotary_pct']}; Qwen2 rotates the whole head (1.0)")
    if config.get("no_bias", True) is not True:
        raise EvalError(f"{config_path}: no_bias=false (biased MLP/output projections) has no Qwen2 counterpart")
    if config.get("intermediate_size", 0) % 2:
        raise EvalError(
            f"{config_path}: intermediate_size={config['intermediate_size']} must be even (w1 and w2 get half each)"
        )
    if config.get("tie_word_embeddings"):
        raise EvalError(f"{config_path}: tie_word_embeddings=true; Qwen (v1) checkpoints have a separate lm_head")
    return config


def v1_names(config: dict[str, Any]) -> set[str]:
    names = {"transformer.wte.weight", "transformer.ln_f.weight", "lm_head.weight"}
    for i in range(config["num_hidden_layers"]):
        names |= {
            f"transformer.h.{i}.{suffix}"
            for suffix in (
                "ln_1.weight",
                "attn.c_attn.weight",
                "attn.c_attn.bias",
                "attn.c_proj.weight",
                "ln_2.weight",
                "mlp.w1.weight",
                "mlp.w2.weight",
                "mlp.c_proj.weight",
            )
        }
    return names
