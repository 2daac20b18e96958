"""`qwen-evals run` (and `python run_eval.py`): evaluate a model on a benchmark.

Hydra composes qwen_evals/conf/config.yaml with one file from each group
(model, precision, task); any field can be overridden on the command line, and
`-m` sweeps. The configs ship inside the package (`pkg://qwen_evals.conf`), so
the command works from any directory.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.core.config import register_resolvers
from qwen_evals.core.distributed import FileShards, rank_and_world
from qwen_evals.core.errors import EvalError
from qwen_evals.core.runner import evaluate
from qwen_evals.core.store import RequestStore

register_resolvers()


def seed_everything(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def run(cfg: DictConfig) -> dict | None:
    seed_everything(cfg.seed)
    task = instantiate(cfg.task)
    # The precision node is built by Hydra's recursive instantiation: a dataclass
    # instance passed as a keyword would be turned back into a config node.
    backend = instantiate(cfg.model, precision=cfg.precision)
    if cfg.resume:
        backend = ResumableBackend(backend, RequestStore(Path(cfg.resume_dir)), chunk_size=cfg.resume_chunk)
    out_dir = Path(cfg.output_dir)
    if cfg.shard.count > 1:  # one job of a sharded sweep: the job that completes the set writes
        shards = FileShards(out_dir / "shards", cfg.shard.index, cfg.shard.count)
        report = evaluate(task, backend, limit=cfg.limit, canary=cfg.canary, shard=(cfg.shard.index, cfg.shard.count), gather=shards.gather)
    else:  # one process, or torchrun / accelerate launch ranks gathered on rank 0
        report = evaluate(task, backend, limit=cfg.limit, canary=cfg.canary, shard=rank_and_world())
    if report is None:
        print(f"shard done; another process writes {out_dir}")
        return None
    summary = report.save(out_dir, OmegaConf.to_container(cfg, resolve=True))
    print(report.table().to_string(float_format=lambda v: f"{v:.4f}"))
    drift = summary.get("batch_invariance")
    if drift and drift["drifted"]:
        print(f"\nbatch invariance: {len(drift['drifted'])} of {drift['n']} canary samples change at batch size 1: {drift['drifted']}")
    print(f"\nresults: {out_dir}")
    return summary


@hydra.main(version_base="1.3", config_path="pkg://qwen_evals.conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except Exception as error:
        # Hydra wraps errors raised while instantiating; show the user's problem, not the stack.
        cause = error if isinstance(error, EvalError) else error.__cause__ or error.__context__
        if not isinstance(cause, EvalError):
            raise
        print(f"error: {cause}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
