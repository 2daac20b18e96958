"""`qwen-evals run` (and `python run_eval.py`): evaluate a model on a benchmark.

Hydra composes qwen_evals/conf/config.yaml with one file from each group
(model, precision, task); any field can be overridden on the command line, and
`-m` sweeps. The configs ship inside the package (`pkg://qwen_evals.conf`), so
the command works from any directory.

Before any work the arguments are checked (`cli/checks.py`) and a folder that
holds a finished run is refused; the run then records what exactly ran
(`core/run_record.py`) in summary.json.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from qwen_evals.backends.resumable import ResumableBackend
from qwen_evals.cli.checks import RECORD_ONLY_KEYS, check_arguments, check_hub
from qwen_evals.cli.record import hardware, register_job_folder, setup_fingerprint
from qwen_evals.core.config import register_resolvers
from qwen_evals.core.data_sources import recording
from qwen_evals.core.distributed import FileShards, rank_and_world
from qwen_evals.core.errors import EvalError
from qwen_evals.core.fingerprint import json_sha256
from qwen_evals.core.record import SUMMARY_FILE
from qwen_evals.core.run_record import RunContext, refuse_finished
from qwen_evals.core.runner import evaluate
from qwen_evals.core.store import RequestStore

register_resolvers()
register_job_folder()


def seed_everything(seed: int) -> None:
    import numpy
    import torch

    random.seed(seed)
    numpy.random.seed(seed)
    torch.manual_seed(seed)


def split_model_config(model: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the backend's constructor arguments, the record-only keys `label` and `step`)."""
    node = OmegaConf.to_container(model, resolve=True)
    return {k: v for k, v in node.items() if k not in RECORD_ONLY_KEYS}, {k: node.get(k) for k in RECORD_ONLY_KEYS}


def build_backend(model: DictConfig, precision: DictConfig) -> Any:
    """The configured backend; the precision node is built by Hydra's recursive instantiation
    (a dataclass instance passed as a keyword would be turned back into a config node)."""
    arguments, _ = split_model_config(model)
    return instantiate(OmegaConf.create(arguments), precision=precision)


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The composed config with every interpolation resolved; a resolver's EvalError stays one.

    OmegaConf keeps only the message of an error raised inside a resolver (the
    exception itself is not chained), so the EvalError is rebuilt from it.
    """
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError as error:
        prefix = f"{EvalError.__name__} raised while resolving interpolation: "
        message = str(error).split("\n")[0]
        if message.startswith(prefix):
            raise EvalError(message[len(prefix):]) from error
        raise


def run(cfg: DictConfig) -> dict | None:
    config_name = HydraConfig.get().job.config_name if HydraConfig.initialized() else "config"
    check_arguments(cfg, config_name)
    out_dir = Path(cfg.output_dir)
    sharded = cfg.shard.count > 1
    rank, world = rank_and_world()
    if sharded or rank == 0:  # the processes that write into out_dir
        refuse_finished(out_dir, SUMMARY_FILE)
    config = resolved(cfg)
    arguments, record_only = split_model_config(cfg.model)
    context = RunContext(label=record_only["label"], step=record_only["step"], setup=setup_fingerprint(config))
    seed_everything(cfg.seed)
    with recording() as sources:
        task = instantiate(cfg.task)
        check_hub(task, arguments)
        backend = build_backend(cfg.model, cfg.precision)
        context.hardware = hardware()
        if cfg.resume:
            backend = ResumableBackend(backend, RequestStore(Path(cfg.resume_dir)), chunk_size=cfg.resume_chunk)
        if sharded:  # one job of a sharded sweep: the job that completes the set writes
            shards = FileShards(
                out_dir / "shards", cfg.shard.index, cfg.shard.count, context.id, json_sha256([context.setup, backend.identity()])
            )
            report = evaluate(task, backend, limit=cfg.limit, canary=cfg.canary, canary_share=cfg.canary_share, shard=(cfg.shard.index, cfg.shard.count), gather=shards.gather)
            context.shards = shards.merged
        else:  # one process, or torchrun / accelerate launch ranks gathered on rank 0
            report = evaluate(task, backend, limit=cfg.limit, canary=cfg.canary, canary_share=cfg.canary_share, shard=(rank, world))
    if report is None:
        print(f"shard done (run {context.id}); another process writes {out_dir}")
        return None
    context.data = sources.to_record(cfg.data_dir)
    summary = report.save(out_dir, config, context)
    print(report.table().to_string(float_format=lambda v: f"{v:.4f}"))
    drift = summary.get("batch_invariance")
    if drift and drift["drifted"]:
        print(f"\nbatch invariance: {len(drift['drifted'])} of {drift['n']} canary samples change at batch size 1: {drift['drifted']}")
    partial = " (partial: " + ", ".join(_partial_reasons(summary["run"])) + ")" if summary["run"]["partial"] else ""
    print(f"\nrun {context.id}{partial}\nresults: {out_dir}")
    return summary


def _partial_reasons(run: dict[str, Any]) -> list[str]:
    reasons = [f"limit={run['limit']}"] if run["limit"] is not None else []
    return reasons + [f"{key}={value}" for key, value in run["restrictions"].items()]


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
