"""The executor on unmodified diffusers pipelines: parity with the plain pipeline, wiring, errors."""

import pytest
import torch
from tiny import generate

import cachelab
from cachelab import FirstBlockCache, FixedInterval, NoCache

CFG = {"guidance_scale": 3.0}


@pytest.fixture
def attached():
    """Attach through this fixture so that a failing test never leaves a pipeline cached."""
    pipes = []

    def attach(pipe, policy, **kwargs):
        pipes.append(pipe)
        return cachelab.attach(pipe, policy, **kwargs)

    yield attach
    for pipe in pipes:
        cachelab.detach(pipe)


@pytest.mark.parametrize("name, kwargs", [("flux", {}), ("cogview4", CFG)])
def test_no_cache_is_bitwise_identical_to_the_plain_pipeline(request, attached, name, kwargs):
    pipe = request.getfixturevalue(name)
    plain = generate(pipe, **kwargs)
    executor = attached(pipe, NoCache())
    assert torch.equal(generate(pipe, **kwargs), plain)
    assert all(record.computed for record in executor.trace)


def test_trace_has_one_record_per_transformer_call_per_branch(cogview4, attached):
    executor = attached(cogview4, FirstBlockCache(0.2))
    generate(cogview4, steps=5, **CFG)
    assert [(r.step, r.branch) for r in executor.trace] == [
        (step, branch) for step in range(5) for branch in ("cond", "uncond")
    ]
    assert all(r.seconds > 0 for r in executor.trace)
    timesteps = [r.timestep for r in executor.trace if r.branch == "cond"]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == 5


def test_every_pipeline_call_starts_a_new_generation(cogview4, attached):
    executor = attached(cogview4, FirstBlockCache(0.2))
    first = generate(cogview4, steps=8, **CFG)
    first_trace = [(r.step, r.branch, r.computed) for r in executor.trace]
    second = generate(cogview4, steps=8, **CFG)
    assert [(r.step, r.branch, r.computed) for r in executor.trace] == first_trace
    assert torch.equal(first, second)
    assert not all(computed for _, _, computed in first_trace), "threshold should skip some steps"


def test_branches_are_found_without_cache_context(cogview4, attached):
    executor = attached(cogview4, FirstBlockCache(0.2))
    with_context = generate(cogview4, steps=8, **CFG)
    decisions = [(r.step, r.branch, r.computed) for r in executor.trace]
    # A pipeline that never calls cache_context: the executor counts calls between scheduler steps.
    wrapped = cogview4.transformer.cache_context
    cogview4.transformer.cache_context = lambda name, **kwargs: torch.no_grad()
    try:
        without_context = generate(cogview4, steps=8, **CFG)
    finally:
        cogview4.transformer.cache_context = wrapped
    assert [(r.step, r.branch, r.computed) for r in executor.trace] == decisions
    assert torch.equal(with_context, without_context)


def test_bare_transformer_finds_steps_and_generations_from_timesteps(flux, attached):
    transformer = flux.transformer
    executor = attached(transformer, FixedInterval(interval=2), num_steps=4)
    torch.manual_seed(0)
    inputs = dict(
        hidden_states=torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 4, 32),
        pooled_projections=torch.randn(1, 32), txt_ids=torch.zeros(4, 3), img_ids=torch.zeros(16, 3),
    )
    outputs = []
    for _ in range(2):
        for t in (1.0, 0.75, 0.5, 0.25):
            for _branch in range(2):
                outputs.append(transformer(timestep=torch.tensor([t]), **inputs).sample)
    assert [(r.step, r.branch, r.computed) for r in executor.trace] == [
        (step, branch, step in (0, 2, 3)) for step in range(4) for branch in ("cond", "uncond")
    ]
    assert torch.equal(outputs[0], outputs[8])


def test_attaching_twice_raises_and_detach_restores_bitwise_output(flux):
    plain = generate(flux)
    modules = [flux.transformer, *flux.transformer.transformer_blocks, *flux.transformer.single_transformer_blocks]
    own_forwards = [module.__dict__.get("forward") for module in modules]
    cachelab.attach(flux, FirstBlockCache(1.0))
    try:
        with pytest.raises(RuntimeError, match="already runs FirstBlockCache.*detach"):
            cachelab.attach(flux, NoCache())
        assert not torch.equal(generate(flux), plain)
    finally:
        cachelab.detach(flux)
    assert [module.__dict__.get("forward") for module in modules] == own_forwards
    assert "_cachelab_executor" not in flux.transformer.__dict__
    assert torch.equal(generate(flux), plain)
    assert cachelab.detach(flux) is None


