"""The machine's limits for the benchmark's dtype and thread count: dense matmul rate and memory bandwidth.

The matmul rate is the faster of torch's `mm` and, in float32 on the CPU,
oneDNN on a packed weight (the suite's own kernel there, `cpu_linear.py`), so
a fraction of it is a fraction of the best this machine's kernels reach.

Each figure is the best of `passes` passes, a pass being the best of several
timed trials of at least `min_seconds` each, so a busy moment lowers one pass,
not the figure. The load average is recorded beside it: on a shared machine
the best pass is still an underestimate of the quiet machine.

    python benchmarks/machine_limits.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch

from qwen_evals.backends.hf.cpu_linear import packed_product, packed_weight, packing_available

MATMUL = (2048, 2048, 2048)
COPY_BYTES = 512 * 2**20


def synced(work: Callable[[], object]) -> Callable[[], object]:
    """`work` followed by waiting for the GPU, so its time is the kernels' and not their launch."""
    if not torch.cuda.is_available():
        return work

    def run() -> None:
        work()
        torch.cuda.synchronize()

    return run


def best_seconds(work: Callable[[], object], min_seconds: float = 0.25, trials: int = 5) -> float:
    work = synced(work)
    work()
    repeats = 1
    while True:
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            break
        repeats *= 2
    best = elapsed / repeats
    for _ in range(trials - 1):
        start = time.perf_counter()
        for _ in range(repeats):
            work()
        best = min(best, (time.perf_counter() - start) / repeats)
    return best


def matmul_flops(dtype: torch.dtype, device: str, shape: tuple[int, int, int] = MATMUL) -> dict[str, float]:
    """FLOP/s of one (m x k) @ (k x n) product: torch's `mm` into a preallocated output and, where the
    suite multiplies through it (float32 on the CPU), oneDNN on the weight packed once; the rate is the faster."""
    m, k, n = shape
    a, b = torch.randn(m, k, dtype=dtype, device=device), torch.randn(k, n, dtype=dtype, device=device)
    out = torch.empty(m, n, dtype=dtype, device=device)
    rates = {"mm_flops_per_s": 2 * m * k * n / best_seconds(lambda: torch.mm(a, b, out=out))}
    if packing_available(dtype, torch.device(device)):
        packed = packed_weight(b.t().contiguous())
        rates["onednn_packed_flops_per_s"] = 2 * m * k * n / best_seconds(lambda: packed_product(a, packed))
    return {"matmul_flops_per_s": max(rates.values()), **rates}


def bandwidth(device: str, nbytes: int = COPY_BYTES) -> dict[str, float]:
    """Bytes/s of a copy (read + write counted) and of a sum (read only) over a buffer far larger than any cache."""
    source = torch.rand(nbytes // 4, device=device)
    target = torch.empty_like(source)
    return {
        "copy_bytes_per_s": 2 * nbytes / best_seconds(lambda: target.copy_(source), trials=4),
        "read_bytes_per_s": nbytes / best_seconds(lambda: source.sum(), trials=4),
    }


def measure(dtype: torch.dtype, device: str = "cpu", passes: int = 3) -> dict[str, float | list[float]]:
    runs = []
    for _ in range(passes):
        runs.append({**matmul_flops(dtype, device), **bandwidth(device)})
    best = {key: max(run[key] for run in runs) for key in runs[0]}
    return {**best, "threads": torch.get_num_threads(), "dtype": str(dtype), "load_average": list(os.getloadavg())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--passes", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(measure(getattr(torch, args.dtype), passes=args.passes), indent=2))


if __name__ == "__main__":
    main()
