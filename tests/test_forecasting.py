"""Forecast decisions in the executor, Taylor weights and the TaylorSeer policy."""

import numpy as np
import pytest
import torch
from digits_runs import generate_digits
from tiny import generate, run_cached

import cachelab
from cachelab import CachePolicy, FixedInterval, TaylorSeer, compute, forecast, reuse
from cachelab.policies.taylor import taylor_weights

STEPS = 10


def run(pipe, policy, steps=STEPS):
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=steps))
    return executor.trace, image


def stateful_taylor(computed: dict[int, float], target: int, order: int) -> float:
    """TaylorSeer as published: on each computed step update the derivative ladder by finite differences
    over the step distance; forecast sum_i D_i d^i / i! from the newest ladder."""
    ladder, last = [], None
    for step, value in sorted(computed.items()):
        new = [value]
        if last is not None and step >= 3:
            for i in range(min(order, len(ladder))):
                new.append((new[i] - ladder[i]) / (step - last))
        ladder, last = new, step
    return sum(d * (target - last) ** i / np.prod(range(1, i + 1)) for i, d in enumerate(ladder))


@pytest.mark.parametrize("order, steps", [(1, (9, 6)), (2, (12, 9, 6)), (2, (11, 7, 6, 3)), (3, (14, 11, 7, 6, 3))])
def test_taylor_weights_are_the_published_ladder_as_a_linear_combination(order, steps):
    values = dict(zip(steps, np.random.default_rng(order).normal(size=len(steps))))
    for target in (steps[0] + 1, steps[0] + 3):
        weights = taylor_weights(steps, target, order)
        assert len(weights) == order + 1
        forecast_value = np.dot(weights, [values[s] for s in steps[: order + 1]])
        assert forecast_value == pytest.approx(stateful_taylor(values, target, order))


def test_order_1_extrapolates_lines_exactly():
    weights = taylor_weights([9, 4], 12, 1)
    assert np.dot(weights, [0.3 - 0.2 * 9, 0.3 - 0.2 * 4]) == pytest.approx(0.3 - 0.2 * 12)


def test_taylor_weights_fall_back_to_what_was_computed():
    assert taylor_weights([7], 9, 2) == [1.0]  # one computed step: reuse
    assert taylor_weights([5, 2, 0], 6, 0) == [1.0]
    assert taylor_weights([2, 0], 3, 1)[0] == 1.0  # no derivative before step 3 (cache-dit's rule)


class Scripted(CachePolicy):
    """Computes the first two steps, then answers every step with ``answer``."""

    history = 2

    def __init__(self, answer):
        self.answer = answer

    def decide(self, ctx):
        return compute() if ctx.step < 2 else self.answer


def test_a_forecast_applies_the_weighted_kept_residuals(flux):
    transformer = flux.transformer
    inputs, outputs = [], []
    hooks = [
        transformer.transformer_blocks[0].register_forward_pre_hook(
            lambda module, args, kwargs: inputs.append(kwargs["hidden_states"]), with_kwargs=True),
        transformer.norm_out.register_forward_pre_hook(lambda module, args: outputs.append(args[0])),
    ]
    try:
        trace, _ = run(flux, Scripted(forecast([2.0, -1.0])), steps=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert [r.computed for r in trace] == [True, True, False]
    residuals = [out - inp for out, inp in zip(outputs[:2], inputs[:2])]
    torch.testing.assert_close(outputs[2], inputs[2] + 2.0 * residuals[1] - residuals[0])


def test_a_forecast_with_more_weights_than_kept_residuals_reuses(flux):
    class EarlyForecast(Scripted):
        history = 3

        def decide(self, ctx):
            return compute() if ctx.step < 2 else forecast([3.0, -2.0, 0.5])

    _, reused = run(flux, Scripted(reuse()))
    _, forecast_too_early = run(flux, EarlyForecast(None))
    assert torch.equal(reused, forecast_too_early)


def test_policies_see_the_kept_steps(flux):
    seen = []

    class Watch(TaylorSeer):
        def decide(self, ctx):
            seen.append(ctx.computed_steps)
            return super().decide(ctx)

    run(flux, Watch(interval=3, order=2), steps=8)
    assert seen[:8] == [(), (0,), (0,), (0,), (3, 0), (3, 0), (3, 0), (6, 3, 0)]


def test_taylorseer_order_0_is_fixed_interval(flux):
    fixed_trace, fixed = run(flux, FixedInterval(interval=3, warmup_steps=1))
    taylor_trace, taylor = run(flux, TaylorSeer(interval=3, order=0, warmup_steps=1))
    assert [r.computed for r in taylor_trace] == [r.computed for r in fixed_trace]
    assert torch.equal(taylor, fixed)
    _, order_1 = run(flux, TaylorSeer(interval=3, order=1, warmup_steps=1))
    assert not torch.allclose(order_1, fixed)


def test_forecasting_beats_reuse_on_the_digits_model(digits):
    reference, _ = generate_digits(digits, [3, 8], seed=5)

    def error(policy):
        return float(np.mean((generate_digits(digits, [3, 8], 5, policy)[0] - reference) ** 2))

    assert error(TaylorSeer(interval=4, order=1)) < error(FixedInterval(interval=4)) / 4
    assert error(cachelab.FirstBlockCache(0.3, taylor_order=1)) < error(cachelab.FirstBlockCache(0.3))


@pytest.mark.parametrize("make, message", [
    (lambda: TaylorSeer(order=-1), "order must be an integer >= 0"),
    (lambda: TaylorSeer(interval=0), "interval must be an integer >= 1"),
    (lambda: cachelab.FirstBlockCache(0.1, taylor_order=1.5), "taylor_order must be an integer"),
    (lambda: cachelab.DualBlockCache(taylor_order=-2), "taylor_order must be an integer >= 0"),
])
def test_bad_forecast_settings_fail_early(make, message):
    with pytest.raises(ValueError, match=message):
        make()
