"""CPU memory on transparent huge pages for the tensors every decoding step streams: weights and the slot cache.

A decoding step on the CPU reads all of the model's weights and every live
slot's keys and values from memory, a few hundred megabytes per step for a
small model. With 4 KiB pages that stream costs a page-table walk every 4 KiB;
on 2 MiB pages the same reads ran 15-30% faster here while the machine's
neighbours took part of its memory bandwidth, though a quiet machine generated
equally fast either way (BENCHMARKS.md). Linux backs memory with huge pages
only where asked (transparent huge pages in "madvise" mode, the usual
default), and neither of these tensors asks:
weights loaded from safetensors are a private map of the file (page-cache
pages, 8-byte aligned), and torch's allocator asks only when the
THP_MEM_ALLOC_ENABLE environment variable was set before its first
allocation. So the tensors are placed in anonymous private maps advised
MADV_HUGEPAGE (Python's `mmap`), wrapped by `torch.frombuffer`, which keeps
the map alive as long as a tensor uses it. Where `mmap` has no MADV_HUGEPAGE
(not Linux) or the tensors are not on the CPU, torch's own allocation is used.
Values are copied bit for bit: results do not change.
"""

from __future__ import annotations

import itertools
import math
import mmap
from collections.abc import Sequence
from typing import Any

import torch

ALIGNMENT = 64
"""Bytes: each parameter starts on a cache line (a map itself starts on a page)."""


def available() -> bool:
    return hasattr(mmap, "MADV_HUGEPAGE")


def _huge_page_bytes(nbytes: int) -> torch.Tensor:
    """A zero-filled uint8 tensor of `nbytes` in its own anonymous map, advised to use huge pages."""
    if nbytes == 0:  # an empty map cannot be made, nor a tensor over one
        return torch.zeros(0, dtype=torch.uint8)
    region = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)  # before the first write, so the first touch faults in huge pages
    return torch.frombuffer(region, dtype=torch.uint8, count=nbytes)


def zeros(shape: Sequence[int], dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """torch.zeros(shape), on huge pages when on the CPU (a fresh anonymous map is already zero)."""
    if torch.device(device).type != "cpu" or not available():
        return torch.zeros(tuple(shape), dtype=dtype, device=device)
    return _huge_page_bytes(math.prod(shape) * dtype.itemsize).view(dtype).view(tuple(shape))


def move_weights(model: Any) -> dict[str, Any]:
    """Copy the model's CPU parameters into one huge-page map (tied parameters stay one); what was done, for the run record.

    Only plain `torch.nn.Parameter`s of an unquantized model move: quantized
    weights (bitsandbytes' parameter classes) keep their own storage.
    """
    if not available():
        return {"huge_pages": False, "why": "no MADV_HUGEPAGE on this platform"}
    parameters = list(model.parameters())  # each shared (tied) parameter once
    if any(type(p) is not torch.nn.Parameter for p in parameters):
        return {"huge_pages": False, "why": "quantized parameters"}
    if any(p.device.type != "cpu" for p in parameters):
        return {"huge_pages": False, "why": "weights not on the CPU"}
    sizes = [p.numel() * p.element_size() for p in parameters]
    offsets = list(itertools.accumulate((-(-n // ALIGNMENT) * ALIGNMENT for n in sizes), initial=0))
    arena = _huge_page_bytes(offsets[-1])
    with torch.no_grad():
        for p, offset, nbytes in zip(parameters, offsets, sizes):
            p.data = arena[offset : offset + nbytes].view(p.dtype).view(p.shape).copy_(p.data)
    return {"huge_pages": True, "bytes": offsets[-1]}
