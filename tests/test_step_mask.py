"""cachelab's step_mask against cache-dit 1.5.3 itself: the preset masks at every supported number of steps, and
per step the same computed steps, the same residual changes compared and the same images as DBCacheConfig with
``steps_computation_mask`` / ``steps_computation_policy`` (dynamic and static), on the digits model and on a tiny
CogView4 with true CFG (both branches)."""

import pytest
from cache_dit import DBCacheConfig
from cache_dit.caching.cache_interface import steps_mask as cache_dit_steps_mask
from cachedit_runs import cache_dit_run, cachelab_run, cogview4_at, digits_at, plain_digits

from cachelab.policies.step_mask import MASK_PRESETS, StepMask, steps_mask

DIGITS_STEPS = 12
COGVIEW_STEPS = 10


@pytest.mark.parametrize("preset", MASK_PRESETS)
def test_presets_are_cache_dits_at_every_number_of_steps(preset):
    for steps in [4, 6, *range(8, 81)]:
        assert steps_mask(preset, steps) == cache_dit_steps_mask(total_steps=steps, mask_policy=preset), steps


def test_unsupported_masks_are_refused_early():
    with pytest.raises(ValueError, match="mask must be one of slow, medium, fast, ultra"):
        StepMask(mask="quick")
    with pytest.raises(ValueError, match="list of 0/1"):
        StepMask(mask=[1, 2])
    with pytest.raises(ValueError, match="mask_policy must be one of dynamic, static"):
        StepMask(mask_policy="lazy")
    with pytest.raises(ValueError, match="4, 6 or >= 8 steps"):
        StepMask(mask="fast").check_steps(5)


digits_call, cogview4_call = digits_at(DIGITS_STEPS), cogview4_at(COGVIEW_STEPS)


def assert_same(expected, actual, branches, steps, mask):
    (cached, diffs, images), (our_cached, our_diffs, our_images) = expected, actual
    for branch in branches:
        assert our_cached[branch] == cached[branch], branch
        assert 0 < len(cached[branch]) < steps
        assert all(mask[step] == 0 for step in cached[branch])  # a step the mask computes is never cached
        assert our_diffs[branch] == pytest.approx(diffs[branch], rel=1e-4, abs=1e-6)
    assert abs(our_images - images).max() < 1e-5


def config(mask, mask_policy, threshold, warmup, compute_first=1):
    return DBCacheConfig(Fn_compute_blocks=compute_first, Bn_compute_blocks=0, max_warmup_steps=warmup,
                         residual_diff_threshold=threshold, steps_computation_mask=mask, steps_computation_policy=mask_policy)


@pytest.fixture(scope="module")
def digits():
    return plain_digits()


# (preset, policy, threshold, warm-up): thresholds at which the dynamic steps both compute and reuse on digits;
# warm-up 8 is cut to the mask's first run of 1s (4 at 12 steps), as cache-dit cuts it.
DIGITS = [
    pytest.param("fast", "dynamic", 0.3, 8, id="fast-dynamic-W8"),
    pytest.param("medium", "static", 0.08, 8, id="medium-static"),
]


@pytest.mark.parametrize("preset, mask_policy, threshold, warmup", DIGITS)
def test_step_mask_matches_cache_dit_on_digits(digits, preset, mask_policy, threshold, warmup):
    mask = cache_dit_steps_mask(total_steps=DIGITS_STEPS, mask_policy=preset)
    expected = cache_dit_run(plain_digits, digits_call,
                             config(mask, mask_policy, threshold, warmup))
    policy = StepMask(threshold, warmup_steps=warmup, mask=preset, mask_policy=mask_policy)
    assert_same(expected, cachelab_run(digits, digits_call, policy), ["cond"], DIGITS_STEPS, mask)
    if mask_policy == "static":
        assert expected[0]["cond"] == {s for s, m in enumerate(mask) if m == 0}  # static: every masked-off step reused
    else:
        assert expected[0]["cond"] < {s for s, m in enumerate(mask) if m == 0}  # dynamic: some of them computed


@pytest.mark.parametrize("mask_policy", ["dynamic", "static"])
def test_explicit_step_mask_matches_cache_dit_on_cogview4_with_cfg(cogview4, mask_policy):
    import tiny

    mask = [1, 1, 0, 0, 1, 0, 0, 0, 1, 1]
    expected = cache_dit_run(tiny.cogview4_pipeline, cogview4_call, config(mask, mask_policy, 0.2, 0))
    policy = StepMask(0.2, warmup_steps=0, mask=mask, mask_policy=mask_policy)
    assert_same(expected, cachelab_run(cogview4, cogview4_call, policy), ["cond", "uncond"], COGVIEW_STEPS, mask)
