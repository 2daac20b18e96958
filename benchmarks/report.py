"""Markdown tables of one throughput.py result (the form BENCHMARKS.md shows them in)."""

from __future__ import annotations

import json
from typing import Any


def _lm_eval_runs(workload: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    return sorted((int(k.removeprefix("lm_eval_bs")), v) for k, v in workload.items() if k.startswith("lm_eval_bs"))


def headline(result: dict[str, Any]) -> str:
    sizes = sorted({size for key in ("mc", "gen") if key in result for size, _ in _lm_eval_runs(result[key])})
    lines = [
        "| workload | this suite | " + " | ".join(f"lm-eval bs {s}" for s in sizes) + " | vs lm-eval's best | agreement with best |",
        "|---|---:|" + "---:|" * len(sizes) + "---:|---:|",
    ]
    names = {"mc": "MMLU base_5shot, {questions} questions ({prompt_tokens:,} prompt tokens)",
             "gen": "GSM8K chat_0shot, {prompts} prompts ({prompt_tokens:,} prompt tokens)"}  # fmt: skip
    for key, name in names.items():
        if key not in result:
            continue
        workload = result[key]
        runs = dict(_lm_eval_runs(workload))
        best_size = min(runs, key=lambda s: runs[s]["seconds"])
        best = runs[best_size]
        total = workload["questions"] if key == "mc" else workload["prompts"]
        cells = [f"{runs[s]['seconds']:.1f} s" if s in runs else "" for s in sizes]
        lines.append(
            f"| {name.format(**workload)} | {workload['ours']['seconds']:.1f} s | " + " | ".join(cells)
            + f" | **{best['seconds'] / workload['ours']['seconds']:.2f}x** (bs {best_size}) | {best['agreement']}/{total} |"
        )  # fmt: skip
    return "\n".join(lines)


def detail(result: dict[str, Any], key: str) -> str:
    workload = result[key]
    gen = key == "gen"
    lines = [
        "| harness | seconds | CPU seconds | load avg | agreement | " + ("generated tokens | " if gen else "")
        + "TFLOPs | GFLOP/s | of measured matmul |",
        "|---|---:|---:|---:|---:|" + ("---:|" if gen else "") + "---:|---:|---:|",
    ]  # fmt: skip
    rows = [("this suite", workload["ours"])] + [(f"lm-eval, batch {s}", r) for s, r in _lm_eval_runs(workload)]
    for name, run in rows:
        tokens = ""
        if gen:
            exact = f"{run['generated_tokens']:,} exact, " if "generated_tokens" in run else ""
            tokens = f"{exact}{run['generated_tokens_retokenized']:,} re-tokenized | "
        lines.append(
            f"| {name} | {run['seconds']:.1f} | {run['cpu_seconds']:.1f} | {run['load_average']:.1f} | {run.get('agreement', '')} | "
            f"{tokens}{run['flops'] / 1e12:.2f} | {run['flops_per_s'] / 1e9:.0f} | {100 * run['fraction_of_matmul']:.0f}% |"
        )  # fmt: skip
    return "\n".join(lines)


def decode(result: dict[str, Any]) -> str:
    step = result["gen"]["ours"].get("decode")
    if not step:
        return ""
    read = result["machine"]["read_bytes_per_s"]
    need = step["weight_bytes_per_step"] + step["kv_bytes_per_step"]
    return "\n".join([
        "| slots | steps | live per step | weights MB/step | KV MB/step | ms/step | at read bandwidth | achieved GB/s | of read bandwidth |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {step['slots']} | {step['steps']} | {step['mean_live_sequences']:.1f} | {step['weight_bytes_per_step'] / 1e6:.0f} | "
        f"{step['kv_bytes_per_step'] / 1e6:.0f} | {1e3 * step['seconds_per_step']:.1f} | {1e3 * need / read:.1f} | "
        f"{step['bytes_per_s'] / 1e9:.1f} | {100 * step['bytes_per_s'] / read:.0f}% |",
    ])  # fmt: skip


def machine(result: dict[str, Any]) -> str:
    lines = ["| when | threads | matmul GFLOP/s (mm; oneDNN packed) | copy GB/s | read GB/s | load avg |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for when in ("machine", "machine_after"):
        m = result.get(when)
        if m:
            kernels = "; ".join(f"{m[k] / 1e9:.0f}" for k in ("mm_flops_per_s", "onednn_packed_flops_per_s") if k in m)
            lines.append(
                f"| {'before' if when == 'machine' else 'after'} | {m['threads']} | {m['matmul_flops_per_s'] / 1e9:.0f} ({kernels}) | "
                f"{m['copy_bytes_per_s'] / 1e9:.1f} | {m['read_bytes_per_s'] / 1e9:.1f} | {m['load_average'][0]:.1f} |"
            )
    return "\n".join(lines)


def tables(result: dict[str, Any]) -> str:
    parts = ["## machine", machine(result), f"this suite's linear kernel: {json.dumps(result.get('linear_kernel'))}",
             "## headline", headline(result)]  # fmt: skip
    for key in ("mc", "gen"):
        if key in result:
            parts += [f"## {key}", detail(result, key)]
    if "gen" in result:
        parts += ["## decoding steps (this suite)", decode(result)]
    return "\n\n".join(p for p in parts if p)
