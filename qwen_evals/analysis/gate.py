"""The nightly gate: a candidate becomes the baseline only when its matrix is complete and nothing got worse.

    qwen-evals gate [BASELINE_DIR] CANDIDATE_DIR [--expect MATRIX.json] [--accept-missing] [--accept-partial]
                    [--accept-exam-change] [--accept-worse] [--alpha 0.05] [--summary FILE] [--json FILE]

Exit 1 (the gate fails) when
- a run is missing: an entry of `--expect` (`qwen-evals matrix`'s JSON) or, without it, a run of the
  baseline has no run in the candidate;
- a candidate run is partial (a `limit`, chosen subjects): a smoke run is no baseline;
- a candidate run asked another exam than its baseline run (another `data_fingerprint`: the data or
  the prompts changed, not only the model); such pairs are not tested;
- a checkpoint is significantly worse than the baseline (Holm-adjusted paired tests, see
  `qwen_evals.analysis.compare`), listing the samples that flipped from right to wrong;
unless the matching `--accept-...` flag says that is expected. Exit 0: the gate passes; 2: the runs
cannot be compared (no summary, different sample ids). Without BASELINE_DIR (a first night) only the
candidate's completeness is checked. `--summary` appends a markdown verdict (e.g. to $GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from qwen_evals.analysis.compare import ALPHA, ComparisonSet, format_report, pair_runs, table, test_pairs, to_json
from qwen_evals.analysis.results import identity, latest, load_runs
from qwen_evals.core import stats
from qwen_evals.core.errors import EvalError

MATRIX_FIELDS = ("task", "protocol", "split", "model", "precision")
"""What names one run of the matrix (`qwen-evals matrix` writes these)."""
ACCEPT_FLAGS = {
    "missing": ("--accept-missing", "pass despite missing runs"),
    "partial": ("--accept-partial", "pass despite partial runs"),
    "exam": ("--accept-exam-change", "pass despite runs that asked another exam (they are not tested)"),
    "worse": ("--accept-worse", "pass despite significant regressions"),
}
"""The kinds of problem the gate fails on, and the flag that lets each through."""


@dataclass(frozen=True)
class Problem:
    kind: str
    """A key of ACCEPT_FLAGS."""
    text: str


def read_expected(path: Path) -> list[dict[str, Any]]:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise EvalError(f"{path}: unreadable expected matrix ({error})") from error
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "task" in e for e in entries):
        raise EvalError(f"{path}: not an expected matrix (a JSON list of runs with {list(MATRIX_FIELDS)})")
    return entries


def _name(run: pd.Series | dict[str, Any]) -> str:
    return "/".join(str(run.get(f)) for f in MATRIX_FIELDS if run.get(f) is not None)


def not_run(candidate: pd.DataFrame, expected: list[dict[str, Any]]) -> list[Problem]:
    """Runs of the expected matrix that the candidate lacks."""
    have = {identity(run, MATRIX_FIELDS) for _, run in candidate.iterrows()}
    return [Problem("missing", f"no run of {_name(e)}") for e in expected if identity(e, MATRIX_FIELDS) not in have]


def partial_runs(candidate: pd.DataFrame) -> list[Problem]:
    return [
        Problem("partial", f"{_name(run)} is a partial run (limit={run['limit']}): {run['run_dir']}")
        for _, run in candidate[candidate["partial"].astype(bool)].iterrows()
    ]


def check(
    baseline_dir: str | None,
    candidate_dir: str,
    expected: list[dict[str, Any]] | None,
    *,
    alpha: float = ALPHA,
    n_boot: int = stats.N_BOOT,
    seed: int = stats.SEED,
    show: int = 20,
) -> tuple[list[Problem], ComparisonSet | None]:
    """Every problem of the candidate (missing, partial, another exam, worse), and the comparisons made."""
    candidate = latest(load_runs([candidate_dir]))
    problems = not_run(candidate, expected) if expected is not None else []
    problems += partial_runs(candidate)
    if baseline_dir is None:
        return problems, None
    pairs, only_baseline, _ = pair_runs(latest(load_runs([baseline_dir])), candidate)
    if expected is None:  # the baseline's runs are the expected ones
        problems += [Problem("missing", f"no run of {run} in the candidate") for run in only_baseline]
    same = [(a, b) for a, b in pairs if a["data_fingerprint"] == b["data_fingerprint"]]
    for a, b in pairs:
        if a["data_fingerprint"] != b["data_fingerprint"]:
            problems.append(Problem("exam", f"{_name(b)} asked another exam than the baseline ({b['run_dir']})"))
    result = test_pairs(same, alpha=alpha, n_boot=n_boot, seed=seed)
    for c in result.worse():
        how = "flipped right -> wrong" if c.test == "mcnemar" else "scored lower"
        ids = ", ".join(c.regressions[:show]) + (" ..." if len(c.regressions) > show else "")
        problems.append(
            Problem("worse", f"{c.name} {c.metric} {c.label_b} is worse than baseline {c.label_a}: {c.delta:+.1f} points "
                    f"(p_holm={c.p_holm:.2g}); {len(c.regressions)} samples {how}: {ids}")
        )  # fmt: skip
    return problems, result


def markdown(problems: list[Problem], failing: list[Problem], result: ComparisonSet | None, show: int) -> str:
    lines = [f"## Evaluation gate: {'FAILED' if failing else 'passed'}\n"]
    lines += [f"- **{p.kind}**{'' if p in failing else ' (accepted)'}: {p.text}" for p in problems if p.kind != "worse"]
    if result is not None and result.comparisons:
        rows = table(result)
        lines += ["", "| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
        lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows.itertuples(index=False)]
        for c in result.worse():
            ids = ", ".join(f"`{i}`" for i in c.regressions[:show])
            more = f" and {len(c.regressions) - show} more" if len(c.regressions) > show else ""
            how = "flipped right -> wrong" if c.test == "mcnemar" else "scored lower"
            lines.append(f"\n**{c.name} {c.metric}** {c.label_b} is worse than {c.label_a} by {abs(c.delta):.1f} points; "
                         f"{how}: {ids}{more}")  # fmt: skip
    return "\n".join(lines) + "\n"


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="[BASELINE_DIR] CANDIDATE_DIR")
    parser.add_argument("--expect", type=Path, help="the expected matrix (qwen-evals matrix --out FILE)")
    for kind, (flag, help_text) in ACCEPT_FLAGS.items():
        parser.add_argument(flag, dest=f"accept_{kind}", action="store_true", help=help_text)
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise error rate (Holm); default 0.05")
    parser.add_argument("--show", type=int, default=20, help="flipped sample ids to print per task")
    parser.add_argument("--summary", type=Path, help="append a markdown verdict to this file")
    parser.add_argument("--json", type=Path, help="also write the verdict and comparisons as JSON here")
    parser.add_argument("--n-boot", type=int, default=stats.N_BOOT, help="bootstrap replicates")
    parser.add_argument("--seed", type=int, default=stats.SEED, help="bootstrap seed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = arguments().parse_args(argv)
    if len(args.dirs) > 2:
        print("error: give CANDIDATE_DIR, or BASELINE_DIR CANDIDATE_DIR", file=sys.stderr)
        return 2
    baseline_dir, candidate_dir = ([None] + args.dirs)[-2:]
    accepted = {kind: getattr(args, f"accept_{kind}") for kind in ACCEPT_FLAGS}
    try:
        expected = read_expected(args.expect) if args.expect else None
        problems, result = check(
            baseline_dir, candidate_dir, expected, alpha=args.alpha, n_boot=args.n_boot, seed=args.seed, show=args.show
        )
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    failing = [p for p in problems if not accepted[p.kind]]
    if result is not None:
        print(format_report(result, args.show) + "\n")
    if args.summary:
        with args.summary.open("a", encoding="utf-8") as file:
            file.write(markdown(problems, failing, result, args.show))
    if args.json:
        verdict = {"passed": not failing, "problems": [asdict(p) for p in problems], "accepted": accepted}
        args.json.write_text(json.dumps({**verdict, **(to_json(result) if result else {})}, indent=1, default=str) + "\n")
    for problem in problems:
        print(f"{'GATE FAILED' if problem in failing else 'accepted'}: {problem.kind}: {problem.text}")
    if failing:
        return 1
    compared = len(result.comparisons) if result else 0
    print(f"GATE PASSED: complete, no partial run, same exams, nothing significantly worse ({compared} compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
