"""Is run B better or worse than run A? Paired tests per task, Holm-corrected across tasks.

    python -m qwen_evals.analysis.compare RUN_A RUN_B [--alpha 0.05] [--show 20] [--json FILE]

RUN_A and RUN_B are run folders or results roots (every summary.json below is
used). Runs are paired on task, protocol and split, plus model, label and
precision wherever a side holds more than one of them (so two checkpoints, or
two nightly sweeps of many checkpoints, compare the way one expects). Within a
pair, samples are matched by id; both runs must hold the same ids with the same
gold answers, or the comparison stops with an error. Each comparison names what
else differs between the two records: data, prompts, generation settings, chat
template, model identity (`qwen_evals.analysis.differences`).

- Right/wrong metrics (per-sample values 0/1): McNemar's exact test on the
  flipped samples; the delta and its 95% CI come from a paired bootstrap.
- Continuous metrics (Rouge-L, pass@1 with n > 1): paired bootstrap test.
- Macro-averaged tasks (C-Eval) resample within subjects; their delta is the
  macro delta.

Each pair's verdict (B better / worse / tie) uses the Holm-adjusted p-value at
`alpha`, so a sweep of many tasks does not flag chance differences.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from qwen_evals.analysis.differences import differences
from qwen_evals.analysis.results import (
    KEY_FIELDS,
    identity,
    latest,
    load_runs,
    load_samples,
    metric_samples,
    model_label,
)
from qwen_evals.core import stats
from qwen_evals.core.errors import EvalError
from qwen_evals.core.metrics import Metric

PAIR_ALWAYS = ("task", "protocol", "split")
PAIR_IF_VARIED = ("model", "label", "precision")
ALPHA = 0.05


@dataclass
class Comparison:
    """One task's paired comparison; scores and deltas in points (B - A)."""

    task: str
    protocol: str | None
    split: str | None
    run_a: str
    run_b: str
    label_a: str
    label_b: str
    metric: str
    test: str
    n: int
    score_a: float
    score_b: float
    delta: float
    ci: tuple[float, float]
    p_value: float
    p_holm: float = math.nan
    verdict: str = "tie"
    higher_is_better: bool = True
    regressions: list[str] = field(default_factory=list)
    """Ids where B is worse: right in A, wrong in B (or, for continuous metrics, every drop, largest first)."""
    improvements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What differs between the two records besides chance (data, prompts, generation, model)."""
    same_exam: bool = True
    """Both asked the same questions the same way (equal `data_fingerprint`)."""

    @property
    def name(self) -> str:
        return "/".join(str(part) for part in (self.task, self.protocol, self.split) if part)


@dataclass
class ComparisonSet:
    comparisons: list[Comparison]
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    alpha: float = ALPHA
    unscored: list[str] = field(default_factory=list)
    """Paired runs without a score to compare (hidden labels, e.g. C-Eval test)."""

    def worse(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.verdict == "worse"]


def pair_runs(
    runs_a: pd.DataFrame, runs_b: pd.DataFrame
) -> tuple[list[tuple[pd.Series, pd.Series]], list[str], list[str]]:
    """Match runs of the two sides; returns the pairs and labels of the runs left unpaired."""
    by = list(PAIR_ALWAYS) + [
        f for f in PAIR_IF_VARIED if runs_a[f].nunique(dropna=False) > 1 or runs_b[f].nunique(dropna=False) > 1
    ]
    side_a, side_b = latest(runs_a, KEY_FIELDS), latest(runs_b, KEY_FIELDS)
    for side, name in ((side_a, "A"), (side_b, "B")):
        dup = side[side.duplicated(by, keep=False)]
        if not dup.empty:
            raise EvalError(
                f"side {name} holds several runs for one comparison key {by}: {sorted(set(dup['run_dir']))}"
            )
    index_b = {identity(row, by): row for _, row in side_b.iterrows()}
    pairs, only_a = [], []
    for _, row in side_a.iterrows():
        match = index_b.pop(identity(row, by), None)
        if match is None:
            only_a.append(_describe(row))
        else:
            pairs.append((row, match))
    return pairs, only_a, [_describe(row) for row in index_b.values()]


def _describe(row: pd.Series) -> str:
    name = "/".join(str(row[f]) for f in PAIR_ALWAYS if row[f] is not None)
    return f"{name} {model_label(row)} ({row['run_dir']})"


def align(run_a: pd.Series, run_b: pd.Series) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both runs' samples in the same id order; different ids or gold answers are an error."""
    a, b = load_samples(run_a["run_dir"]), load_samples(run_b["run_dir"])
    for frame, run in ((a, run_a), (b, run_b)):
        dup = frame["id"][frame["id"].duplicated()]
        if not dup.empty:
            raise EvalError(f"{run['run_dir']}: duplicate sample ids {dup.head(5).tolist()}")
    ids_a, ids_b = set(a["id"]), set(b["id"])
    if ids_a != ids_b:
        only_a, only_b = sorted(ids_a - ids_b), sorted(ids_b - ids_a)
        raise EvalError(
            f"{run_a['task']}: the runs were scored on different samples, so they cannot be paired: "
            f"{len(only_a)} ids only in A {only_a[:5]}, {len(only_b)} only in B {only_b[:5]} "
            f"(A: {run_a['run_dir']}, B: {run_b['run_dir']}); re-run both with the same task settings and limit"
        )
    a, b = a.set_index("id"), b.set_index("id").loc[a["id"]]  # A's sample order
    if "target" in a.columns and "target" in b.columns:
        gold_a, gold_b = (frame["target"].map(lambda v: json.dumps(v, default=str)) for frame in (a, b))
        differ = gold_a.index[gold_a != gold_b]
        if len(differ):
            raise EvalError(
                f"{run_a['task']}: {len(differ)} samples have different gold answers in the two runs "
                f"(e.g. {list(differ[:5])}): different data versions"
            )
    return a.reset_index(), b.reset_index()


