"""The specs of the families without a tiny pipeline: a manual denoising loop on a bare transformer."""

import pytest
import torch
from families import FAMILIES

import cachelab
from cachelab import CachePolicy, FirstBlockCache, NoCache, TeaCache, compute, reuse
from cachelab.models import spec_for

TIMESTEPS = (999, 750, 500, 250)


def denoise(transformer, inputs):
    """Euler-like loop: each step feeds the model's output back, so a reused step changes what follows."""
    hidden = inputs["hidden_states"]
    for t in TIMESTEPS:
        out = transformer(**{**inputs, "hidden_states": hidden}, timestep=torch.tensor([t]), return_dict=False)[0]
        hidden = hidden - 0.25 * out
    return hidden


class ReuseOddSteps(CachePolicy):
    def decide(self, ctx):
        return reuse() if ctx.step % 2 else compute()


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    torch.manual_seed(0)
    model, inputs = FAMILIES[request.param]()
    return request.param, model.eval(), inputs


def run(transformer, inputs, policy):
    executor = cachelab.attach(transformer, policy, num_steps=len(TIMESTEPS))
    try:
        with torch.no_grad():
            return executor, denoise(transformer, inputs)
    finally:
        cachelab.detach(transformer)


def test_spec_matches_the_family(family):
    name, transformer, _ = family
    assert spec_for(transformer).family == name


def test_no_cache_is_bitwise_identical(family):
    _, transformer, inputs = family
    with torch.no_grad():
        plain = denoise(transformer, inputs)
    _, cached = run(transformer, inputs, NoCache())
    assert torch.equal(cached, plain)


@pytest.mark.parametrize("policy", [ReuseOddSteps(), FirstBlockCache(threshold=10.0), TeaCache(10.0, [1.0, 0.0])])
def test_reused_steps_change_the_output_and_stay_finite(family, policy):
    _, transformer, inputs = family
    with torch.no_grad():
        plain = denoise(transformer, inputs)
    executor, cached = run(transformer, inputs, policy)
    computed = [r.computed for r in executor.trace]
    assert computed[0] and not all(computed), computed
    assert torch.isfinite(cached).all() and not torch.equal(cached, plain)
