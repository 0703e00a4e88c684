"""First Block Cache against diffusers' own ``apply_first_block_cache`` on the same pipeline and seed."""

import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

import cachelab
from cachelab import FirstBlockCache
from tiny import generate

STEPS = 10
THRESHOLDS = (0.05, 0.2, 0.5, 1.0)
MODELS = [("flux", {}), ("cogview4", {"guidance_scale": 3.0})]


def last_block(transformer):
    lists = [transformer.transformer_blocks]
    if hasattr(transformer, "single_transformer_blocks"):
        lists.append(transformer.single_transformer_blocks)
    return lists[-1][-1]


def diffusers_decisions(pipe, threshold, kwargs):
    """Run diffusers' First Block Cache; a call computed iff a layer inside the last block ran."""
    decisions = []
    transformer = pipe.transformer
    on_call = transformer.register_forward_pre_hook(lambda *_: decisions.append(False))
    on_tail = next(last_block(transformer).children()).register_forward_pre_hook(lambda *_: decisions.__setitem__(-1, True))
    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        image = generate(pipe, steps=STEPS, **kwargs)
    finally:
        transformer.disable_cache()
        on_call.remove()
        on_tail.remove()
    return decisions, image


@pytest.mark.parametrize("name, kwargs", MODELS)
def test_decisions_and_images_match_diffusers(request, name, kwargs):
    pipe = request.getfixturevalue(name)
    skipped = {}
    for threshold in THRESHOLDS:
        expected, reference = diffusers_decisions(pipe, threshold, kwargs)
        executor = cachelab.attach(pipe, FirstBlockCache(threshold))
        try:
            image = generate(pipe, steps=STEPS, **kwargs)
        finally:
            cachelab.detach(pipe)
        assert [r.computed for r in executor.trace] == expected, f"threshold {threshold}"
        assert (image - reference).abs().max().item() <= 1e-5
        skipped[threshold] = expected.count(False)
    assert skipped[0.05] == 0 and skipped[1.0] > 0, f"the thresholds must span computing and skipping: {skipped}"
    if "guidance_scale" in kwargs:
        assert {r.branch for r in executor.trace} == {"cond", "uncond"}


def test_the_default_threshold_is_diffusers_default():
    assert FirstBlockCache().threshold == FirstBlockCacheConfig().threshold == 0.05


def test_first_call_computes_and_change_is_measured_from_the_last_computed_step():
    from cachelab import StepContext

    policy = FirstBlockCache(threshold=0.15)
    residuals = [torch.ones(4), torch.full((4,), 1.1), torch.full((4,), 1.2), torch.full((4,), 1.05)]
    decisions = [policy.decide(StepContext(i, 4, "cond", signals={"head_residual": r})) for i, r in enumerate(residuals)]
    # 1.1 vs 1.0 -> 0.1 (reuse); 1.2 vs 1.0 -> 0.2 (compute); 1.05 vs 1.2 -> 0.125 (reuse)
    assert [d.compute for d in decisions] == [True, False, True, False]
    assert decisions[0].signal is None
    assert [round(d.signal, 6) for d in decisions[1:]] == [0.1, 0.2, 0.125]