def compare_pair(
    run_a: pd.Series,
    run_b: pd.Series,
    metric: Metric | None = None,
    *,
    n_boot: int = stats.N_BOOT,
    seed: int = stats.SEED,
) -> Comparison:
    """B against A on one metric (default: the headline), paired by sample id."""
    a, b = align(run_a, run_b)
    metric = metric or run_a["metric_spec"]
    if metric not in run_b["compared_metrics"]:
        raise EvalError(f"{run_a['task']}: run B does not declare {metric} as run A does ({run_b['run_dir']})")
    rows_a, values_a, groups = metric_samples(a, metric, run_a["run_dir"])
    rows_b, values_b, _ = metric_samples(b, metric, run_b["run_dir"])
    if rows_a["id"].tolist() != rows_b["id"].tolist():
        raise EvalError(f"{run_a['task']}: the runs put different samples in the subset {metric.subset} of {metric.name}")
    paired = stats.paired_bootstrap(values_a, values_b, groups, n_boot=n_boot, seed=seed)
    ids = rows_a["id"].to_numpy()
    if stats.is_binary(values_a) and stats.is_binary(values_b):
        test = stats.mcnemar_exact(values_a, values_b)
        name, p_value = "mcnemar", test.p_value
        regressions = ids[(values_a == 1) & (values_b == 0)].tolist()
        improvements = ids[(values_a == 0) & (values_b == 1)].tolist()
    else:
        name, p_value = "paired-bootstrap", paired.p_value
        drop = values_b - values_a
        order = np.argsort(drop, kind="stable")
        regressions = [ids[i] for i in order if drop[i] < 0]
        improvements = [ids[i] for i in order[::-1] if drop[i] > 0]
    if not metric.higher_is_better:
        regressions, improvements = improvements, regressions
    return Comparison(
        task=run_a["task"],
        protocol=run_a["protocol"],
        split=run_a["split"],
        run_a=run_a["run_dir"],
        run_b=run_b["run_dir"],
        label_a=model_label(run_a),
        label_b=model_label(run_b),
        metric=metric.name,
        test=name,
        n=len(ids),
        score_a=100 * stats.statistic(values_a, groups),
        score_b=100 * stats.statistic(values_b, groups),
        delta=100 * paired.delta,
        ci=(100 * paired.ci[0], 100 * paired.ci[1]),
        p_value=p_value,
        higher_is_better=metric.higher_is_better,
        regressions=regressions,
        improvements=improvements,
        notes=differences(run_a, run_b),
        same_exam=run_a["data_fingerprint"] == run_b["data_fingerprint"],
    )


def compare(
    a: list[str | Path],
    b: list[str | Path],
    *,
    alpha: float = ALPHA,
    n_boot: int = stats.N_BOOT,
    seed: int = stats.SEED,
) -> ComparisonSet:
    """Pair the runs under `a` and `b`, test each pair, Holm-adjust, and give verdicts for B."""
    pairs, only_a, only_b = pair_runs(load_runs(a), load_runs(b))
    if not pairs:
        raise EvalError(f"no run in A matches a run in B on task/protocol/split; A has {only_a}, B has {only_b}")
    result = test_pairs(pairs, alpha=alpha, n_boot=n_boot, seed=seed)
    result.only_a, result.only_b = only_a, only_b
    return result


