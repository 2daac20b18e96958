"""Data parallelism over samples: processes of one launch, or separate jobs.

Each shard takes every `count`-th sample (strided, so subjects and lengths
spread evenly). Processes started by torchrun or accelerate launch gather their
rows on rank 0 through torch.distributed; separate jobs (Hydra multirun on
Slurm, Ray or joblib, one job per shard) leave their rows in files and the job
that completes the set merges them. Merged rows are put back in dataset order,
so the results equal a one-process run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, from the launcher's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def gather_to_rank0(rows: list[Any]) -> list[Any] | None:
    """All ranks' rows on rank 0 (flattened, rank order), None on the others.

    Uses a gloo process group: it moves Python objects between CPU processes and
    works the same on GPU and CPU machines.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(rows, gathered, dst=0)
    dist.barrier()
    if rank != 0:
        return None
    return [row for part in gathered for row in part]


class FileShards:
    """Rows of separate jobs, exchanged through `folder/<index>-of-<count>.jsonl`."""

    def __init__(self, folder: Path, index: int, count: int) -> None:
        self.folder, self.index, self.count = folder, index, count

    def gather(self, rows: list[Any]) -> list[Any] | None:
        """Store this shard's rows; all rows once every shard has finished, else None."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{self.index}-of-{self.count}.jsonl"
        partial = final.with_suffix(f".tmp{os.getpid()}")
        partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        partial.replace(final)  # a shard file exists only once complete
        paths = [self.folder / f"{i}-of-{self.count}.jsonl" for i in range(self.count)]
        if not all(p.exists() for p in paths):
            return None
        return [json.loads(line) for p in paths for line in p.read_text(encoding="utf-8").splitlines()]
