"""Length-sorted batches under a token budget.

Longest first, as lm-evaluation-harness does: the first batch is the most
memory-hungry, so an out-of-memory shows up at once, and the progress-bar ETA
is an over- rather than an under-estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from qwen_evals.core.types import Decoding, Generate


def plan_batches(lengths: Sequence[int], max_tokens: int, max_size: int) -> list[list[int]]:
    """Group indices into batches whose padded size (count x longest) fits `max_tokens`.

    A single item longer than the budget still gets a batch of its own.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        longest = lengths[current[0]] if current else lengths[index]
        if current and (len(current) + 1 > max_size or (len(current) + 1) * longest > max_tokens):
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


def causal_pairs(length: int, offset: int = 0) -> int:
    """Query-key pairs of `length` tokens attending causally to themselves after `offset` earlier ones."""
    return length * offset + length * (length + 1) // 2


def shared_prefix_groups(rows: Sequence[Sequence[int]], min_prefix: int) -> list[tuple[int, list[int]]]:
    """Groups of rows that start with the same `>= min_prefix` tokens, with that prefix length.

    Rows are sorted so that those sharing a prefix are neighbours (a few-shot
    prompt's header and shots come first); a group keeps growing while the
    common prefix stays at least `min_prefix` long. Every row keeps at least
    one token of its own after the prefix. Rows sharing nothing come back as
    groups of one with prefix 0.
    """
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []
    for index in order:
        row = rows[index]
        if groups and groups[-1][0] >= min_prefix:
            prefix, members = groups[-1]
            common = _common_prefix(rows[members[0]], row, min(prefix, len(row) - 1))
            if common >= min_prefix:
                groups[-1] = (common, members + [index])
                continue
        if groups and len(groups[-1][1]) == 1:
            # A lone row may start a group with this one.
            lone = groups[-1][1][0]
            common = _common_prefix(rows[lone], row, min(len(rows[lone]), len(row)) - 1)
            if common >= min_prefix:
                groups[-1] = (common, [lone, index])
                continue
        groups.append((0, [index]))
    return groups


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


def by_generation_settings(requests: Sequence[Generate]) -> dict[tuple[int, tuple[str, ...], Decoding], list[int]]:
    """Indices of requests grouped by (max_new_tokens, stop, decoding): one generate call each."""
    groups: dict[tuple[int, tuple[str, ...], Decoding], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault((request.max_new_tokens, request.stop, request.decoding), []).append(index)
    return groups
