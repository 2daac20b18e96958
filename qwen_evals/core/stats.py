"""Uncertainty and paired tests for per-sample scores.

Everything works on one float per sample (1.0/0.0 for right/wrong answers, or a
continuous score such as Rouge-L) plus, for macro-averaged tasks (C-Eval), the
group of each sample: the statistic is then the unweighted mean of the group
means, and bootstrap replicates resample *within* each group so that every group
keeps its size, as the benchmark's own average does.

- `bootstrap_ci`: percentile confidence interval of a run's score.
- `mcnemar_exact`: exact McNemar test for two runs' right/wrong answers on the
  same items (a binomial test on the discordant pairs, computed in exact integer
  arithmetic, so no SciPy is needed).
- `paired_bootstrap`: confidence interval and two-sided p-value of the mean
  per-sample difference, for continuous metrics.
- `holm`: Holm-Bonferroni step-down adjustment across tasks.

All resampling is seeded (`numpy.random.default_rng(seed)`): the same inputs
give the same intervals on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

N_BOOT = 2000
SEED = 0
LEVEL = 0.95
_CHUNK = 2_000_000  # resampled values drawn per numpy call (bounds memory on 14k-item MMLU)
_FEW_LEVELS = 16  # up to this many distinct values, resample counts instead of indices


def is_binary(values: np.ndarray) -> bool:
    """True when every value is 0 or 1 (right/wrong answers)."""
    return bool(np.isin(values, (0.0, 1.0)).all())


def statistic(values: np.ndarray, groups: np.ndarray | None = None) -> float:
    """The mean (micro) or, with `groups`, the unweighted mean of the group means (macro)."""
    values = np.asarray(values, dtype=float)
    if groups is None:
        return float(values.mean())
    return float(np.mean([values[groups == g].mean() for g in np.unique(groups)]))


def bootstrap_replicates(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> np.ndarray:
    """`n_boot` bootstrap replicates of `statistic(values, groups)`.

    Without groups the items are resampled with replacement; with groups, each
    group is resampled on its own and the replicate is the mean of group means.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    if groups is None:
        return _resampled_means(values, n_boot, rng)
    groups = np.asarray(groups)
    if groups.shape != values.shape:
        raise ValueError(f"{values.size} values but {groups.size} group labels")
    per_group = [_resampled_means(values[groups == g], n_boot, rng) for g in np.unique(groups)]
    return np.mean(per_group, axis=0)


def _resampled_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = values.size
    levels, counts = np.unique(values, return_counts=True)
    if levels.size <= _FEW_LEVELS:
        # Right/wrong answers (and their paired differences) take few distinct values:
        # how often each value is drawn is Multinomial(n, frequencies), the same
        # distribution as drawing n indices, at a fraction of the cost.
        return rng.multinomial(n, counts / n, size=n_boot) @ levels / n
    out = np.empty(n_boot)
    step = max(1, _CHUNK // n)
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        out[start:stop] = values[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return out


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the (micro or macro) mean."""
    replicates = bootstrap_replicates(values, groups, n_boot=n_boot, seed=seed)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class McNemar:
    """Discordant pairs of two runs on the same items, and the exact two-sided p-value."""

    a_only: int
    """Items run A got right and run B got wrong (regressions when B is the candidate)."""
    b_only: int
    """Items run B got right and run A got wrong."""
    p_value: float


def binomial_two_sided_half(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips: min(1, 2 P(X <= min(k, n-k)))."""
    if n == 0:
        return 1.0
    k = min(k, n - k)
    term, tail = 1, 0  # C(n, i), updated in exact integers
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return float(min(Fraction(1), Fraction(2 * tail, 2**n)))


def mcnemar_exact(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> McNemar:
    """McNemar's exact test on paired right/wrong answers (1/0 or booleans, aligned by item)."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    return McNemar(a_only, b_only, binomial_two_sided_half(a_only, a_only + b_only))


@dataclass(frozen=True)
class PairedBootstrap:
    delta: float
    """statistic(b) - statistic(a)."""
    ci: tuple[float, float]
    p_value: float
    """Two-sided: twice the smaller share of replicates on either side of zero (add-one smoothed)."""


def paired_bootstrap(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    groups: Sequence[str] | np.ndarray | None = None,
    *,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = SEED,
) -> PairedBootstrap:
    """Resample items jointly: the replicates of the difference of (macro) means keep the pairing.

    Both the micro and the macro statistic are linear in the per-item values, so
    the difference of two resampled statistics is the statistic of the per-item
    differences; that is what gets resampled.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} vs {b.size}")
    diff = b - a
    replicates = bootstrap_replicates(diff, groups, n_boot=n_boot, seed=seed)
    low, high = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    below, above = int((replicates <= 0).sum()), int((replicates >= 0).sum())
    p_value = min(1.0, 2 * (min(below, above) + 1) / (n_boot + 1))
    return PairedBootstrap(statistic(diff, groups), (float(low), float(high)), p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order (NaN entries stay NaN, outside the family)."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    index = np.flatnonzero(~np.isnan(p))
    m = index.size
    running = 0.0
    for rank, i in enumerate(index[np.argsort(p[index], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()
