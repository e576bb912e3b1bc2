"""Splitting a batch of windows into groups of similar length, so little compute goes to padding.

A forward pass pads every window of a group to the group's longest, and on a CPU its cost
grows with the tokens it runs, padding included. Each group also costs a fixed amount per
call (framework overhead), which the backends state in tokens. Given windows sorted by
length, the cheapest split into consecutive groups is found exactly by dynamic programming.
"""

from __future__ import annotations

from collections.abc import Sequence


def length_groups(lengths: Sequence[int], *, call_cost_tokens: float,
                  max_group: int) -> list[range]:
    """Consecutive index ranges over ``lengths`` (sorted ascending) that minimise
    ``sum(call_cost_tokens + size * longest)`` over the groups, each at most ``max_group``."""
    if any(a > b for a, b in zip(lengths, lengths[1:])):
        raise ValueError("lengths must be sorted ascending")
    n = len(lengths)
    best = [0.0] + [float("inf")] * n  # best[j]: cheapest cost of the first j windows
    cut = [0] * (n + 1)  # cut[j]: where the last group of that split starts
    for end in range(1, n + 1):
        longest = lengths[end - 1]
        for start in range(max(0, end - max_group), end):
            cost = best[start] + call_cost_tokens + (end - start) * longest
            if cost < best[end]:
                best[end], cut[end] = cost, start
    groups, end = [], n
    while end > 0:
        groups.append(range(cut[end], end))
        end = cut[end]
    return groups[::-1]


def padded_tokens(lengths: Sequence[int], groups: Sequence[range]) -> int:
    """Tokens the forward passes run, padding included (for benchmarks and tests)."""
    return sum(len(g) * max(lengths[i] for i in g) for g in groups if len(g))
