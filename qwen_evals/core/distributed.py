"""Data parallelism over samples: processes of one launch, or separate jobs.

Each shard takes every `count`-th sample (strided, so subjects and lengths
spread evenly). Processes started by torchrun or accelerate launch gather their
rows on rank 0 through torch.distributed; separate jobs (Hydra multirun on
Slurm, Ray or joblib, one job per shard) leave their rows in files, and one job
that finds the set complete merges them. Merged rows are put back in dataset order,
so the results equal a one-process run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from qwen_evals.core.errors import EvalError
from qwen_evals.core.fingerprint import json_sha256


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes, from the launcher's environment."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def gather_to_rank0(rows: list[Any], fingerprint: str) -> list[Any] | None:
    """All ranks' rows on rank 0 (flattened, rank order), None on the others.

    Uses a gloo process group: it moves Python objects between CPU processes and
    works the same on GPU and CPU machines. Every rank must have asked the same
    exam (equal `fingerprint`), or rank 0 refuses to merge.
    """
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object((fingerprint, rows), gathered, dst=0)
    dist.barrier()
    if rank != 0:
        return None
    differ = sorted(r for r, (theirs, _) in enumerate(gathered) if theirs != fingerprint)
    if differ:
        raise EvalError(f"ranks {differ} asked a different exam than rank 0 (other data or settings); nothing merged")
    return [row for _, part in gathered for row in part]


class FileShards:
    """Rows of separate jobs, exchanged through `folder/<index>-of-<count>.jsonl`.

    A shard file's first line says which run wrote it (`run_id`) and what it
    computed (`fingerprint`: the run's settings, code and model, and the exam it
    asked). Only files with this job's fingerprint are merged; files left in the
    folder by an earlier run of other settings are stale and ignored (the job of
    that index replaces them).

    Jobs that finish together can each find the set complete; only the one
    that claims it first (an exclusive create, atomic on local and network
    filesystems alike) merges, so one summary is written, not two racing.
    """

    def __init__(self, folder: Path, index: int, count: int, run_id: str, setup: str) -> None:
        self.folder, self.index, self.count = folder, index, count
        self.run_id, self.setup = run_id, setup
        self.merged: list[dict[str, Any]] = []
        """Which run wrote each merged shard, once the set is complete (for the run record)."""

    def gather(self, rows: list[Any], fingerprint: str) -> list[Any] | None:
        """Store this shard's rows; all rows to the one job that claims the complete set, else None."""
        key = json_sha256([self.setup, fingerprint])
        self.folder.mkdir(parents=True, exist_ok=True)
        header = {"run_id": self.run_id, "fingerprint": key, "index": self.index, "count": self.count}
        final = self.folder / f"{self.index}-of-{self.count}.jsonl"
        partial = final.with_suffix(f".tmp{os.getpid()}")
        lines = [header, *rows]
        partial.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in lines), encoding="utf-8")
        partial.replace(final)  # a shard file exists only once complete
        shards = [self._read(self.folder / f"{i}-of-{self.count}.jsonl", key) for i in range(self.count)]
        if any(shard is None for shard in shards) or not self._claim([head["run_id"] for head, _ in shards]):
            return None
        self.merged = [{"index": i, "run_id": head["run_id"]} for i, (head, _) in enumerate(shards)]
        return [row for _, part in shards for row in part]

    def _claim(self, run_ids: list[str]) -> bool:
        """True for the first job to claim this set of shard files (a re-run shard makes a new set)."""
        claim = self.folder / f".merge-{json_sha256(run_ids)[:16]}"
        try:
            os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
        return True

    @staticmethod
    def _read(path: Path, key: str) -> tuple[dict[str, Any], list[Any]] | None:
        """(header, rows) of a finished shard of this run; None when missing or stale."""
        if not path.exists():
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0]) if lines else {}
        if not isinstance(header, dict) or header.get("fingerprint") != key:
            return None
        return header, [json.loads(line) for line in lines[1:]]
