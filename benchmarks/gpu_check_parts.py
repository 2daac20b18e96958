"""Workloads, comparisons and machine bounds of benchmarks/gpu_check.py (importable, so tests can check them)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
import torch

from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult

LETTERS = "ABCD"
TOPICS = ["arithmetic", "geography", "astronomy", "chemistry", "history", "music", "biology", "law"]
FILLER = "Read the question carefully, then choose the one option that answers it best".split()


@dataclass(frozen=True)
class Question:
    """A multiple-choice question as `base_5shot` asks it: a subject's shared few-shot prefix, then its own text."""

    prefix: str
    suffix: str

    @property
    def requests(self) -> list[LogLikelihood]:
        return [LogLikelihood(self.prefix + self.suffix, f" {letter}") for letter in LETTERS]


def _item(rng: random.Random, filler: int) -> tuple[str, str]:
    a, b = rng.randrange(2, 90), rng.randrange(2, 90)
    options = rng.sample([a + b, a + b + 1, a + b - 1, a + b + 10], 4)
    note = " ".join(FILLER[i % len(FILLER)] for i in range(filler))
    text = f"Question: {note + ' ' if note else ''}What is {a} + {b}?\n" + "".join(
        f"{letter}. {option}\n" for letter, option in zip(LETTERS, options)
    )
    return text + "Answer:", LETTERS[options.index(a + b)]


def mc_questions(subjects: int, per_subject: int, seed: int = 0) -> list[Question]:
    """Questions of `subjects` subjects, each with its 5-shot prefix; question lengths vary, so batches are padded."""
    rng = random.Random(seed)
    questions = []
    for s in range(subjects):
        shots = "".join(f"{text} {answer}\n\n" for text, answer in (_item(rng, rng.randrange(0, 12)) for _ in range(5)))
        prefix = f"The following are multiple choice questions (with answers) about {TOPICS[s % len(TOPICS)]}.\n\n{shots}"
        questions += [Question(prefix, _item(rng, rng.randrange(0, 40))[0]) for _ in range(per_subject)]
    return questions


def gen_requests(n: int, max_new_tokens: int) -> list[Generate]:
    """Greedy requests of different lengths, chat and plain text alternating (so rows are padded)."""
    requests = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        words = " ".join(FILLER[: (i * 5) % len(FILLER)])
        if i % 2:
            requests.append(Generate([{"role": "user", "content": f"{words} Tell me about {topic}."}], max_new_tokens))
        else:
            requests.append(Generate(f"{words}\nA short essay on {topic}:\n", max_new_tokens))
    return requests


def compare_mc(reference: list[LogLikelihoodResult], candidate: list[LogLikelihoodResult], max_diff: float) -> tuple[str, str, float]:
    """(status, summary, near-tie margin) of two runs of the same 4-option questions.

    The near-tie margin is twice the 95th percentile of the log-prob
    differences between the runs (their numerical noise). A changed answer is a
    disagreement unless the reference's margin between its answer and the
    candidate's is within it; the largest difference must stay within `max_diff`.
    """
    ref = np.array([r.logprob for r in reference]).reshape(-1, len(LETTERS))
    cand = np.array([r.logprob for r in candidate]).reshape(-1, len(LETTERS))
    differences = np.abs(ref - cand)
    tie, largest = 2 * float(np.quantile(differences, 0.95)), float(differences.max())
    ref_answer, cand_answer = ref.argmax(1), cand.argmax(1)
    rows = np.arange(len(ref))
    margin = ref[rows, ref_answer] - ref[rows, cand_answer]
    changed = ref_answer != cand_answer
    real = changed & (margin > tie)
    status = "FAIL" if real.any() or largest > max_diff else "ok"
    summary = (f"{int((~changed).sum())}/{len(ref)} same answers, {int((changed & ~real).sum())} near-ties "
               f"(margin <= {tie:.2g}); max |d log p| {largest:.2g} (bound {max_diff:g})")  # fmt: skip
    if real.any():
        summary += f"; differ: questions {rows[real].tolist()}"
    return status, summary, tie


def compare_generations(reference, requests: list[Generate], ref: list[Generation], cand: list[Generation], tie: float) -> tuple[str, str]:
    """(status, summary): identical greedy texts, or a first differing token that is a near-tie for the reference model."""
    same, ties, real = 0, 0, []
    for i, (request, a, b) in enumerate(zip(requests, ref, cand)):
        if a.text == b.text:
            same += 1
        elif divergence_gap(reference, request, a.text, b.text) <= tie:
            ties += 1
        else:
            real.append(i)
    summary = f"{same}/{len(requests)} identical, {ties} part at a near-tie (gap <= {tie:.2g})"
    return ("FAIL", f"{summary}; differ: prompts {real}") if real else ("ok", summary)


@torch.inference_mode()
def divergence_gap(backend, request: Generate, ref_text: str, cand_text: str) -> float:
    """The reference model's log-prob of its own next token minus the other's, where two greedy outputs part."""
    tokenizer = backend.tokenizer
    a = tokenizer.encode(ref_text, add_special_tokens=False)
    b = tokenizer.encode(cand_text, add_special_tokens=False)
    k = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    mine, theirs = (a[k] if k < len(a) else tokenizer.eos_token_id), (b[k] if k < len(b) else tokenizer.eos_token_id)
    if mine == theirs:  # the texts differ only in how their tokens decode
        return 0.0
    ids = torch.tensor([backend.encode(request.prompt) + a[:k]], device=next(backend.model.parameters()).device)
    logprobs = torch.log_softmax(backend.model(ids).logits[0, -1].float(), dim=-1)
    return float(logprobs[mine] - logprobs[theirs])


def mc_flops(backend, questions: list[Question]) -> float:
    """FLOPs the MC workload needs with each subject's prefix encoded once.

    Linear layers: 2 x non-embedding parameters per token computed; attention:
    4 x hidden size per (query, key) pair per layer (scores and weighted sum);
    the LM head: 2 x hidden x vocabulary at the one position read per question.
    """
    config = backend.model.config
    hidden, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    linear = sum(p.numel() for n, p in backend.model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n)
    lengths: dict[str, int] = {}
    tokens = pairs = 0
    for q in questions:
        if q.prefix not in lengths:
            lengths[q.prefix] = p = len(backend.encode(q.prefix))
            tokens, pairs = tokens + p, pairs + p * (p + 1) // 2
        p = lengths[q.prefix]
        s = len(backend.encode(q.prefix + q.suffix)) - p
        tokens, pairs = tokens + s, pairs + s * p + s * (s + 1) // 2
    return 2 * linear * tokens + 4 * hidden * layers * pairs + 2 * hidden * vocab * len(questions)


def _timed(step, device: str, min_seconds: float) -> float:
    """Seconds per call of `step` (after a warm-up), over at least `min_seconds`."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    step()
    sync()
    calls, start = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - start < min_seconds:
        step()
        calls += 1
        sync()
    return (time.perf_counter() - start) / calls


def measured_matmul_rate(device: str, dtype: torch.dtype) -> float:
    """Dense matmul FLOP/s on this device in this dtype (8192-square on a GPU, 1024-square on a CPU)."""
    n = 8192 if device == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    return 2 * n**3 / _timed(lambda: torch.mm(a, b, out=out), device, 1.0)


def measured_bandwidth(device: str) -> float:
    """Bytes/s of a large copy (read + written) on this device."""
    size = 2**30 if device == "cuda" else 2**27
    source = torch.ones(size // 4, device=device)
    target = torch.empty_like(source)
    return 2 * size / _timed(lambda: target.copy_(source), device, 1.0)
