"""The lexicographic minimax path of LeMiCa (NeurIPS 2025): which steps to compute, as a path through a graph of steps.

Nodes are the steps 0 .. N-1 and an end node N. An edge (i, j), i < j <= N, computes step i and stands in for steps
i+1 .. j-1; its weight is the error that does. A schedule of ``budget`` computed steps is a path 0 -> N of ``budget``
edges. The lexicographic minimax path has the least largest edge weight, among those the least second largest, and so
on: its edge weights sorted from largest down are the lexicographically least such list.

That order is kept by adding the same edges to two paths (it compares the weights' multisets from the largest value
down), so a dynamic programme over (node, edges used) that keeps one best path per state is exact.
"""

from __future__ import annotations

from typing import Sequence


def _merged(worst_first: tuple[float, ...], weight: float) -> tuple[float, ...]:
    """``worst_first`` (sorted from largest down) with ``weight`` added in its place."""
    i = 0
    while i < len(worst_first) and worst_first[i] >= weight:
        i += 1
    return worst_first[:i] + (weight,) + worst_first[i:]


def minimax_path(weights: Sequence[Sequence[float]], budget: int) -> tuple[list[int], tuple[float, ...]]:
    """The computed steps (from 0, ascending) of the lexicographic minimax path of ``budget`` edges, and its edge
    weights from largest down. ``weights[i][j]`` is the weight of edge (i, j) for 0 <= i < j <= N, with N + 1 rows
    or N rows (the end node has no edges out); other entries are not read. Ties go to the path found first (the
    smaller steps)."""
    steps = len(weights[0]) - 1
    if not (isinstance(budget, int) and 1 <= budget <= steps):
        raise ValueError(f"budget must be an integer in 1..{steps} (the number of steps), got {budget!r}")
    # best[k][j]: (weights from largest down, steps computed) of the best path 0 -> j of k edges
    best: list[dict[int, tuple[tuple[float, ...], tuple[int, ...]]]] = [{0: ((), ())}]
    for k in range(1, budget + 1):
        layer: dict[int, tuple[tuple[float, ...], tuple[int, ...]]] = {}
        last = steps if k == budget else steps - (budget - k)  # leave a node for each edge still to come
        for i, (worst, path) in sorted(best[k - 1].items()):
            for j in range(i + 1, last + 1):
                if k < budget and j == steps:
                    continue
                candidate = (_merged(worst, float(weights[i][j])), path + (i,))
                if j not in layer or candidate[0] < layer[j][0]:
                    layer[j] = candidate
        best.append(layer)
    worst, path = best[budget][steps]
    return list(path), worst


def reuse_errors(gram) -> list[list[float]]:
    """Edge weights from the Gram matrix G[a, b] = <r_a, r_b> of the residuals of all blocks at every step: the
    squared error of reusing step i's residual at steps i+1 .. j-1, sum of ||r_s - r_i||^2 (``weights[i][j]``,
    0 <= i < j <= N; 0 elsewhere)."""
    steps = len(gram)
    weights = [[0.0] * (steps + 1) for _ in range(steps + 1)]
    for i in range(steps):
        total = 0.0
        for j in range(i + 1, steps + 1):
            weights[i][j] = total
            if j < steps:
                total += float(gram[j][j] - 2 * gram[i][j] + gram[i][i])
    return weights
