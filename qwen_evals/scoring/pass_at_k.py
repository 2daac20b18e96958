"""pass@k for code generation (Chen et al., 2021, "Evaluating Large Language Models
Trained on Code", arXiv:2107.03374, section 2.1).

With n samples per problem of which c pass, the unbiased estimate of the chance
that at least one of k samples drawn without replacement passes is
1 - C(n-c, k) / C(n, k). The ratio of binomials is computed as a running
product, which stays exact enough for the n in the hundreds that papers use,
where the binomials themselves overflow floats. Averaging the per-problem
estimates over problems gives the benchmark's pass@k.
"""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` passing samples out of `n`."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every draw of k samples contains a passing one
        return 1.0
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k/i)
    all_fail = 1.0
    for i in range(n - c + 1, n + 1):
        all_fail *= 1.0 - k / i
    return 1.0 - all_fail

