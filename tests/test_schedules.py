"""The oracle schedule (dynamic programme), the learned policy and the calibration store."""

import itertools

import numpy as np
import pytest
import torch
from digits_runs import generate_digits
from tiny import generate

import cachelab
from cachelab import Learned, Oracle
from cachelab.calibrate import learned_policy, uncached_runs
from cachelab.calibration import numbers_for, use_calibration
from cachelab.schedules import Plan, best_plan, estimator, stand_in_error

STEPS = 8


def random_gram(steps=STEPS, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(3, 40))
    residuals = [base[0] + s / steps * base[1] + (s / steps) ** 2 * base[2] + 0.05 * rng.normal(size=40)
                 for s in range(steps)]
    return np.array([[a @ b for b in residuals] for a in residuals])


def brute_force(g, budget, weights_for, history):
    """The least total stand-in error over every schedule that computes step 0 and budget - 1 others."""
    best = np.inf
    for rest in itertools.combinations(range(1, len(g)), budget - 1):
        computed, kept, total = {0, *rest}, (), 0.0
        for step in range(len(g)):
            if step in computed:
                kept = ((step,) + kept)[:history]
            else:
                total += stand_in_error(g, kept, step, weights_for(kept, step))
        best = min(best, total)
    return best


@pytest.mark.parametrize("forecast, history", [("reuse", 1), ("taylor", 2), ("fitted", 2), ("fitted", 3)])
@pytest.mark.parametrize("budget", [2, 3, 5])
def test_the_dynamic_programme_finds_the_best_schedule(forecast, history, budget):
    g = random_gram()
    weights_for = estimator(forecast, history, g)
    plan = best_plan(g, budget, weights_for, history)
    assert len(plan.computed) == budget and plan.computed[0] == 0
    assert set(plan.weights) == set(range(STEPS)) - set(plan.computed)
    assert plan.error == pytest.approx(brute_force(g, budget, weights_for, history))


def test_fitted_weights_are_least_squares():
    g = random_gram()
    weights = estimator("fitted", 2, g)((4, 2), 5)
    for other in ([1.0, 0.0], [2.0, -1.0], [weights[0] + 0.01, weights[1]]):
        assert stand_in_error(g, (4, 2), 5, weights) <= stand_in_error(g, (4, 2), 5, other)


def test_plans_round_trip_through_json():
    plan = best_plan(random_gram(), 3, estimator("fitted", 2, random_gram()), 2)
    assert Plan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize("budget", [0, STEPS + 1, 2.5])
def test_a_budget_outside_the_steps_is_refused(budget):
    with pytest.raises(ValueError, match=f"budget must be an integer in 1..{STEPS}"):
        best_plan(random_gram(), budget, estimator("reuse", 1), 1)


def test_the_oracle_plans_each_branch_from_a_rehearsal(cogview4):
    executor = cachelab.attach(cogview4, Oracle(budget=3, forecast="fitted", history=2))
    try:
        residuals = executor.rehearse(lambda: generate(cogview4, steps=STEPS, guidance_scale=3.0))
        image = generate(cogview4, steps=STEPS, guidance_scale=3.0)
    finally:
        cachelab.detach(cogview4)
    assert set(residuals) == {"cond", "uncond"} and all(len(r) == STEPS for r in residuals.values())
    for branch in ("cond", "uncond"):
        computed = [r.step for r in executor.trace if r.branch == branch and r.computed]
        assert computed == executor.policy.plans[branch].computed and len(computed) == 3
    assert torch.isfinite(image).all()


def test_the_oracle_refuses_to_run_without_a_rehearsal(flux):
    cachelab.attach(flux, Oracle(budget=3))
    try:
        with pytest.raises(RuntimeError, match="rehearse the same generation first"):
            generate(flux, steps=STEPS)
    finally:
        cachelab.detach(flux)


def test_the_oracle_bounds_fixed_interval_at_equal_compute(flux):
    """On the same generation, the oracle's reuse schedule stands in with less error than every-other-step."""
    executor = cachelab.attach(flux, Oracle(budget=4, forecast="reuse"))
    try:
        residuals = executor.rehearse(lambda: generate(flux, steps=STEPS))["cond"]
    finally:
        cachelab.detach(flux)
    g = np.array([[(a.double() * b.double()).sum().item() for b in residuals] for a in residuals])
    plan = executor.policy.plans["cond"]
    every_other = sum(stand_in_error(g, (s - 1,), s, [1.0]) for s in range(1, STEPS, 2))
    assert plan.error <= every_other + 1e-9


