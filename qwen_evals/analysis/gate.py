"""The nightly gate: fail only when a checkpoint is significantly worse than the baseline.

    python -m qwen_evals.analysis.gate BASELINE_DIR CANDIDATE_DIR [--alpha 0.05] [--summary FILE] [--json FILE]

Runs `qwen_evals.analysis.compare` with the baseline as A and the candidate as B and exits
- 0 when no task is significantly worse (ties and improvements pass),
- 1 when at least one is (Holm-adjusted paired test), listing the samples that
  flipped from right to wrong,
- 2 when the runs cannot be compared (no matching runs, different sample ids).
Runs present on one side only are reported, not failed: a missing run means the
evaluation itself failed, which its own CI step reports.
`--summary` appends a markdown verdict (e.g. to $GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qwen_evals.analysis.compare import ComparisonSet, arguments, run_cli, table
from qwen_evals.core.errors import EvalError


def markdown(result: ComparisonSet, show: int) -> str:
    worse = result.worse()
    head = f"## Evaluation gate: {'FAILED' if worse else 'passed'}\n\n"
    rows = table(result)
    lines = ["| " + " | ".join(rows.columns) + " |", "|" + "---|" * len(rows.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows.itertuples(index=False)]
    body = "\n".join(lines) + "\n"
    for c in worse:
        ids = ", ".join(f"`{i}`" for i in c.regressions[:show])
        more = f" and {len(c.regressions) - show} more" if len(c.regressions) > show else ""
        how = "flipped right -> wrong" if c.test == "mcnemar" else "scored lower"
        body += (
            f"\n**{c.name} {c.metric}** {c.label_b} is worse than {c.label_a} by {abs(c.delta):.1f} points; {how}: {ids}{more}\n"
        )
    return head + body


def main(argv: list[str] | None = None) -> int:
    parser = arguments(__doc__.splitlines()[0], "BASELINE_DIR", "CANDIDATE_DIR")
    parser.add_argument("--summary", type=Path, help="append a markdown verdict to this file")
    args = parser.parse_args(argv)
    try:
        result = run_cli(args, args.baseline_dir, args.candidate_dir)
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.summary:
        with args.summary.open("a", encoding="utf-8") as file:
            file.write(markdown(result, args.show))
    worse = result.worse()
    print()
    if not worse:
        print(f"GATE PASSED: no task significantly worse than the baseline ({len(result.comparisons)} compared)")
        return 0
    for c in worse:
        how = "flipped right -> wrong" if c.test == "mcnemar" else "scored lower"
        ids = ", ".join(c.regressions[: args.show]) + (" ..." if len(c.regressions) > args.show else "")
        print(
            f"GATE FAILED: {c.name} {c.metric} {c.label_b} is worse than baseline {c.label_a}: {c.delta:+.1f} points "
            f"(p_holm={c.p_holm:.2g}); {len(c.regressions)} samples {how}: {ids}"
        )
    return 1


if __name__ == "__main__":
    sys.exit(main())
