"""Taylor forecasting of a skipped step's residual from the computed ones (TaylorSeer, Liu et al. 2025).

On every computed step s_k the derivative ladder is D_0 = F(s_k) and
D_{i+1}(s_k) = (D_i(s_k) - D_i(s_{k-1})) / (s_k - s_{k-1}); a skipped step at distance d from the
newest computed step gets sum_i D_i * d^i / i!. Every term is linear in the computed features, so the
forecast is a fixed linear combination of the kept residuals: ``taylor_weights`` returns its weights.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

#: No derivative is formed at computed steps before this one: the rule of cache-dit's TaylorSeer calibrator,
#: whose derivatives start at its 4th transformer call (tests/test_cachedit_parity.py checks it against cache-dit).
FIRST_DERIVATIVE_STEP = 3


def taylor_weights(steps: Sequence[int], target: int, order: int) -> list[float]:
    """Weights over the features computed at ``steps`` (newest first) that forecast step ``target``
    with the Taylor expansion of ``order``; fewer kept steps give a lower order ([1.0]: reuse)."""
    steps = list(steps)[: order + 1]
    count = len(steps)
    ladders: list[list[np.ndarray]] = [[] for _ in steps]  # ladders[k][i]: D_i at steps[k] over the features
    for k in reversed(range(count)):
        ladder = ladders[k]
        ladder.append(np.eye(count)[k])
        if k + 1 < count and steps[k] >= FIRST_DERIVATIVE_STEP:
            older, window = ladders[k + 1], steps[k] - steps[k + 1]
            for i in range(min(order, len(older))):
                ladder.append((ladder[i] - older[i]) / window)
    distance = target - steps[0]
    weights = sum(term * distance**i / math.factorial(i) for i, term in enumerate(ladders[0]))
    return [float(w) for w in weights]
