"""evaluate(): every request of a task, one batched backend call per request kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from qwen_evals.core.backend import Backend
from qwen_evals.core.distributed import gather_to_rank0
from qwen_evals.core.errors import EvalError
from qwen_evals.core.record import plain
from qwen_evals.core.report import Report
from qwen_evals.core.request_fingerprints import generation_settings, request_fingerprints
from qwen_evals.core.task import Task
from qwen_evals.core.types import Generate, Generation, LogLikelihood, LogLikelihoodResult, Output, Request

GENERATION_FACTS = {
    "finish_reason": "finish_reason",
    "stopped_at": "stop",
    "prompt_tokens": "prompt_tokens",
    "generated_tokens": "generated_tokens",
    "prompt_truncated": "prompt_truncated",
    "rendered_prompt": "rendered_prompt",
    "batch_seconds": "batch_seconds",
}
"""samples.jsonl column -> `Generation` field, recorded for every generated sample."""


def check_limit(limit: Any) -> None:
    """`limit` is a positive whole number of samples (per subject for the exams), or None for all."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise EvalError(f"limit={limit!r}: give a positive whole number of samples (per subject), or null for all")


def evaluate(
    task: Task,
    backend: Backend,
    *,
    limit: int | None = None,
    canary: int = 0,
    canary_share: float = 1.0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[list[Any], str], list[Any] | None] = gather_to_rank0,
) -> Report | None:
    """Load, request, score and summarize one task on one backend.

    `canary` > 0 re-runs the first `canary` samples one request at a time and
    reports any sample whose result changed: batching, padding and sorting must
    never change an answer, and this is how a run shows that they did not.
    At most `canary_share` of this process's samples (at least one) are re-run,
    so the check stays a small part of a small run.
    `shard=(index, count)` with count > 1 runs this process's share of the
    samples; `gather(rows, exam fingerprint)` collects every share's rows (see
    qwen_evals.core.distributed) and the process that gets them returns the
    report, the others None.
    """
    check_limit(limit)
    start = time.perf_counter()
    model = backend.model_tokenizer()
    if model is not None:  # tasks that count tokens (VCSUM truncation, ReAct Rouge-L) get the model's tokenizer
        task.bind_model(model)
    samples = task.load(limit)
    if not samples:
        raise EvalError(f"{task.name}: no samples to evaluate")
    per_sample = [task.requests(s) for s in samples]
    fingerprints = request_fingerprints(samples, per_sample)
    rank, world = shard
    mine = list(range(rank, len(samples), world))
    results = _run_all(backend, [per_sample[i] for i in mine])
    outputs = [_task_outputs(r) for r in results]
    scored = task.score_all([samples[i] for i in mine], outputs)
    rows = [
        {"id": samples[i].id, "prompt": _prompt_record(per_sample[i]), **row, **_facts(result)}
        for i, row, result in zip(mine, scored, results)
    ]
    if world > 1:
        gathered = gather(plain([(i, row) for i, row in zip(mine, rows)]), fingerprints["exam"])
        if gathered is None:
            return None
        rows = [row for _, row in sorted(gathered, key=lambda pair: pair[0])]
    records = pd.DataFrame(rows)
    canary_check = None
    if canary > 0:
        chosen = mine[: canary_size(canary, canary_share, len(mine))]
        canary_check = _batch_invariance(
            task, backend, [samples[i] for i in chosen], [per_sample[i] for i in chosen], outputs[: len(chosen)]
        )
    return Report(
        task=task,
        backend=backend,
        records=records,
        wall_seconds=time.perf_counter() - start,
        fingerprints=fingerprints,
        generation=generation_settings(per_sample),
        limit=limit,
        batch_invariance=canary_check,
    )


def canary_size(most: int, share: float, samples: int) -> int:
    """Samples the canary re-runs: at most `most`, and at most `share` of the run's `samples` but at least one."""
    return min(most, max(1, int(share * samples)))


def _run_all(backend: Backend, per_sample: list[list[Request]]) -> list[list[Generation | LogLikelihoodResult]]:
    """Flatten, call the backend once per request kind, and regroup by sample."""
    flat = [(i, j, r) for i, reqs in enumerate(per_sample) for j, r in enumerate(reqs)]
    results: list[list[Any]] = [[None] * len(reqs) for reqs in per_sample]
    for kind, method in ((LogLikelihood, backend.loglikelihood), (Generate, backend.generate)):
        chosen = [(i, j, r) for i, j, r in flat if isinstance(r, kind)]
        if not chosen:
            continue
        answers = method([r for _, _, r in chosen])
        if len(answers) != len(chosen):
            raise RuntimeError(f"backend returned {len(answers)} results for {len(chosen)} requests")
        for (i, j, _), answer in zip(chosen, answers):
            results[i][j] = answer
    return results


def _batch_invariance(task: Task, backend: Backend, samples: list, per_sample: list, outputs: list) -> dict[str, Any]:
    """Scores of the canary samples at batch size 1 against the production run."""
    with backend.one_at_a_time():
        alone = [_task_outputs(r) for r in _run_all(backend, per_sample)]
    drifted, max_diff = [], 0.0
    for sample, batched, single in zip(samples, outputs, alone):
        first, second = task.score(sample, batched), task.score(sample, single)
        if first.get("prediction", first.get("output")) != second.get("prediction", second.get("output")):
            drifted.append(sample.id)
        for a, b in zip(batched, single):
            if isinstance(a, LogLikelihoodResult):
                max_diff = max(max_diff, abs(a.logprob - b.logprob))
    return {"n": len(samples), "drifted": drifted, "max_logprob_diff": max_diff}


def _task_outputs(results: list[Any]) -> list[Output]:
    """What a task scores: the reply's text, or the log-likelihood result."""
    return [r.text if isinstance(r, Generation) else r for r in results]


def _facts(results: list[Any]) -> dict[str, Any]:
    """How a sample's outputs were produced, for its row: one value per fact, or a list for several requests."""
    generations = [r for r in results if isinstance(r, Generation)]
    if generations:
        facts = {column: [getattr(g, field) for g in generations] for column, field in GENERATION_FACTS.items()}
        return {k: v[0] if len(v) == 1 else v for k, v in facts.items()}
    return {"prompt_tokens": results[0].context_tokens}  # log-likelihoods of one sample share their context


def _prompt_record(requests: list[Request]) -> Any:
    """The prompt once when all requests of a sample share it (multiple choice), else each."""
    prompts = [r.prompt for r in requests]
    return prompts[0] if all(p == prompts[0] for p in prompts) else prompts
