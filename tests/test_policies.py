"""TeaCache, fixed-interval caching, user-written policies and the policy registry."""

import numpy as np
import pytest
import torch
from tiny import generate, run_cached

import cachelab
from cachelab import CachePolicy, FixedInterval, NoCache, StepContext, TeaCache, compute, reuse
from cachelab.policies import make_policy, register_policy, registered_policies
from cachelab.policies.teacache import PUBLISHED_COEFFICIENTS

STEPS = 10
FLUX_COEFFICIENTS = PUBLISHED_COEFFICIENTS["flux"]


def run(pipe, policy, steps=STEPS, **kwargs):
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=steps, **kwargs))
    return executor.trace, image


def published_teacache(changes, threshold, coefficients):
    """TeaCache's accumulate-and-reset rule as published, from the relative change at every step (step 0: none):
    the decisions and the accumulated sum compared with ``threshold`` (None on the first and last steps)."""
    rescale = np.poly1d(coefficients)
    decisions, compared, accumulated = [], [], 0.0
    for step, change in enumerate(changes):
        if step == 0 or step == len(changes) - 1:
            should_calc, accumulated = True, 0.0
            compared.append(None)
        else:
            accumulated += rescale(change)
            compared.append(accumulated)
            should_calc = accumulated >= threshold
            if should_calc:
                accumulated = 0.0
        decisions.append(should_calc)
    return decisions, compared


def test_teacache_decisions_follow_the_published_rule(flux):
    inputs = []
    hook = flux.transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda module, args, kwargs: inputs.append((kwargs["hidden_states"], kwargs["temb"])), with_kwargs=True
    )
    try:
        trace, image = run(flux, TeaCache(threshold=0.6))
    finally:
        hook.remove()
    block = flux.transformer.transformer_blocks[0]
    modulated = [block.norm1(hidden, emb=temb)[0] for hidden, temb in inputs]
    changes = [None] + [((m - p).abs().mean() / p.abs().mean()).item() for p, m in zip(modulated, modulated[1:])]
    expected_computed, expected_signals = published_teacache(changes, 0.6, FLUX_COEFFICIENTS)
    computed = [r.computed for r in trace]
    assert computed == expected_computed
    assert computed[0] and computed[-1] and not all(computed), computed
    recorded = [r.signal for r in trace]  # the accumulated sum TeaCache compared with its threshold
    assert recorded[0] is None and recorded[-1] is None
    assert np.allclose(recorded[1:-1], expected_signals[1:-1], rtol=1e-5)


def test_teacache_takes_published_coefficients_from_the_model_spec(flux, cogview4):
    executor = cachelab.attach(flux, TeaCache(0.3))
    cachelab.detach(flux)
    assert executor.policy.coefficients == list(FLUX_COEFFICIENTS)
    with pytest.raises(ValueError, match="no published coefficients for the cogview4 family.*coefficients="):
        cachelab.attach(cogview4, TeaCache(0.3))
    trace, _ = run(cogview4, TeaCache(0.3, coefficients=[1.0, 0.0]), guidance_scale=3.0)
    assert {r.branch for r in trace} == {"cond", "uncond"}


def test_teacache_reuses_the_residual_of_all_blocks(flux):
    trace, image = run(flux, TeaCache(threshold=100.0))
    assert [r.computed for r in trace] == [True] + [False] * (STEPS - 2) + [True]
    _, plain = run(flux, NoCache())
    assert not torch.equal(image, plain)


@pytest.mark.parametrize("policy, computes", [
    (cachelab.FirstBlockCache(0.5), lambda signal, threshold: signal > threshold),
    (cachelab.DualBlockCache(0.5, compute_first=1, warmup_steps=2), lambda signal, threshold: signal > threshold),
    (TeaCache(0.6), lambda signal, threshold: signal >= threshold),
    (cachelab.MagCache(0.3, max_skip_steps=100, retention_ratio=0.0), lambda signal, threshold: signal > threshold),
], ids=lambda p: type(p).__name__ if isinstance(p, CachePolicy) else "")
def test_the_signal_is_the_value_compared_with_the_threshold(flux, policy, computes):
    trace, _ = run(flux, policy)
    compared = [r for r in trace if r.signal is not None]
    assert {r.computed for r in compared} == {True, False}, "the setting must both compute and reuse"
    assert all(r.computed == computes(r.signal, policy.threshold) for r in compared)
    assert trace[0].signal is None  # nothing to compare with at the first step


