"""The card's quantization table (MMLU by precision, with memory) measured on SmolLM2-135M-Instruct.

    python benchmarks/quantization.py --data-dir ../shared/data --limit 20

Runs `run_eval.py model=smollm2 task=mmlu task.protocol=base_5shot precision=P`
once per precision, each in its own process so that every run's peak memory is
its own (a `-m` sweep runs its jobs in one process, where an earlier job's
leftovers stay resident). Then prints, and writes to `<out>/quantization.md`,
the leaderboard's quantization view of those runs (`analysis.tables.quantization`:
accuracy with its 95% CI, the paired difference to the highest precision with
McNemar's p, weight footprint, peak memory, tokens/s) with the machine, the
software and the load average during each run.

base_5shot is the protocol of the card's table: its 56.7 at bf16 is Qwen-7B
(base)'s MMLU 5-shot (see conf/card/qwen-7b-chat.yaml).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qwen_evals.analysis.card import load_card  # noqa: E402
from qwen_evals.analysis.results import load_runs  # noqa: E402
from qwen_evals.analysis.tables import markdown_table, quantization  # noqa: E402

COLUMNS = {  # quantization() column -> printed header
    "precision": "precision", "n": "n", "score": "accuracy", "ci_low": "CI low", "ci_high": "CI high",
    "delta": "delta vs ref", "p": "McNemar p", "weights_gb": "weights GiB", "peak_memory_gb": "peak GiB",
    "tokens_per_second": "tokens/s", "card_score": "card", "card_memory_gb": "card GB",
}  # fmt: skip


def run_precision(precision: str, args: argparse.Namespace) -> dict:
    """One run_eval.py process; returns its command, wall time and the load average around it."""
    command = [
        sys.executable, "run_eval.py", "model=smollm2", "task=mmlu", "task.protocol=base_5shot", f"precision={precision}",
        f"data_dir={args.data_dir}", f"limit={args.limit}", "resume=false", f"output_dir={args.out / precision}",
    ]  # fmt: skip
    before = os.getloadavg()
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{precision} failed:\n{done.stderr[-3000:]}")
    return {"command": shlex.join(command[1:]), "seconds": time.perf_counter() - start, "load": (before, os.getloadavg())}


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())  # fmt: skip
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import torch

    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB RAM; torch threads {torch.get_num_threads()}"


def report(args: argparse.Namespace, runs: dict[str, dict]) -> str:
    table = quantization(load_runs([args.out]), load_card())
    if table.empty:
        sys.exit(f"no quantization table: fewer than two precisions finished under {args.out}")
    view = table[list(COLUMNS)].rename(columns=COLUMNS)
    software = ", ".join(f"{p} {version(p)}" for p in ("torch", "transformers", "bitsandbytes", "accelerate"))
    lines = [
        f"Machine: {machine()}.", f"Software: Python {platform.python_version()}, {software}.",
        f"Reference precision: {table['reference'].iloc[0]}; memory measured on {table['memory_device'].iloc[0]}.",
        "", markdown_table(view, digits=2), "| precision | seconds | load average before | after |", "|---|---|---|---|",
        *(f"| {p} | {r['seconds']:.0f} | {r['load'][0][0]:.1f} | {r['load'][1][0]:.1f} |" for p, r in runs.items()),
        "", "Commands (from the repository root):", "",
        *(f"    python {r['command']}" for r in runs.values()),
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="the benchmarks' files (mmlu/ inside)")
    parser.add_argument("--limit", type=int, default=20, help="test questions per subject (57 subjects)")
    parser.add_argument("--precisions", default="fp32,bf16,int8,nf4")
    parser.add_argument("--out", type=Path, default=REPO / "results" / "quantization-bench")
    args = parser.parse_args()
    args.data_dir, args.out = args.data_dir.resolve(), args.out.resolve()
    if args.out.exists() and any(args.out.rglob("summary.json")):
        sys.exit(f"{args.out} already holds runs; pass another --out")
    runs = {p: run_precision(p, args) for p in args.precisions.split(",")}
    text = report(args, runs)
    (args.out / "quantization.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
