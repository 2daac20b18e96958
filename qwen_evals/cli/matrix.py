"""`qwen-evals matrix`: the runs a sweep is expected to produce, for the gate to check that none is missing.

    qwen-evals matrix [--config-name nightly] [--out FILE] [OVERRIDES ...]

Expands the config's sweep the way Hydra's basic sweeper does (`hydra.sweeper.params`,
then the command line's overrides, a later one replacing an earlier one of the same
key) and composes each job's config. Writes a JSON list, one entry per expected run,
with the identity fields its summary.json will carry: task, protocol, split, model,
precision. `qwen-evals gate --expect FILE` fails when one of them is missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.utils import get_class

from qwen_evals.cli.record import register_job_folder
from qwen_evals.core.config import register_resolvers
from qwen_evals.core.errors import EvalError

SWEEP_PARAMS = "hydra.sweeper.params."


def _values(override: Override) -> list[str]:
    return list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.get_value_element_as_str()]


def jobs(params: dict[str, str], overrides: list[Override]) -> list[list[str]]:
    """Every job's overrides: the cartesian product over the sweep's keys (Hydra's basic sweeper, which has
    no public function for it)."""
    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    for override in [*parser.parse_overrides([f"{k}={v}" for k, v in params.items()]), *overrides]:
        key = override.get_key_element()
        axes[key] = [f"{key}={value}" for value in _values(override)]
    return [list(job) for job in itertools.product(*axes.values())]


def expected_runs(config_name: str, overrides: list[str]) -> list[dict[str, Any]]:
    register_resolvers()
    register_job_folder()
    parsed = OverridesParser.create().parse_overrides(overrides)
    own = [o for o in parsed if not o.get_key_element().startswith(("hydra.", "hydra/"))]
    with initialize_config_module("qwen_evals.conf", version_base="1.3"):
        base = compose(config_name, [o.input_line for o in own if not o.is_sweep_override()], return_hydra_config=True)
        params = {str(k): str(v) for k, v in (base.hydra.sweeper.params or {}).items()}
        for override in parsed:
            if override.get_key_element().startswith(SWEEP_PARAMS):
                params[override.get_key_element()[len(SWEEP_PARAMS) :]] = ",".join(_values(override))
        runs = []
        for job in jobs(params, own):
            cfg = compose(config_name, job)
            runs.append(
                {
                    "task": get_class(cfg.task._target_).name,
                    "protocol": cfg.task.get("protocol"),
                    "split": cfg.task.get("split"),
                    "model": cfg.model.name,
                    "precision": cfg.precision.name,
                    "overrides": job,
                }
            )
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-name", default="config", help="the packaged config whose sweep to expand (nightly)")
    parser.add_argument("--out", type=Path, help="write the JSON here (default: print it)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as given to `qwen-evals run -m`")
    args = parser.parse_args(argv)
    try:
        runs = expected_runs(args.config_name, args.overrides)
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    text = json.dumps(runs, indent=1) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")
        print(f"{len(runs)} expected runs written to {args.out}")
    else:
        print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
