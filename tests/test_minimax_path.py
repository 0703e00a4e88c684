"""LeMiCa's lexicographic minimax path solver against brute force over every path of small random graphs."""

import itertools
import random

import numpy as np
import pytest

from cachelab.minimax_path import minimax_path, reuse_errors


def brute_force(weights, budget):
    """Every schedule of ``budget`` computed steps from step 0: the least edge weights sorted from largest down."""
    steps = len(weights[0]) - 1
    best = None
    for rest in itertools.combinations(range(1, steps), budget - 1):
        nodes = (0, *rest, steps)
        worst = tuple(sorted((weights[i][j] for i, j in zip(nodes, nodes[1:])), reverse=True))
        if best is None or worst < best[0]:
            best = (worst, [0, *rest])
    return best


@pytest.mark.parametrize("seed", range(40))
def test_solver_matches_brute_force_on_random_graphs(seed):
    rng = random.Random(seed)
    steps = rng.randint(2, 9)
    integer = seed % 2 == 0  # integer weights make ties, where the lexicographic order matters beyond the worst edge
    weights = [[rng.randint(0, 4) if integer else rng.random() for _ in range(steps + 1)] for _ in range(steps + 1)]
    for budget in range(1, steps + 1):
        path, worst = minimax_path(weights, budget)
        expected_worst, expected_path = brute_force(weights, budget)
        assert worst == expected_worst, (steps, budget)
        assert len(path) == budget and path[0] == 0 and path == sorted(set(path))
        nodes = [*path, steps]
        assert tuple(sorted((weights[i][j] for i, j in zip(nodes, nodes[1:])), reverse=True)) == worst
        if not integer:  # no ties: the path itself is unique
            assert path == expected_path


def test_lexicographic_beyond_the_worst_edge():
    # Both 2-edge paths 0 -> 1 -> 3 (weights 5, 4) and 0 -> 2 -> 3 (1, 5) have worst edge 5; the second largest
    # decides for the path found second.
    inf = 99
    weights = [[inf, 5, 1, inf], [inf, inf, inf, 4], [inf, inf, inf, 5], [inf] * 4]
    assert minimax_path(weights, 2) == ([0, 2], (5, 1))


def test_reuse_errors_are_the_squared_errors_of_reusing():
    rng = np.random.default_rng(0)
    residuals = rng.normal(size=(6, 10))
    weights = reuse_errors(residuals @ residuals.T)
    for i in range(6):
        for j in range(i + 1, 7):
            expected = sum(float(((residuals[s] - residuals[i]) ** 2).sum()) for s in range(i + 1, min(j, 6)))
            assert weights[i][j] == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert weights[2][3] == 0.0  # computing the next step too leaves nothing to stand in for


def test_budget_is_checked():
    with pytest.raises(ValueError, match="budget must be an integer in 1..3"):
        minimax_path([[0.0] * 4] * 4, 4)
