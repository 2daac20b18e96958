"""Each job of a Hydra multirun as one Ray task, on a local Ray or an existing cluster.

hydra-ray-launcher pins cloudpickle<3 and an old Ray, which current joblib and
Python versions do not install with; what a launcher needs from Ray is small
(`ray.init`, `ray.remote`, `ray.get`), so this one is written against Ray's
public API. A job runs exactly as under Hydra's basic launcher (same sweep
directories, same `JobReturn`), only in a Ray worker with the resources it asks
for: `num_gpus: 1` gives every (model, precision, task, shard) job a GPU of its
own, wherever the cluster has one free.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def run_one_job(
    index: int,
    overrides: Sequence[str],
    hydra_context: HydraContext,
    config: DictConfig,
    task_function: TaskFunction,
    singleton_state: dict[Any, Any],
) -> JobReturn:
    """One job inside a Ray worker: rebuild Hydra's global state, compose the job's config, run it."""
    setup_globals()
    Singleton.set_state(singleton_state)
    job_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(job_config):
        job_config.hydra.job.id = f"{job_config.hydra.job.name}_{index}"
        job_config.hydra.job.num = index
    HydraConfig.instance().set_config(job_config)
    try:
        return run_job(
            hydra_context=hydra_context,
            config=job_config,
            task_function=task_function,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except SystemExit as stop:  # a run's clear error exits 2: for Ray a failed task, not a crashed worker
        if not stop.code:
            raise
        raise RuntimeError(f"job #{index} ({' '.join(overrides)}) stopped with exit code {stop.code}; its error is above") from None


class RayTasksLauncher(Launcher):
    """Args:
    address: a running cluster ("auto", "ray://host:10001"); None starts a local Ray.
    num_cpus, num_gpus: what each job reserves (a job waits until a node has it free).
    init: further `ray.init` keyword arguments for a local Ray (num_cpus, object_store_memory...).
    """

    def __init__(
        self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0, init: DictConfig | None = None
    ) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.init = OmegaConf.to_container(init, resolve=True) if init is not None else {}
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import ray

        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=self.address, **({} if self.address else self.init))
        log.info(f"Ray is launching {len(job_overrides)} jobs, sweep output dir: {sweep_dir}")
        for index, overrides in enumerate(job_overrides):
            log.info(f"\t#{initial_job_idx + index} : {' '.join(filter_overrides(overrides))}")
        remote = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_retries=0)(run_one_job)
        state = Singleton.get_state()
        pending = [
            remote.remote(initial_job_idx + i, list(o), self.hydra_context, self.config, self.task_function, state)
            for i, o in enumerate(job_overrides)
        ]
        return ray.get(pending)
