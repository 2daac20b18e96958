"""evaluate(): every request of a task, one batched backend call per request kind."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pandas as pd

from qwen_evals.core.backend import Backend
from qwen_evals.core.distributed import gather_to_rank0
from qwen_evals.core.errors import EvalError
from qwen_evals.core.record import plain
from qwen_evals.core.report import Report
from qwen_evals.core.task import Task
from qwen_evals.core.types import Generate, LogLikelihood, LogLikelihoodResult, Output, Request


def evaluate(
    task: Task,
    backend: Backend,
    *,
    limit: int | None = None,
    canary: int = 0,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[list[Any]], list[Any] | None] = gather_to_rank0,
) -> Report | None:
    """Load, request, score and summarize one task on one backend.

    `canary` > 0 re-runs the first `canary` samples one request at a time and
    reports any sample whose result changed: batching, padding and sorting must
    never change an answer, and this is how a run shows that they did not.
    `shard=(index, count)` with count > 1 runs this process's share of the
    samples; `gather` collects every share's rows (see qwen_evals.core.distributed) and
    the process that gets them returns the report, the others None.
    """
    start = time.perf_counter()
    model = backend.model_tokenizer()
    if model is not None:  # tasks that count tokens (VCSUM truncation, ReAct Rouge-L) get the model's tokenizer
        task.bind_model(model)
    samples = task.load(limit)
    if not samples:
        raise EvalError(f"{task.name}: no samples to evaluate")
    per_sample = [task.requests(s) for s in samples]
    rank, world = shard
    mine = list(range(rank, len(samples), world))
    outputs = _run_all(backend, [per_sample[i] for i in mine])
    scored = task.score_all([samples[i] for i in mine], outputs)
    rows = [{"id": samples[i].id, "prompt": _prompt_record(per_sample[i]), **row} for i, row in zip(mine, scored)]
    if world > 1:
        gathered = gather(plain([(i, row) for i, row in zip(mine, rows)]))
        if gathered is None:
            return None
        rows = [row for _, row in sorted(gathered, key=lambda pair: pair[0])]
    records = pd.DataFrame(rows)
    canary_check = None
    if canary > 0:
        chosen = mine[:canary]
        canary_check = _batch_invariance(
            task, backend, [samples[i] for i in chosen], [per_sample[i] for i in chosen], outputs[: len(chosen)]
        )
    return Report(
        task=task,
        backend=backend,
        records=records,
        wall_seconds=time.perf_counter() - start,
        data_fingerprint=_fingerprint(samples, per_sample),
        batch_invariance=canary_check,
    )


def _run_all(backend: Backend, per_sample: list[list[Request]]) -> list[list[Output]]:
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
        alone = _run_all(backend, per_sample)
    drifted, max_diff = [], 0.0
    for sample, batched, single in zip(samples, outputs, alone):
        first, second = task.score(sample, batched), task.score(sample, single)
        if first.get("prediction", first.get("output")) != second.get("prediction", second.get("output")):
            drifted.append(sample.id)
        for a, b in zip(batched, single):
            if isinstance(a, LogLikelihoodResult):
                max_diff = max(max_diff, abs(a.logprob - b.logprob))
    return {"n": len(samples), "drifted": drifted, "max_logprob_diff": max_diff}


def _prompt_record(requests: list[Request]) -> Any:
    """The prompt once when all requests of a sample share it (multiple choice), else each."""
    prompts = [r.prompt for r in requests]
    return prompts[0] if all(p == prompts[0] for p in prompts) else prompts


def _fingerprint(samples: list, per_sample: list[list[Request]]) -> str:
    """sha256 over ids, targets and requests: equal fingerprints mean the same exam was asked."""
    digest = hashlib.sha256()
    for sample, requests in zip(samples, per_sample):
        digest.update(json.dumps([sample.id, sample.target, [repr(r) for r in requests]], ensure_ascii=False).encode())
    return digest.hexdigest()
