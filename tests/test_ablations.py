"""The TeaCache-ablation indicators (cachelab/ablations/indicators.py) and threshold matching."""

import math

import pytest
import torch

import cachelab
from cachelab import zoo
from cachelab.ablations.indicators import TimestepEmbeddingChange, UncachedResidualChange
from cachelab.ablations.matching import match_threshold
from cachelab.policies.base import relative_l1

STEPS = 8


def call(pipe, seed=3):
    return pipe(zoo.prompts_for([7]), num_inference_steps=STEPS, generator=torch.Generator().manual_seed(seed),
                output_type="np").images


def test_the_timestep_embedding_change_is_that_of_the_models_own_time_projection(digits):
    projections = []
    hook = digits.transformer.time_text_embed.time_proj.register_forward_hook(lambda m, a, out: projections.append(out))
    executor = cachelab.attach(digits, TimestepEmbeddingChange(threshold=0.0))  # threshold 0: every step computes
    try:
        call(digits)
    finally:
        cachelab.detach(digits)
        hook.remove()
    model_changes = [relative_l1(current, previous) for previous, current in zip(projections, projections[1:])]
    signals = [record.signal for record in executor.trace]
    assert all(record.computed for record in executor.trace)
    assert signals[0] is None and signals[-1] is None  # the first and last steps compute without comparing
    assert signals[1:-1] == pytest.approx(model_changes[:-1], rel=1e-4)


def test_the_uncached_residual_change_follows_teacaches_rule_over_the_rehearsed_residuals(digits):
    policy = UncachedResidualChange(threshold=0.4)
    executor = cachelab.attach(digits, policy)
    try:
        residuals = executor.rehearse(lambda: call(digits))["cond"]
        call(digits)
    finally:
        cachelab.detach(digits)
    expected, accumulated = [], 0.0
    for step in range(STEPS):
        if step in (0, STEPS - 1):
            accumulated, computed = 0.0, True
        else:
            accumulated += relative_l1(residuals[step], residuals[step - 1])
            computed = accumulated >= policy.threshold
            accumulated = 0.0 if computed else accumulated
        expected.append(computed)
    assert [record.computed for record in executor.trace] == expected
    assert 2 < sum(expected) < STEPS


def test_the_uncached_residual_change_needs_a_rehearsal(digits):
    cachelab.attach(digits, UncachedResidualChange(threshold=0.1))
    try:
        with pytest.raises(RuntimeError, match="rehearse the same generation first"):
            call(digits)
    finally:
        cachelab.detach(digits)


def test_match_threshold_finds_the_threshold_of_a_target_number_of_steps():
    def computed_steps(threshold):  # falls with the threshold, like a caching policy's
        return max(2, min(28, round(12 - 4 * math.log10(threshold))))

    threshold, steps = match_threshold(computed_steps, 9, 1e-4, 100)
    assert steps == 9 == computed_steps(threshold)
    with pytest.raises(ValueError, match="need 0 < low < high"):
        match_threshold(computed_steps, 9, 1.0, 0.5)
