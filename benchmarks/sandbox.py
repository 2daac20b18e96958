"""Programs per second of the code sandbox under each isolation mode, on the same programs, in one run.

The workload is HumanEval scoring at its worst-case share of the sandbox: the 164 canonical
solutions (prompt + solution + tests + check), each a fresh interpreter. Every mode runs the
same programs in the same order, --repeat times, alternating modes so that load from other
work on the machine spreads over all of them; the script prints programs/s and the time per
program (wall time x workers / programs) per mode, and the overhead of each mode over the
cheapest against the 3 s limit a program may take.

    python benchmarks/sandbox.py --data-dir ../shared/data --workers 1 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qwen_evals.scoring.sandbox import Sandbox  # noqa: E402
from qwen_evals.scoring.sandbox.sandbox import ISOLATIONS  # noqa: E402
from qwen_evals.tasks.humaneval import HumanEval, program  # noqa: E402


def canonical_programs(data_dir: Path) -> list[str]:
    task = HumanEval("chat_0shot", data_dir=str(data_dir / "humaneval"), allow_code_execution=True, sandbox=Sandbox())
    return [program(p, p.canonical_solution) for p in task.read_problems()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1, help="programs at once (1: the cost of one program)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(ISOLATIONS), choices=ISOLATIONS)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args()

    programs = canonical_programs(args.data_dir)
    sandboxes = {mode: Sandbox(timeout_s=3.0, workers=args.workers, isolation=mode) for mode in args.modes}
    described = {mode: sandbox.describe() for mode, sandbox in sandboxes.items()}  # probes, outside the timing
    seconds: dict[str, list[float]] = {mode: [] for mode in args.modes}
    load_before = os.getloadavg()
    for _ in range(args.repeat):
        for mode, sandbox in sandboxes.items():
            start = time.perf_counter()
            results = sandbox.run_many(programs)
            seconds[mode].append(time.perf_counter() - start)
            failed = [r for r in results if not r.passed]
            if failed:
                raise SystemExit(f"{mode}: {len(failed)} canonical solutions did not pass: {failed[0]}")
    figures = {}
    for mode in args.modes:
        best = min(seconds[mode])
        figures[mode] = {
            "programs_per_s": len(programs) / best,
            "ms_per_program": 1000 * best * args.workers / len(programs),
            "median_s": statistics.median(seconds[mode]),
            "python": described[mode]["python"],
            "user": described[mode]["user"],
        }
    cheapest = min(f["ms_per_program"] for f in figures.values())
    print(
        f"{len(programs)} programs, workers={args.workers}, best of {args.repeat}; load {load_before} -> {os.getloadavg()}"
    )
    print(f"{'isolation':<10} {'programs/s':>11} {'ms/program':>11} {'overhead ms':>12} {'of 3 s':>8}")
    for mode, f in figures.items():
        overhead = f["ms_per_program"] - cheapest
        f["overhead_ms"] = overhead
        print(
            f"{mode:<10} {f['programs_per_s']:>11.1f} {f['ms_per_program']:>11.1f} {overhead:>12.1f} {overhead / 30:>7.2f}%"
        )
    if args.out:
        args.out.write_text(json.dumps({"workers": args.workers, "n": len(programs), "modes": figures}, indent=2))


if __name__ == "__main__":
    main()