def test_learned_policy_calibrates_and_runs(flux):
    policy = learned_policy(flux, ["a photo of a cat", "a red dog"], budget=3, num_inference_steps=STEPS,
                            generator=torch.Generator().manual_seed(100), output_type="pt", height=32, width=32,
                            max_sequence_length=16)
    executor = cachelab.attach(flux, policy)
    try:
        image = generate(flux, steps=STEPS)
        assert sum(r.computed for r in executor.trace) == 3 and torch.isfinite(image).all()
        with pytest.raises(ValueError, match="follows a plan for 8 steps; this generation has 6"):
            generate(flux, steps=6)
    finally:
        cachelab.detach(flux)
    with pytest.raises(ValueError, match="no learned plan for budget=4 .* calibrated budgets: 3"):
        cachelab.attach(flux, Learned(4, plans=policy.plans))
    with pytest.raises(ValueError, match="no calibrated plans for this flux model"):
        cachelab.attach(flux, Learned(3))


def test_uncached_runs_sum_the_residual_gram_and_replay_each_generation(flux):
    kwargs = dict(num_inference_steps=4, output_type="pt", height=32, width=32, max_sequence_length=16)
    one = uncached_runs(flux, ["a cat"], generator=torch.Generator().manual_seed(1), **kwargs)
    two = uncached_runs(flux, ["a cat", "a cat"], generator=torch.Generator().manual_seed(1), **kwargs)
    assert one.gram.shape == (4, 4) and np.allclose(one.gram, one.gram.T)
    second = two.gram - one.gram  # the first generations are the same; the second one draws new noise
    assert np.linalg.eigvalsh(second).min() > -1e-6 * second.max() and not np.allclose(second, one.gram)
    replayed = flux(**two.replays[1]()).images.numpy()
    np.testing.assert_array_equal(replayed, two.outputs[1])


def test_refining_a_plan_does_not_raise_the_cached_error(flux):
    from cachelab.calibrate.learned import _cached_error, refine_plan

    kwargs = dict(num_inference_steps=STEPS, output_type="pt", height=32, width=32, max_sequence_length=16)
    runs = uncached_runs(flux, ["a cat", "a red dog"], generator=torch.Generator().manual_seed(3), **kwargs)
    plan = best_plan(runs.gram, 3, estimator("fitted", 2, runs.gram), 2)
    refined = refine_plan(flux, runs, plan, 2)
    assert len(refined.computed) == 3 and refined.computed[0] == 0
    assert _cached_error(flux, runs, refined) <= _cached_error(flux, runs, plan)


def test_learned_beats_taylorseer_at_equal_compute_on_the_digits_model(digits):
    """The shipped plans (fitted on seeds from 1000) against TaylorSeer on other seeds, 6 computed steps each."""
    reference, _ = generate_digits(digits, range(10), seed=3)
    learned, learned_steps = generate_digits(digits, range(10), 3, Learned(6))
    taylor, taylor_steps = generate_digits(digits, range(10), 3, cachelab.TaylorSeer(interval=6, order=1))
    assert learned_steps == taylor_steps == 6

    def psnr(images):
        return 10 * np.log10(1 / np.mean((images - reference) ** 2))

    assert psnr(learned) > psnr(taylor) + 3


class Gain(cachelab.CachePolicy):
    """A calibrated policy of a test: its only number comes from the calibration store."""

    name = "gain_for_tests"
    calibrated = ("gain",)
    published = {"flux": {"gain": 2.0}}

    def __init__(self, gain=None):
        self.gain = gain

    def decide(self, ctx):
        return cachelab.compute()


def test_a_new_calibrated_policy_reads_the_store_without_touching_anything_else(flux):
    assert numbers_for(Gain(), "flux") == {"gain": 2.0}
    executor = cachelab.attach(flux.transformer, Gain())
    cachelab.detach(flux.transformer)
    assert executor.policy.gain == 2.0
    transformer = tiny_flux_transformer()
    use_calibration(transformer, "gain_for_tests", gain=3.0)
    executor = cachelab.attach(transformer, Gain())
    assert executor.policy.gain == 3.0
    cachelab.detach(transformer)
    executor = cachelab.attach(transformer, Gain(gain=5.0))
    assert executor.policy.gain == 5.0
    with pytest.raises(ValueError, match="Gain has no calibrated gain for the cogview4 family"):
        Gain().for_model({}, "cogview4")


def tiny_flux_transformer():
    import tiny

    return tiny.flux_pipeline().transformer
