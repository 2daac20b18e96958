"""The decoder's linear layers on the CPU: torch's `linear`, or oneDNN on weights packed once, whichever is faster here.

torch's CPU `linear` in float32 hands every call to MKL's sgemm. oneDNN can
instead multiply against a weight laid out once in its own blocked format
(`torch.ops.mkldnn`'s `_reorder_linear_weight` and `_linear_pointwise`, the
ops torch's inductor uses when it freezes a model for the CPU). Which is
faster depends on the processor: on a 2-core AMD EPYC oneDNN ran a decoding
step's products at 34 rows twice as fast as MKL and scoring-sized batches
10-15% faster; on a 2-core Intel Xeon it ran the scoring-sized ones 10-15%
slower, and a step's rows slower too (BENCHMARKS.md). So with `pack="auto"`
both kernels are timed at load on the model's own products: at a decoding
step's row count over the leading layers that hold `TRIAL_BYTES` of weights
(all of a smaller model's), so they stream from memory as in a step, and at
a scoring batch's row count over one layer. oneDNN is kept, and the other
layers packed, when its speed-up averaged geometrically over the two is
above 1. The times are recorded.

On the CPUs measured, a row's result through oneDNN did not depend on the
other rows of the call (bit for bit, alone or in a batch of any size), where
MKL's sgemm gave last-bit differences; and its sums round in another order
than MKL's, so logits differ from transformers' own forward in the last bits.
The run records the kernel it chose (`PackedLinears.kernel`); stored results
are keyed by the setting (`model.pack_linears`), as they are not by the
processor or thread count, which move the last bits too.

The packed copies sit beside the model's own weights, which its forward
(transformers' `generate`, other engines) still reads: where oneDNN is kept,
the projection weights take twice their memory. Only float32 weights on the
CPU are candidates: other dtypes were not measured.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from qwen_evals.core.errors import EvalError

BATCH_HINT = 64
"""Rows oneDNN is told to expect when it lays a weight out; the results were the same for hints of 16 to 4,096."""
TRIAL_ROWS = {"decode": 32, "score": 1024}
"""Row counts the load-time trial times: a decoding step's live slots, and a scoring batch's tokens."""
TRIAL_ROUNDS = 3
TRIAL_BYTES = 256 * 2**20
"""Weights the decoding-row trial cycles through (whole layers, at least one): far more than a CPU's caches, so they
stream from memory as in a step, and for a large model a few of its layers rather than all of them."""


def check_choice(pack: object) -> None:
    if not (pack == "auto" or isinstance(pack, bool)):  # not `in (...)`: 1 == True
        raise EvalError(f"model.pack_linears={pack!r} is not one of auto, true, false")


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """A (out, in) weight laid out once in oneDNN's blocked format."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)