def test_pairs(
    pairs: list[tuple[pd.Series, pd.Series]], *, alpha: float = ALPHA, n_boot: int = stats.N_BOOT, seed: int = stats.SEED
) -> ComparisonSet:
    """Test each pair on its compared metrics, Holm-adjust across all of them, and give verdicts for B."""
    has_score = [not (math.isnan(a["score"]) or math.isnan(b["score"])) for a, b in pairs]
    scored = [pair for pair, ok in zip(pairs, has_score) if ok]
    unscored = [_describe(pair[0]) for pair, ok in zip(pairs, has_score) if not ok]
    comparisons = [
        compare_pair(run_a, run_b, metric, n_boot=n_boot, seed=seed)
        for run_a, run_b in scored
        for metric in run_a["compared_metrics"]
    ]
    for comparison, adjusted in zip(comparisons, stats.holm([c.p_value for c in comparisons])):
        comparison.p_holm = adjusted
        comparison.verdict = verdict(comparison, alpha)
    return ComparisonSet(comparisons, alpha=alpha, unscored=unscored)


def verdict(c: Comparison, alpha: float) -> str:
    if not c.p_holm < alpha or c.delta == 0:
        return "tie"
    return "better" if (c.delta > 0) == c.higher_is_better else "worse"


def table(result: ComparisonSet) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "task": c.name,
                "A": c.label_a,
                "B": c.label_b,
                "metric": c.metric,
                "n": c.n,
                "A score": f"{c.score_a:.1f}",
                "B score": f"{c.score_b:.1f}",
                "delta": f"{c.delta:+.1f}",
                "95% CI": f"[{c.ci[0]:+.1f}, {c.ci[1]:+.1f}]",
                "test": c.test,
                "p": f"{c.p_value:.2g}",
                "p (Holm)": f"{c.p_holm:.2g}",
                "verdict": c.verdict,
                "flips -/+": f"{len(c.regressions)}/{len(c.improvements)}",
            }
            for c in result.comparisons
        ]
    )


def format_report(result: ComparisonSet, show: int = 20) -> str:
    lines = [
        (
            "delta = B - A in points; verdict = how B compares with A "
            f"(Holm-adjusted p < {result.alpha} across the {len(result.comparisons)} comparisons)"
        ),
        "",
        table(result).to_string(index=False),
    ]
    for c in result.comparisons:
        lines.append("")
        for title, ids in (("worse in B", c.regressions), ("better in B", c.improvements)):
            shown = ", ".join(ids[:show]) + (f", ... (+{len(ids) - show} more)" if len(ids) > show else "")
            lines.append(f"{c.name} {c.metric} {title} ({len(ids)}): {shown or '-'}")
        lines += [f"{c.name} {c.metric} note: {note}" for note in c.notes]
    for side, runs in (("A", result.only_a), ("B", result.only_b)):
        lines += [f"only in {side} (not compared): {run}" for run in runs]
    lines += [f"no score to compare (hidden labels?): {run}" for run in result.unscored]
    return "\n".join(lines)


def to_json(result: ComparisonSet) -> dict:
    return {
        "alpha": result.alpha,
        "comparisons": [asdict(c) for c in result.comparisons],
        "only_a": result.only_a,
        "only_b": result.only_b,
        "unscored": result.unscored,
    }


def arguments(description: str, a: str = "RUN_A", b: str = "RUN_B") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(a.lower(), metavar=a, help="run folder or results root")
    parser.add_argument(b.lower(), metavar=b, help="run folder or results root")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="family-wise error rate (Holm); default 0.05")
    parser.add_argument("--show", type=int, default=20, help="flipped sample ids to print per task")
    parser.add_argument("--json", type=Path, help="also write the comparisons as JSON here")
    parser.add_argument("--n-boot", type=int, default=stats.N_BOOT, help="bootstrap replicates")
    parser.add_argument("--seed", type=int, default=stats.SEED, help="bootstrap seed")
    return parser


def run_cli(args: argparse.Namespace, a: str, b: str) -> ComparisonSet:
    result = compare([a], [b], alpha=args.alpha, n_boot=args.n_boot, seed=args.seed)
    print(format_report(result, args.show))
    if args.json:
        args.json.write_text(json.dumps(to_json(result), indent=1, default=str) + "\n", encoding="utf-8")
    return result


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__.splitlines()[0]).parse_args(argv)
    try:
        run_cli(args, args.run_a, args.run_b)
    except EvalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
