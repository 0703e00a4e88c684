"""The stand-ins FoCa and DMD against cache-dit 1.5.3 itself: DBCache F1B0 with ``FoCaCalibratorConfig`` and with
``DMDCalibratorConfig`` against cachelab's ``dbcache`` with ``forecaster="foca"`` / ``"dmd"``: the same computed steps,
the same residual changes and images within float tolerance, on the digits model (three settings each) and a tiny
CogView4 with true CFG (both branches forecast apart). Hermite against its published rule on known sequences."""

import math

import numpy as np
import pytest
from cache_dit import DBCacheConfig, DMDCalibratorConfig, FoCaCalibratorConfig
from cachedit_runs import cache_dit_run, cachelab_run, cogview4_at, digits_at, plain_digits

from cachelab.forecasters import hermite_weights
from cachelab.policies import DualBlockCache

DIGITS_STEPS = 16
COGVIEW_STEPS = 10
CALIBRATORS = {"foca": FoCaCalibratorConfig, "dmd": DMDCalibratorConfig}


digits_call, cogview4_call = digits_at(DIGITS_STEPS), cogview4_at(COGVIEW_STEPS)


def assert_same(expected, actual, branches, steps):
    (cached, diffs, images), (our_cached, our_diffs, our_images) = expected, actual
    for branch in branches:
        assert our_cached[branch] == cached[branch], branch
        assert 0 < len(cached[branch]) < steps
        assert our_diffs[branch] == pytest.approx(diffs[branch], rel=1e-4, abs=1e-6)
    assert abs(our_images - images).max() < 1e-5


def dbcache(threshold, warmup, **limits):
    return DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=warmup, residual_diff_threshold=threshold,
                         **limits)


@pytest.fixture(scope="module")
def digits():
    return plain_digits()


# (threshold, warm-up, limits) on digits at 16 steps: W4/W6 give DMD 4-6 evenly spaced snapshots before the first
# skipped step (its exponential fit); W0 starts from FoCa's and DMD's fallbacks (too few values).
DIGITS = [
    pytest.param(0.2, 4, {}, id="W4"),
    pytest.param(0.3, 6, {"max_continuous_cached_steps": 3}, id="W6-limited"),
    pytest.param(0.15, 0, {}, id="W0"),
]


@pytest.mark.parametrize("forecaster", sorted(CALIBRATORS))
@pytest.mark.parametrize("threshold, warmup, limits", DIGITS)
def test_dbcache_with_calibrator_matches_cache_dit_on_digits(digits, forecaster, threshold, warmup, limits):
    expected = cache_dit_run(plain_digits, digits_call, dbcache(threshold, warmup, **limits),
                             CALIBRATORS[forecaster]())
    policy = DualBlockCache(threshold, compute_first=1, compute_last=0, warmup_steps=warmup, forecaster=forecaster,
                            max_continuous_cached_steps=limits.get("max_continuous_cached_steps", -1))
    assert_same(expected, cachelab_run(digits, digits_call, policy), ["cond"], DIGITS_STEPS)
    # the stand-in matters at this tolerance: reuse gives another image
    reuse = DualBlockCache(threshold, compute_first=1, compute_last=0, warmup_steps=warmup,
                           max_continuous_cached_steps=limits.get("max_continuous_cached_steps", -1))
    _, _, reused = cachelab_run(digits, digits_call, reuse)
    assert abs(reused - expected[2]).max() > 1e-4


@pytest.mark.parametrize("forecaster", sorted(CALIBRATORS))
def test_dbcache_with_calibrator_matches_cache_dit_on_cogview4_with_cfg(cogview4, forecaster):
    import tiny

    expected = cache_dit_run(tiny.cogview4_pipeline, cogview4_call, dbcache(0.2, 4), CALIBRATORS[forecaster]())
    policy = DualBlockCache(0.2, compute_first=1, compute_last=0, warmup_steps=4, forecaster=forecaster)
    assert_same(expected, cachelab_run(cogview4, cogview4_call, policy), ["cond", "uncond"], COGVIEW_STEPS)


def hermite(x: float, n: int) -> float:
    return [1.0, 2 * x, 4 * x**2 - 2, 8 * x**3 - 12 * x][n]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("scale", [0.5, 0.75, 2**-0.5])
def test_hermite_is_the_published_expansion_of_the_divided_differences(order, scale):
    steps, target = [9, 6, 4, 1], 11  # newest first
    values = np.array([math.sin(0.3 * s) for s in steps[: order + 1]])
    d = target - steps[0]
    expected = values[0]
    for k in range(1, order + 1):
        expected += ladder_at_newest(steps, values, k) * scale**k * hermite(scale * d, k) / math.factorial(k)
    assert np.dot(hermite_weights(steps, target, order, scale), values) == pytest.approx(expected, rel=1e-12)


def ladder_at_newest(steps, values, k):
    """D_k at the newest step by the TaylorSeer recursion: D_(i+1)(s_j) = (D_i(s_j) - D_i(s_(j+1))) / (s_j - s_(j+1))."""
    def d(i, j):
        if i == 0:
            return values[j]
        return (d(i - 1, j) - d(i - 1, j + 1)) / (steps[j] - steps[j + 1])
    return d(k, 0)


def test_hermite_with_unit_scale_extrapolates_a_line_exactly():
    """sigma^2 H_1(sigma d) / 1! = 2 sigma^2 d: with sigma = 1/sqrt(2) the first-order Hermite forecast is the line."""
    weights = hermite_weights([6, 4], 9, 1, 2**-0.5)
    assert np.dot(weights, [6.0 * 3 + 1, 4.0 * 3 + 1]) == pytest.approx(9 * 3 + 1)
