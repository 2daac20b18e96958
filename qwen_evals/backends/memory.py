"""What a loaded model holds in memory and the most a run used: the `memory` block of summary.json.

- `weights_bytes`: every parameter and buffer once (tied weights share their
  storage), plus the statistics bitsandbytes keeps beside its packed weights
  (int8 row scales; NF4 block absmax and code book), which transformers'
  `get_memory_footprint` leaves out. The packed engine's oneDNN copies of the
  projections (`hf/cpu_linear.py`) are not parameters: the backend reports them
  beside, as `linear_packed_bytes`; `peak_bytes` includes them (they are made
  after the load).
- `load_peak_bytes`: the peak while the model loads (a quantized load holds
  unquantized tensors for a while; an unquantized CPU load holds the weights
  file's map and their copy on huge pages, `hf/host_memory.py`, for a moment);
  `peak_bytes`: the peak from then to the end of the run, weights included.
- `measure` says what the peaks are. On CUDA, `torch.cuda.max_memory_allocated`
  summed over the visible GPUs: tensors only, not the caching allocator's
  reserve. On the CPU, the process's resident set size high-water mark (Linux
  `VmHWM`, reset through /proc/self/clear_refs at both phase starts): everything
  the process holds, interpreter, libraries, tokenizer and data included.
  Where it cannot be reset, the peaks count from the start of the process.
- `resident_at_start_bytes`: what the process already held when loading began
  (libraries, and whatever an earlier job of a `-m` sweep left behind).
"""

from __future__ import annotations

import gc
import re
import resource
import sys
from itertools import chain
from pathlib import Path
from typing import Any

import torch

_STATUS = Path("/proc/self/status")


class MemoryMeter:
    """Memory of one run on `device` ("cuda" or "cpu"): `loading()` before the load, `loaded()` after, then `report`."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.resettable = True
        self.resident_at_start = self.load_peak = 0

    def loading(self) -> None:
        gc.collect()  # a previous job's model, if nothing holds it any more
        self.resident_at_start = self._current()
        self._reset()

    def loaded(self) -> None:
        self.load_peak = self._peak()
        self._reset()

    def report(self, model: Any) -> dict[str, Any]:
        if self.device == "cuda":
            measure = "cuda_max_allocated"
        else:
            measure = "rss_high_water" if self.resettable else "rss_high_water_since_process_start"
        return {
            "device": self.device,
            "measure": measure,
            "weights_bytes": weights_bytes(model),
            "load_peak_bytes": self.load_peak,
            "peak_bytes": self._peak(),
            "resident_at_start_bytes": self.resident_at_start,
        }

    def _current(self) -> int:
        if self.device == "cuda":
            return sum(torch.cuda.memory_allocated(d) for d in range(torch.cuda.device_count()))
        return _proc_status_bytes("VmRSS") or 0

    def _peak(self) -> int:
        if self.device == "cuda":
            return sum(torch.cuda.max_memory_allocated(d) for d in range(torch.cuda.device_count()))
        peak = _proc_status_bytes("VmHWM")
        if peak is None:  # no /proc (macOS): ru_maxrss is in bytes there, KiB on Linux
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
        return peak

    def _reset(self) -> None:
        if self.device == "cuda":
            for d in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(d)
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")  # 5: reset the resident set size high-water mark
        except OSError:
            self.resettable = False


def _proc_status_bytes(field: str) -> int | None:
    """A `kB` field of /proc/self/status in bytes (None where there is no /proc)."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def weights_bytes(model: Any) -> int:
    """Bytes of the model's parameters, buffers and bitsandbytes quantization state, each tensor's memory counted once.

    Counted by the tensors' own bytes, not their storages': on the CPU the
    weights share one storage (`hf/host_memory.py`), and tied weights or
    bitsandbytes' `CB` share their tensor's address.
    """
    spans: dict[tuple[str, int], int] = {}
    for module in model.modules():
        holders = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        # Linear8bitLt moves its int8 matrix and scales from the weight to `module.state` at its first forward.
        holders.append(getattr(module, "state", None))
        for part in chain.from_iterable(quantization_state(h) for h in holders):
            if part.device.type != "meta":
                key = (str(part.device), part.data_ptr())
                spans[key] = max(spans.get(key, 0), part.numel() * part.element_size())
    return sum(spans.values())


def quantization_state(holder: Any) -> list[Any]:
    """`holder` when it is a tensor, and the tensors bitsandbytes keeps with it.

    `Int8Params` (or, after the first forward, `Linear8bitLt.state`): the int8
    matrix `CB` (the weight's own storage) and its per-row scales `SCB`.
    `Params4bit`: its `quant_state`'s block absmax and code book, and the same
    again for the absmax when double-quantized (`state2`, with an `offset`).
    """
    found = [holder] if torch.is_tensor(holder) else []
    found += [t for t in (getattr(holder, "CB", None), getattr(holder, "SCB", None)) if torch.is_tensor(t)]
    state = getattr(holder, "quant_state", None)
    while state is not None:
        found += [t for t in (state.absmax, state.code, getattr(state, "offset", None)) if torch.is_tensor(t)]
        state = getattr(state, "state2", None)
    return found
