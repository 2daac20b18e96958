"""Collect runs into the card's tables: leaderboard, quantization, card parity, and an HTML page.

    python -m qwen_evals.analysis.leaderboard [RESULTS_DIR ...] [--out DIR] [--card FILE] [--tolerance 1.0]

Every summary.json under the given folders (default `results/`) becomes one row
of a DataFrame (`qwen_evals.analysis.results.load_runs`); the latest run of each identity
fills the tables. Written to `--out` (default `<first RESULTS_DIR>/leaderboard`):

- `leaderboard.md` / `.csv`: models as rows, tasks as columns (each task's main
  metric, in points, ± the 95% CI half-width), with the card's own row;
- `quantization.csv`: score, weights and peak memory, tokens/s per precision,
  delta and a paired test against the highest precision run, next to the
  card's precision table;
- `card_parity.csv`: each run's delta to the card number, its CI, and whether it
  lies within the tolerance;
- `categories.csv`: per-category scores (C-Eval, MMLU);
- `runs.csv`: every run found, flat;
- `index.html` + `samples/*.html`: the self-contained report (`qwen_evals.analysis.html_report`).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from qwen_evals.analysis.card import DEFAULT_CARD, Card, load_card, parity
from qwen_evals.analysis.html_report import write_report
from qwen_evals.analysis.results import load_runs
from qwen_evals.analysis.tables import categories, leaderboard, markdown_table, quantization
from qwen_evals.core.errors import EvalError


def flat_runs(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.drop(columns=["metrics", "tables", "summary", "metric_spec", "compared_metrics"])


def write(runs: pd.DataFrame, out: Path, card: Card | None, tolerance: float | None, html: bool = True) -> dict:
    """Write every table (and the HTML report); returns the frames by name."""
    out.mkdir(parents=True, exist_ok=True)
    numeric, display = leaderboard(runs, card)
    frames = {
        "leaderboard": numeric,
        "quantization": quantization(runs, card),
        "card_parity": parity(runs, card, tolerance) if card else pd.DataFrame(),
        "categories": categories(runs),
        "runs": flat_runs(runs),
    }
    for name, frame in frames.items():
        frame.to_csv(out / f"{name}.csv", index=False)
    frames["display"] = display
    (out / "leaderboard.md").write_text(markdown(frames, card, tolerance), encoding="utf-8")
    if html:
        write_report(out, runs, frames, card)
    return frames


def markdown(frames: dict, card: Card | None, tolerance: float | None) -> str:
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts = [
        (
            f"# Leaderboard\n\n{len(frames['runs'])} runs, generated {stamp}. Scores in points; "
            "± is the half-width of the 95% bootstrap confidence interval.\n"
        ),
        markdown_table(frames["display"]),
        (
            "\n## Quantization\n\nDelta and p (paired test) against the `reference` run, the highest precision of "
            "each model and task. Memory in GiB: on cuda the tensors allocated, on cpu the process's resident set.\n"
        ),
        markdown_table(frames["quantization"].drop(columns="run_dir", errors="ignore")),
    ]
    if card is not None:
        tol = card.tolerance if tolerance is None else tolerance
        view = frames["card_parity"].drop(columns=["run_dir", "source", "note"], errors="ignore")
        parts += [f"\n## Card parity: {card.name} (tolerance ± {tol:g} points)\n", markdown_table(view)]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="*", default=["results"], help="run folders or results roots")
    parser.add_argument("--out", type=Path, help="output folder (default: <first RESULTS_DIR>/leaderboard)")
    parser.add_argument("--card", type=Path, default=DEFAULT_CARD, help="model-card numbers (conf/card/*.yaml)")
    parser.add_argument("--no-card", action="store_true", help="leave out the card row and parity view")
    parser.add_argument("--tolerance", type=float, help="card parity band in points (default: the card's, 1.0)")
    parser.add_argument("--no-html", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.results)
        card = None if args.no_card else load_card(args.card)
        out = args.out or Path(args.results[0]) / "leaderboard"
        write(runs, out, card, args.tolerance, html=not args.no_html)
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print((out / "leaderboard.md").read_text(encoding="utf-8"))
    print(f"written to {out}/ (leaderboard.md, *.csv{'' if args.no_html else ', index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
