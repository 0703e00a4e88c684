"""Block- and module-unit policies on the executor, and the block-work accounting of every call."""

import pytest
import tiny
import torch
from digits_runs import generate_digits

import cachelab
from cachelab.policies import CachePolicy, FirstBlockCache, compute, forecast, reuse
from cachelab.units import block_unit


class EveryOtherStepOddBlocks(CachePolicy):
    """Block unit: odd blocks reuse their residual at odd steps."""

    unit = "block"
    signals = ("block_input",)

    def reset(self):
        self.seen = []

    def decide(self, ctx):
        assert ctx.unit == block_unit(ctx.block) and ctx.signals["block_input"].ndim == 3
        self.seen.append((ctx.step, ctx.block, ctx.computed_steps))
        return reuse() if ctx.step % 2 and ctx.block % 2 else compute()


class AttentionEveryThirdStep(CachePolicy):
    """Module unit: attention computed every third step, forecast (order 1) or reused in between."""

    unit = "module"
    roles = ("attn",)
    history = 2

    def __init__(self, extrapolate=False):
        self.extrapolate = extrapolate

    def decide(self, ctx):
        assert ctx.role == "attn" and ctx.unit == f"block{ctx.block}.attn"
        if ctx.step % 3 == 0:
            return compute()
        if self.extrapolate and len(ctx.computed_steps) == 2:
            newest, older = ctx.computed_steps
            d = (ctx.step - newest) / (newest - older)
            return forecast([1 + d, -d])
        return reuse()


@pytest.fixture(scope="module")
def digits():
    from cachelab import zoo

    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_a_block_unit_policy_decides_every_block_with_its_own_history(digits):
    executor = cachelab.attach(digits, EveryOtherStepOddBlocks())
    try:
        images = digits(["a handwritten digit 3"], generator=torch.Generator().manual_seed(0), output_type="np").images
    finally:
        cachelab.detach(digits)
    blocks = len(executor.blocks)
    first, second = executor.trace[:2]
    assert first.unit == "block" and first.computed and first.work == 1.0
    assert [unit for unit, _ in second.units] == [block_unit(i) for i in range(blocks)]
    assert second.skipped_units == tuple(block_unit(i) for i in range(1, blocks, 2)) and not second.computed
    assert 0.3 < second.work < 0.7  # about half the blocks, weighted by their measured time
    assert torch.isfinite(torch.as_tensor(images)).all()


def test_a_block_unit_policy_that_always_computes_gives_the_uncached_images(digits):
    class Always(CachePolicy):
        unit = "block"

        def decide(self, ctx):
            return compute()

    uncached, _ = generate_digits(digits, [1, 7], seed=3)
    cached, computed = generate_digits(digits, [1, 7], seed=3, policy=Always())
    assert computed == 28 and torch.equal(torch.as_tensor(cached), torch.as_tensor(uncached))


def attention_difference(digits, extrapolate: bool) -> float:
    """Max image difference to uncached of the attention policy; checks its trace on the way."""
    uncached, _ = generate_digits(digits, [2, 5], seed=1)
    executor = cachelab.attach(digits, AttentionEveryThirdStep(extrapolate))
    try:
        images = digits(cachelab.zoo.prompts_for([2, 5]), generator=torch.Generator().manual_seed(1), output_type="np").images
    finally:
        cachelab.detach(digits)
    attention = [site for site in executor.sites]
    assert {site.role for site in attention} == {"attn"} and len(attention) == len(executor.blocks)
    skipped = executor.trace[1]
    assert skipped.unit == "module" and set(skipped.skipped_units) == {site.key for site in attention}
    assert 0.2 < skipped.work < 0.95  # attention only: the feed-forwards and norms still ran
    return float(abs(images - uncached).max())


def test_a_module_unit_policy_stands_in_for_attention_outputs_and_forecasts_them(digits):
    reused, forecast_ = attention_difference(digits, False), attention_difference(digits, True)
    assert 0 < forecast_ < reused < 0.5


def test_a_step_policys_skipped_calls_count_only_the_head_block_as_work(digits):
    executor = cachelab.attach(digits, FirstBlockCache(threshold=0.2))
    try:
        digits(["a handwritten digit 4"], generator=torch.Generator().manual_seed(0), output_type="np")
    finally:
        cachelab.detach(digits)
    share = executor.costs.of(block_unit(0)) / sum(executor.costs.of(block_unit(i)) for i in range(len(executor.blocks)))
    skipped = [r for r in executor.trace if not r.computed]
    assert skipped and all(r.unit == "step" and r.work == pytest.approx(share) for r in skipped)
    assert all(r.work == 1.0 for r in executor.trace if r.computed)


def test_module_roles_name_real_modules_in_every_family(flux, cogview4, sd3, wan):
    from cachelab.models.specs import blocks_of, spec_for
    from cachelab.units import ROLES, module_sites

    for pipe in (flux, cogview4, sd3, wan):
        spec = spec_for(pipe.transformer)
        blocks = [b for b, _ in blocks_of(pipe.transformer, spec)]
        sites = module_sites(blocks, spec.module_roles, ROLES)
        assert {s.block for s in sites if s.role == "attn"} == set(range(len(blocks))), spec.family
        assert {s.block for s in sites if s.role == "ff"} == set(range(len(blocks))), spec.family
        assert all(isinstance(s.module, torch.nn.Module) for s in sites)


def test_a_module_policy_runs_on_a_true_cfg_video_model_with_branches_apart(wan):
    executor = cachelab.attach(wan, AttentionEveryThirdStep())
    try:
        video = tiny.generate(wan, steps=6)
    finally:
        cachelab.detach(wan)
    assert {r.branch for r in executor.trace} == {"cond", "uncond"}
    assert any(r.skipped_units for r in executor.trace if r.branch == "uncond")
    assert torch.isfinite(video).all()


def test_unknown_units_and_roles_are_refused(flux):
    class Bad(CachePolicy):
        unit = "layer"

        def decide(self, ctx):
            return compute()

    class BadRole(AttentionEveryThirdStep):
        roles = ("mlp",)

    with pytest.raises(ValueError, match="unit is one of step, block, module"):
        cachelab.attach(flux, Bad())
    with pytest.raises(ValueError, match="module roles are attn, cross_attn, ff"):
        cachelab.attach(flux, BadRole())
