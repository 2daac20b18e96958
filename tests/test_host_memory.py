"""Weights and the slot cache on huge pages (host_memory.py): same values, advised mappings, tied weights and footprints kept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from qwen_evals.backends.hf import host_memory
from qwen_evals.backends.hf.attention import SlotCache
from qwen_evals.backends.memory import weights_bytes
from tests.conftest import write_byte_qwen2

pytestmark = pytest.mark.skipif(
    not host_memory.available() or not Path("/proc/self/smaps").exists(), reason="Linux's MADV_HUGEPAGE"
)


def advised_huge(tensor: torch.Tensor) -> bool:
    """Whether the mapping holding the tensor's first byte carries MADV_HUGEPAGE ("hg" among its VmFlags)."""
    address = tensor.data_ptr()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", Path("/proc/self/smaps").read_text()):
        start, end = (int(x, 16) for x in block.split()[0].split("-"))
        if start <= address < end:
            return " hg" in re.search(r"VmFlags:(.*)", block).group(1)
    raise AssertionError(f"no mapping holds address {address:#x}")


def test_cpu_zeros_are_zero_writable_and_advised_huge():
    x = host_memory.zeros((3, 2, 5, 4), torch.float32, torch.device("cpu"))
    assert x.shape == (3, 2, 5, 4) and x.dtype == torch.float32 and not x.any()
    x[1, 1, 4, 3] = 7.0
    assert x.sum() == 7.0 and advised_huge(x)
    assert not advised_huge(torch.zeros(1 << 20))  # torch's allocator does not ask (no THP_MEM_ALLOC_ENABLE)
    assert host_memory.zeros((0, 3), torch.float32, torch.device("cpu")).shape == (0, 3)


def test_the_slot_cache_lives_on_huge_pages():
    cache = SlotCache(
        layers=2, slots=3, kv_heads=2, capacity=16, head_dim=8, dtype=torch.float32, device=torch.device("cpu")
    )
    assert all(advised_huge(t) and not t.any() for t in cache.keys + cache.values)


def test_moved_weights_give_the_same_logits_bit_for_bit_and_stay_tied(tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(write_byte_qwen2(tmp_path), dtype=torch.float32).eval()
    tokens = torch.randint(0, 259, (3, 17), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        before = model(tokens).logits
    assert not advised_huge(model.model.layers[0].mlp.up_proj.weight)
    footprints = weights_bytes(model), weights_bytes(model.model.layers)
    done = host_memory.move_weights(model)
    parameters = list(model.parameters())
    assert done == {"huge_pages": True, "bytes": sum(-(-p.numel() * 4 // 64) * 64 for p in parameters)}
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: one copy
    assert all(advised_huge(p) and p.data_ptr() % 64 == 0 for p in parameters)
    # One storage now holds every weight: the footprints still count each tensor's own bytes.
    assert (weights_bytes(model), weights_bytes(model.model.layers)) == footprints
    with torch.inference_mode():
        assert torch.equal(model(tokens).logits, before)


def test_quantized_parameters_keep_their_storage():
    class PackedWeight(torch.nn.Parameter):
        """Stands for bitsandbytes' parameter classes (Int8Params, Params4bit)."""

    layer = torch.nn.Linear(4, 4)
    layer.weight = PackedWeight(layer.weight.data)
    address = layer.weight.data_ptr()
    assert host_memory.move_weights(layer) == {"huge_pages": False, "why": "quantized parameters"}
    assert layer.weight.data_ptr() == address