def test_unknown_transformer_layout_names_the_class_and_the_fix():
    class MyDiT(torch.nn.Module):
        pass

    with pytest.raises(ValueError, match="no model spec for MyDiT.*register_spec"):
        cachelab.attach(MyDiT(), FirstBlockCache())


def test_attach_rejects_what_is_not_a_policy(flux):
    with pytest.raises(TypeError, match="CachePolicy instance"):
        cachelab.attach(flux, "first_block")
    assert "_cachelab_executor" not in flux.transformer.__dict__


def test_attach_refuses_a_transformer_with_a_diffusers_cache(flux):
    from diffusers.hooks import FirstBlockCacheConfig

    flux.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    try:
        with pytest.raises(RuntimeError, match="diffusers cache enabled.*disable_cache"):
            cachelab.attach(flux, NoCache())
    finally:
        flux.transformer.disable_cache()


@pytest.mark.parametrize(
    "attributes, message",
    [({"signals": ("attention_map",)}, "unknown signals"), ({"head_blocks": 99}, "wants 99 head and 0 tail blocks")],
)
def test_a_policy_asking_for_what_the_model_cannot_give_is_refused(flux, attributes, message):
    policy_class = type("Demanding", (cachelab.CachePolicy,), {"decide": lambda self, ctx: None, **attributes})
    with pytest.raises(ValueError, match=message):
        cachelab.attach(flux, policy_class())
    assert "_cachelab_executor" not in flux.transformer.__dict__


TRUE_CFG = {"true_cfg_scale": 3.0, "negative_prompt": "a red dog"}


def branch_decisions(trace, branch):
    return [record.computed for record in trace if record.branch == branch]


def run_cfg(pipe, policy, cfg_decisions, steps=10):
    executor = cachelab.attach(pipe, policy, cfg_decisions=cfg_decisions)
    try:
        image = generate(pipe, steps=steps, **TRUE_CFG)
        return executor.trace, image
    finally:
        cachelab.detach(pipe)


def test_shared_cfg_decisions_are_the_cond_branch_decisions(flux):
    asked = []

    class Watched(FirstBlockCache):
        def decide(self, ctx):
            asked.append(ctx.branch)
            return super().decide(ctx)

    separate, _ = run_cfg(flux, Watched(0.5), "separate")
    cond, uncond = branch_decisions(separate, "cond"), branch_decisions(separate, "uncond")
    assert cond != uncond, "the test needs a setting where separate branches disagree"
    asked.clear()
    shared, _ = run_cfg(flux, Watched(0.5), "shared")
    assert branch_decisions(shared, "uncond") == branch_decisions(shared, "cond")
    assert set(asked) == {"cond"} and len(asked) == 10
    # Both runs see the same latents until the first step where separate's branches disagreed.
    first_disagreement = next(step for step, (c, u) in enumerate(zip(cond, uncond)) if c != u)
    assert branch_decisions(shared, "cond")[: first_disagreement + 1] == cond[: first_disagreement + 1]
    signals = {(r.step, r.branch): r.signal for r in shared}
    assert all(signals[step, "uncond"] == signals[step, "cond"] for step in range(10))


def test_shared_decisions_apply_each_branch_its_own_residuals(flux):
    # TaylorSeer decides by step alone, so both modes decide alike: the images match only if each
    # branch still forecasts from its own kept residuals.
    separate_trace, separate = run_cfg(flux, cachelab.TaylorSeer(interval=3, order=1), "separate")
    shared_trace, shared = run_cfg(flux, cachelab.TaylorSeer(interval=3, order=1), "shared")
    assert [(r.step, r.branch, r.computed) for r in shared_trace] == [(r.step, r.branch, r.computed) for r in separate_trace]
    assert not all(r.computed for r in shared_trace)
    assert torch.equal(shared, separate)


def test_unknown_cfg_decisions_are_refused(flux):
    with pytest.raises(ValueError, match="cfg_decisions must be 'separate' or 'shared', got 'joint'"):
        cachelab.attach(flux, NoCache(), cfg_decisions="joint")
    assert "_cachelab_executor" not in flux.transformer.__dict__
