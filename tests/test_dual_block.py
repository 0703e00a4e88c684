"""DBCache: First Block Cache generalised to Fn head and Bn tail blocks."""

import pytest
import torch
from tiny import generate, run_cached

import cachelab
from cachelab import DualBlockCache, FirstBlockCache, StepContext

STEPS = 10


def run(pipe, policy, **kwargs):
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=STEPS, **kwargs))
    return executor, image


@pytest.mark.parametrize("name, kwargs", [("flux", {}), ("cogview4", {"guidance_scale": 3.0})])
def test_f1b0_without_warmup_is_first_block_cache(request, name, kwargs):
    pipe = request.getfixturevalue(name)
    fbc, fbc_image = run(pipe, FirstBlockCache(0.5), **kwargs)
    dbc, dbc_image = run(pipe, DualBlockCache(0.5, compute_first=1, compute_last=0, warmup_steps=0), **kwargs)
    assert [r.computed for r in dbc.trace] == [r.computed for r in fbc.trace]
    assert not all(r.computed for r in fbc.trace)
    assert torch.equal(dbc_image, fbc_image)


def test_tail_blocks_run_on_reused_steps_and_middle_blocks_do_not(flux):
    transformer = flux.transformer
    blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
    ran = []
    hooks = [next(block.children()).register_forward_pre_hook(lambda *_, i=i: ran[-1].add(i)) for i, block in enumerate(blocks)]
    hooks.append(transformer.register_forward_pre_hook(lambda *_: ran.append(set())))
    try:
        executor, image = run(flux, DualBlockCache(10.0, compute_first=2, compute_last=1, warmup_steps=1))
    finally:
        for hook in hooks:
            hook.remove()
    last = len(blocks) - 1
    for record, blocks_run in zip(executor.trace, ran):
        assert blocks_run == (set(range(len(blocks))) if record.computed else {0, 1, last})
    assert [r.computed for r in executor.trace] == [True] + [False] * (STEPS - 1)
    _, head_only = run(flux, DualBlockCache(10.0, compute_first=2, compute_last=0, warmup_steps=1))
    assert torch.isfinite(image).all() and not torch.equal(image, head_only)


@pytest.mark.parametrize("tail", [0, 1, 2])
def test_reusing_a_step_with_unchanged_inputs_reproduces_its_output(flux, tail):
    class ComputeThenReuse(DualBlockCache):
        def decide(self, ctx):
            return cachelab.compute() if ctx.step == 0 else cachelab.reuse()

    transformer = flux.transformer
    torch.manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 4, 32),
        pooled_projections=torch.randn(1, 32), txt_ids=torch.zeros(4, 3), img_ids=torch.zeros(16, 3),
        timestep=torch.tensor([0.5]),
    )
    executor = cachelab.attach(transformer, ComputeThenReuse(compute_first=1, compute_last=tail))
    try:
        outputs = []
        for _ in range(2):
            with transformer.cache_context("cond"):
                outputs.append(transformer(**inputs).sample)
    finally:
        cachelab.detach(transformer)
    assert [r.computed for r in executor.trace] == [True, False]
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def test_warmup_and_limits():
    policy = DualBlockCache(0.1, warmup_steps=2, max_cached_steps=2, max_continuous_cached_steps=1)
    policy.reset()
    residual = torch.ones(4)
    decisions = [policy.decide(StepContext(step, 7, "cond", signals={"head_residual": residual})) for step in range(7)]
    assert [d.compute for d in decisions] == [True, True, False, True, False, True, True]


def test_block_counts_are_checked(flux):
    with pytest.raises(ValueError, match="compute_first must be an integer >= 1"):
        DualBlockCache(compute_first=0)
    with pytest.raises(ValueError, match="4 head and 1 tail blocks; this model has 5"):
        cachelab.attach(flux, DualBlockCache(compute_first=4, compute_last=1))