@pytest.mark.parametrize("policy", [NoCache(), FixedInterval(3), cachelab.TaylorSeer(3)])
def test_policies_without_a_threshold_record_no_signal(flux, policy):
    trace, _ = run(flux, policy)
    assert all(r.signal is None for r in trace)


@pytest.mark.parametrize(
    "interval, warmup, expected",
    [(2, 0, [0, 2, 4, 6, 8, 9]), (3, 2, [0, 1, 2, 5, 8, 9]), (1, 0, list(range(STEPS))), (4, 1, [0, 1, 5, 9])],
)
def test_fixed_interval_schedule(flux, interval, warmup, expected):
    trace, _ = run(flux, FixedInterval(interval=interval, warmup_steps=warmup))
    assert [r.step for r in trace if r.computed] == expected


class SkipEveryThird(CachePolicy):
    def decide(self, ctx: StepContext):
        return reuse() if ctx.step % 3 == 2 else compute()


@pytest.mark.parametrize(
    "name, kwargs, branches",
    [
        ("flux", {}, {"cond"}),
        ("cogview4", {"guidance_scale": 3.0}, {"cond", "uncond"}),
        ("sd3", {"guidance_scale": 3.0}, {"cond"}),  # batched CFG: one call per step
        ("wan", {"guidance_scale": 3.0}, {"cond", "uncond"}),
    ],
)
def test_a_policy_written_in_a_few_lines_runs_on_every_model(request, name, kwargs, branches):
    pipe = request.getfixturevalue(name)
    trace, image = run(pipe, SkipEveryThird(), steps=6, **kwargs)
    assert {r.branch for r in trace} == branches
    for branch in branches:
        assert [r.computed for r in trace if r.branch == branch] == [True, True, False] * 2
    _, plain = run(pipe, NoCache(), steps=6, **kwargs)
    assert not torch.equal(image, plain) and torch.isfinite(image).all()


def test_branch_state_is_never_mixed(cogview4):
    seen = []

    class Recorder(CachePolicy):
        def reset(self):
            self.steps = []

        def decide(self, ctx):
            self.steps.append(ctx.step)
            seen.append((ctx.branch, list(self.steps)))
            return compute()

    run(cogview4, Recorder(), steps=3, guidance_scale=3.0)
    assert seen == [
        ("cond", [0]), ("uncond", [0]), ("cond", [0, 1]), ("uncond", [0, 1]), ("cond", [0, 1, 2]), ("uncond", [0, 1, 2])
    ]


def test_registry_builds_policies_by_name(monkeypatch):
    from cachelab.policies import registry

    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    assert {"none", "first_block", "teacache", "fixed_interval"} <= set(registered_policies())
    assert make_policy("fixed_interval", interval=3).interval == 3

    @register_policy("test_every_step")
    class EveryStep(CachePolicy):
        def decide(self, ctx):
            return compute()

    assert isinstance(make_policy("test_every_step"), EveryStep)


def test_unknown_policy_lists_the_registered_names():
    with pytest.raises(ValueError, match="unknown cache policy 'first_blok'.*first_block.*teacache"):
        make_policy("first_blok")


@pytest.mark.parametrize("policy", ["first_block", "teacache"])
@pytest.mark.parametrize("bad", ["abc", -0.1, None, True])
def test_bad_thresholds_name_the_parameter(policy, bad):
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        make_policy(policy, threshold=bad)


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"interval": 1.5}, {"warmup_steps": -1}])
def test_bad_intervals_are_rejected(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        FixedInterval(**kwargs)


def test_a_policy_that_reuses_before_computing_gets_a_clear_error(flux):
    class AlwaysReuse(CachePolicy):
        def decide(self, ctx):
            return reuse()

    with pytest.raises(RuntimeError, match="nothing is cached yet"):
        run(flux, AlwaysReuse())
