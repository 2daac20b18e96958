"""Checks of a run's arguments, made before any work: a wrong argument fails in a second, not after a model load.

- every top-level key is one the config declares (`+limt=1`, a typo, is refused with "did you mean");
- `limit`, `canary`, `shard`, `resume_chunk`, `model.step` hold numbers that make sense;
- offline, every hub resource the run needs (model and datasets) is named in one message;
- the model's own checks that need no weights (a non-Qwen-v1 folder on a converting preset).
"""

from __future__ import annotations

import difflib
from importlib import resources
from typing import Any

import yaml
from hydra.utils import get_class
from omegaconf import DictConfig

from qwen_evals.core.errors import EvalError
from qwen_evals.core.hub import HubResource, require_hub_resources
from qwen_evals.core.runner import check_limit
from qwen_evals.core.task import Task

RECORD_ONLY_KEYS = ("label", "step")
"""model.* keys the run record takes (the checkpoint's name and training step); the backend never sees them."""


def declared_keys(config_name: str) -> set[str] | None:
    """Top-level keys the packaged config `config_name` declares, with the configs it extends (None: not packaged)."""
    root = resources.files("qwen_evals.conf")
    keys: set[str] = set()
    pending = [config_name]
    while pending:
        source = root / f"{pending.pop()}.yaml"
        if not source.is_file():
            return None
        raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        for entry in raw.get("defaults") or []:
            if isinstance(entry, str) and entry != "_self_":
                pending.append(entry)  # a config this one extends
            elif isinstance(entry, dict):
                keys.update(group for group in entry if "/" not in group)  # a group: model, precision, task
        keys.update(key for key in raw if key not in ("defaults", "hydra"))
    return keys


def check_keys(cfg: DictConfig, config_name: str) -> None:
    known = declared_keys(config_name)
    if known is None:
        return  # a user's own config: its keys are its own
    for key in sorted(set(cfg) - known):
        guess = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else f"; the keys are {', '.join(sorted(known))}"
        raise EvalError(f"unknown key {key!r} (from +{key}=...){hint}")


def _whole(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise EvalError(f"{name}={value!r}: give a whole number >= {minimum}")
    return value


def check_values(cfg: DictConfig) -> None:
    check_limit(cfg.limit)
    _whole(cfg.canary, "canary", 0)
    share = cfg.canary_share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
        raise EvalError(f"canary_share={share!r} must be a number above 0 and at most 1")
    _whole(cfg.resume_chunk, "resume_chunk", 1)
    count = _whole(cfg.shard.count, "shard.count", 1)
    index = _whole(cfg.shard.index, "shard.index", 0)
    if index >= count:
        raise EvalError(f"shard.index={index} must be below shard.count={count}")
    if cfg.model.get("step") is not None:
        _whole(cfg.model.step, "model.step", 0)


def check_arguments(cfg: DictConfig, config_name: str) -> None:
    check_keys(cfg, config_name)
    check_values(cfg)


def model_hub_resources(model: dict[str, Any]) -> list[HubResource]:
    """The backend's own checks that need no model (`preflight`), and what loading it would fetch."""
    backend_class = get_class(model["_target_"])
    preflight = getattr(backend_class, "preflight", None)
    if preflight is None:
        return []
    return preflight(**{k: v for k, v in model.items() if k != "_target_"})


def check_hub(task: Task, model: dict[str, Any]) -> None:
    """Offline, one error naming every hub resource the run needs."""
    require_hub_resources([*model_hub_resources(model), *task.hub_resources()])