def packed_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias through oneDNN, `weight` from `packed_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _weight_bytes(module: Any) -> int:
    return module.weight.numel() * module.weight.element_size()


def _packable(module: Any, dtype: torch.dtype) -> bool:
    """Exactly `Linear` with weights of the model's float dtype: quantized layers (bitsandbytes') subclass it."""
    return type(module) is torch.nn.Linear and module.weight.dtype == dtype


def _free_memory_bytes() -> int | None:
    """Memory the system can still give (Linux `MemAvailable`); None where it cannot say."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _streamed(layers: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """The leading layers whose weights reach `TRIAL_BYTES` (all of them in a smaller model)."""
    total = 0
    for count, layer in enumerate(layers, start=1):
        total += sum(map(_weight_bytes, layer))
        if total >= TRIAL_BYTES:
            return layers[:count]
    return layers


def packing_available(dtype: torch.dtype, device: torch.device) -> bool:
    ops = torch.ops.mkldnn
    return (
        device.type == "cpu"
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )


class PackedLinears:
    """Applies `torch.nn.Linear` modules through their oneDNN-packed weights where that was chosen, else as they are.

    `pack`: "auto" (time both kernels at load and keep the faster), True (pack
    wherever available), False (never). `layers` groups the modules by decoder
    layer, for the trial; `extra` (the LM head) is packed with them.
    """

    def __init__(self, layers: Sequence[Sequence[Any]], extra: Sequence[Any], dtype: torch.dtype, device: torch.device,
                 pack: bool | str = "auto") -> None:  # fmt: skip
        check_choice(pack)
        self._packed: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.trial: dict[str, Any] | None = None
        """With `pack="auto"`: milliseconds of each kernel on the trial's products, or why none were timed."""
        if pack and packing_available(dtype, device):
            layers = [[m for m in layer if _packable(m, dtype)] for layer in layers]
            everything = [*(m for layer in layers for m in layer), *(m for m in extra if _packable(m, dtype))]
            if pack == "auto" and everything:
                self.trial = self._try(layers, everything, dtype)
            if pack is True or self._packed:
                self._pack(m for m in everything if id(m) not in self._packed)
        self.kernel = "onednn-packed" if self._packed else "torch"
        """What multiplies the decoder's projections: `onednn-packed`, or `torch` (the modules' own `linear`)."""
        self.packed_bytes = sum(w.numel() * w.element_size() for w, _ in self._packed.values())
        """Memory of the packed copies, beside the model's own weights."""

    def _try(self, layers: list[list[Any]], everything: list[Any], dtype: torch.dtype) -> dict[str, Any]:
        """The trial's record; the streamed layers stay packed only where oneDNN wins it.

        Skipped where the packed copies would take more than half the memory the
        system has free: speed is not worth a load that runs out of memory.
        """
        if not any(layers):
            return {"skipped": "no layer products to time"}
        needed = sum(map(_weight_bytes, everything))
        free = _free_memory_bytes()
        if free is not None and needed > free / 2:
            return {"skipped": f"packed copies of {needed / 2**30:.2f} GiB; {free / 2**30:.2f} GiB free"}
        streamed = _streamed(layers)
        self._pack(m for layer in streamed for m in layer)
        trial = self._time_both(streamed, dtype)
        if trial["onednn_speedup"] <= 1.0:
            self._packed.clear()
        return trial

    @torch.inference_mode()
    def _pack(self, modules: Iterable[Any]) -> None:
        for module in modules:
            self._packed[id(module)] = (packed_weight(module.weight), module.bias)

    def __call__(self, module: Any, x: torch.Tensor) -> torch.Tensor:
        packed = self._packed.get(id(module))
        if packed is None:
            return module(x)
        return packed_product(x, *packed)

    @torch.inference_mode()
    def _time_both(self, layers: Sequence[Sequence[Any]], dtype: torch.dtype) -> dict[str, Any]:
        """Milliseconds of both kernels: the layers' products at `decode` rows, the first layer's at `score` rows."""
        trial: dict[str, Any] = {"rows": dict(TRIAL_ROWS), "layers": len(layers)}
        for name, rows in TRIAL_ROWS.items():
            chosen = layers if name == "decode" else [next(layer for layer in layers if layer)]
            modules = [m for layer in chosen for m in layer]
            trial[name] = self._best_ms(modules, rows, dtype)
        speedups = [trial[n]["torch"] / trial[n]["onednn"] for n in TRIAL_ROWS]
        trial["onednn_speedup"] = round(math.prod(speedups) ** (1 / len(speedups)), 3)
        return trial

    def _best_ms(self, modules: list[Any], rows: int, dtype: torch.dtype) -> dict[str, float]:
        """Best-of-rounds milliseconds of one pass over `modules` at `rows` rows, the kernels alternated."""
        generator = torch.Generator().manual_seed(0)  # its own: the run's random stream is not touched
        inputs = {w: torch.randn(rows, w, generator=generator, dtype=dtype) for w in sorted({m.in_features for m in modules})}
        runs: dict[str, Callable[[], object]] = {
            "torch": lambda: [m(inputs[m.in_features]) for m in modules],
            "onednn": lambda: [self(m, inputs[m.in_features]) for m in modules],
        }
        for run in runs.values():
            run()  # first calls: allocations, kernel selection
        best = dict.fromkeys(runs, math.inf)
        for _ in range(TRIAL_ROUNDS):
            for kernel, run in runs.items():
                start = time.perf_counter()
                run()
                best[kernel] = min(best[kernel], time.perf_counter() - start)
        return {kernel: round(1000 * seconds, 3) for kernel, seconds in best.items()}
