"""Stacks: a step policy decides first, block and module policies decide inside what it computes. A level that
always computes changes nothing (the stack equals its other level, bit for bit); a real stack skips at both levels,
records both in the trace and the block-work accounting; stand-ins of every forecaster run at every unit."""

import pytest
import torch
from tiny import generate, run_cached

import cachelab
from cachelab.policies import DBPrune, FirstBlockCache, FixedInterval, Fora, PyramidAttentionBroadcast, Stack, TaylorSeer


def pruning(**kwargs):
    return DBPrune(threshold=1.0, compute_first=1, warmup_steps=1, **kwargs)


def run(pipe, policy, **kwargs):
    return run_cached(pipe, policy, lambda: generate(pipe, steps=8), **kwargs)


@pytest.mark.parametrize("inner", [PyramidAttentionBroadcast(spatial_attention_block_skip_range=2), pruning()])
def test_a_step_level_that_always_computes_changes_nothing(flux, inner):
    alone, _ = run(flux, inner)
    stacked, executor = run(flux, [FixedInterval(interval=1), inner])
    assert torch.equal(alone, stacked)
    assert executor.trace[0].unit == f"step+{inner.unit}"


def test_an_inner_level_that_always_computes_changes_nothing(flux):
    alone, single = run(flux, FirstBlockCache(threshold=0.3))
    stacked, executor = run(flux, Stack([Fora(interval=1), FirstBlockCache(threshold=0.3)]))
    assert torch.equal(alone, stacked)
    assert [r.computed for r in executor.trace] == [r.computed for r in single.trace]


def test_first_block_with_pab_skips_at_both_levels_and_modules_decide_only_in_computed_steps(flux):
    uncached, _ = run(flux, cachelab.NoCache())
    images, executor = run(flux, [FirstBlockCache(threshold=0.3), PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)])
    skipped_steps = [r for r in executor.trace if not r.computed and not r.units]
    computed_with_modules_skipped = [r for r in executor.trace if any(not c for _, c in r.units)]
    assert skipped_steps and computed_with_modules_skipped
    assert all(r.work < 1 for r in computed_with_modules_skipped)
    assert torch.isfinite(images).all() and not torch.equal(images, uncached)


def test_a_stack_holds_one_policy_per_unit():
    with pytest.raises(ValueError, match="one policy per unit"):
        Stack([FirstBlockCache(0.1), FixedInterval(interval=2)])
    assert [p.unit for p in Stack(["pab", {"name": "first_block", "threshold": 0.2}]).policies] == ["step", "module"]


@pytest.mark.parametrize("forecaster", ["reuse", "taylor", "taylor_diffusers", "hermite", "foca", "dmd"])
@pytest.mark.parametrize("make", [lambda f: FirstBlockCache(0.3, forecaster=f), lambda f: pruning(forecaster=f),
                                  lambda f: TaylorSeer(interval=2, unit="module", forecaster=f)], ids=["step", "block", "module"])
def test_every_forecaster_stands_in_at_every_unit(flux, make, forecaster):
    images, executor = run(flux, make(forecaster))
    assert torch.isfinite(images).all()
    assert any(not r.computed for r in executor.trace)


def test_a_new_signal_is_one_registered_function(flux):
    from cachelab.policies import CachePolicy, compute, register_signal, reuse

    @register_signal("head_residual_norm", "head")
    def head_residual_norm(hidden, input_hidden):
        return (hidden - input_hidden).norm()

    class NormGate(CachePolicy):
        signals, head_blocks = ("head_residual_norm",), 1

        def decide(self, ctx):
            return compute() if ctx.step % 2 == 0 else reuse(float(ctx.signals["head_residual_norm"]))

    _, executor = run(flux, NormGate())
    assert [r.computed for r in executor.trace] == [True, False] * 4
    assert all(r.signal > 0 for r in executor.trace if not r.computed)


def test_kept_bytes_are_the_kept_tensors_per_unit_kind_and_their_peak(flux):
    _, executor = run(flux, [FirstBlockCache(threshold=0.3, forecaster="taylor", forecaster_order=2),
                             PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)])
    step = executor._branches["cond"].kept["step"]
    hidden, encoder = step.outputs[0]
    assert len(step.outputs) == 3  # order 2: three residuals kept
    assert executor.kept_bytes()["step"] == 3 * (hidden.nbytes + encoder.nbytes)
    modules = [k for key, k in executor._branches["cond"].kept.items() if "." in key]
    assert executor.kept_bytes()["module"] == sum(k.nbytes() for k in modules) > 0
    assert executor.kept_peak["total"] >= executor.kept_bytes()["step"] + executor.kept_bytes()["module"]


def test_a_module_called_twice_in_its_block_keeps_a_store_per_call(cogview4):
    """CogView4's blocks run their ff on the image tokens, then on the text tokens: each call stands in for itself."""
    uncached = generate(cogview4, steps=6)
    cachelab.attach(cogview4, Fora(interval=1))
    try:
        assert torch.equal(generate(cogview4, steps=6), uncached)
    finally:
        cachelab.detach(cogview4)
    images, executor = run(cogview4, Fora(interval=2))
    keys = set(executor._branches["cond"].kept)
    assert {"block0.ff", "block0.ff#1"} <= keys and torch.isfinite(images).all()
