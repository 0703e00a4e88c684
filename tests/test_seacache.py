"""SeaCache against diffusers' own (diffusers.hooks.sea_cache, 0.42) on the embedded video model and a tiny Wan:
same decisions, same videos; its indicator as a signal for other policies; its rules one by one."""

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.hooks import SeaCacheConfig
from tiny import generate

import cachelab
from cachelab import CachePolicy, StepContext, compute, zoo
from cachelab.policies.seacache import SeaCache, sea_filter
from cachelab.zoo.video_data import all_video_prompts

STEPS = 12
SETTINGS = [dict(threshold=0.1), dict(threshold=0.3), dict(threshold=0.3, residual_order=0),
            dict(threshold=1.0, max_consecutive_cached=0, cache_end_steps=2, retention_steps=2)]


@pytest.fixture(scope="module")
def video_digits():
    pipe = zoo.load_pipeline("video_digits")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def diffusers_run(pipe, config, call):
    """diffusers' SeaCache on the pipeline: (computed per transformer call, frames)."""
    decisions = []
    transformer = pipe.transformer
    on_call = transformer.register_forward_pre_hook(lambda *_: decisions.append(False))
    on_tail = next(transformer.blocks[-1].children()).register_forward_pre_hook(lambda *_: decisions.__setitem__(-1, True))
    transformer.enable_cache(config)
    try:
        frames = call()
    finally:
        transformer.disable_cache()
        on_call.remove()
        on_tail.remove()
    return decisions, frames


def cachelab_run(pipe, policy, call):
    executor = cachelab.attach(pipe, policy)
    try:
        frames = call()
        return [r.computed for r in executor.trace], frames
    finally:
        cachelab.detach(pipe)


def video_call(pipe, steps=STEPS):
    prompts = all_video_prompts()[::13]  # digits 0, 3, 6, 9, every direction once
    return lambda: torch.from_numpy(pipe(prompts, num_inference_steps=steps, output_type="np",
                                         generator=torch.Generator().manual_seed(0)).frames)


def assert_parity(pipe, settings, call, atol=2e-5):
    expected, reference = diffusers_run(pipe, SeaCacheConfig(**settings), call)
    got, frames = cachelab_run(pipe, SeaCache(**settings), call)
    assert got == expected, settings
    assert (frames - reference).abs().max().item() <= atol
    return expected.count(False)


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
def test_matches_diffusers_on_the_video_model(video_digits, settings):
    skipped = assert_parity(video_digits, settings, video_call(video_digits))
    assert (skipped > 0) == (settings["threshold"] > 0.1), f"{skipped} skipped calls"


def test_matches_diffusers_with_a_scheduler_that_passes_sigma_as_the_timestep(video_digits, monkeypatch):
    """FlowMatchEuler's timestep is exactly 1000 sigma: the indicators agree to float precision, whatever the step."""
    monkeypatch.setattr(video_digits, "scheduler", FlowMatchEulerDiscreteScheduler(shift=3.0))
    for threshold in (0.2, 0.5):
        assert assert_parity(video_digits, dict(threshold=threshold), video_call(video_digits)) > 0


@pytest.mark.parametrize("order", [0, 1])
def test_matches_diffusers_on_a_tiny_wan(wan, order):
    call = lambda: generate(wan, steps=STEPS, guidance_scale=3.0)  # noqa: E731
    assert assert_parity(wan, dict(threshold=0.3, residual_order=order), call) > 0


def test_shared_cfg_decisions_follow_the_cond_branch(video_digits):
    executor = cachelab.attach(video_digits, SeaCache(threshold=0.3), cfg_decisions="shared")
    try:
        video_call(video_digits)()
    finally:
        cachelab.detach(video_digits)
    by_branch = {b: [r.computed for r in executor.trace if r.branch == b] for b in ("cond", "uncond")}
    assert by_branch["cond"] == by_branch["uncond"] and not all(by_branch["cond"])


def test_the_indicator_is_a_signal_for_other_policies(video_digits):
    seen = []

    class Watcher(CachePolicy):
        signals = ("sea_indicator",)

        def decide(self, ctx):
            seen.append((ctx.step, ctx.sigma, ctx.signals["sea_indicator"]))
            return compute()

    latents = []
    hook = video_digits.transformer.register_forward_pre_hook(lambda _, args, kwargs: latents.append(kwargs["hidden_states"]),
                                                              with_kwargs=True)
    try:
        cachelab_run(video_digits, Watcher(), video_call(video_digits, steps=3))
    finally:
        hook.remove()
    assert len(seen) == len(latents) == 6
    for (step, sigma, indicator), latent in zip(seen, latents):  # at the sigma the pipeline's cache_context says
        assert sigma == float(video_digits.scheduler.sigmas[step])
        torch.testing.assert_close(indicator, sea_filter(latent, sigma, 3.0))
        assert indicator.shape == latent.shape and not torch.equal(indicator, latent)


def ctx(step, indicator, computed=(), num_steps=10):
    return StepContext(step, num_steps, "cond", signals={"sea_indicator": torch.full((1, 2, 1, 2, 2), indicator)},
                       computed_steps=computed)


def test_accumulates_the_change_and_forecasts_from_the_last_two_computed_steps():
    policy = SeaCache(threshold=0.25)
    first = policy.decide(ctx(0, 1.0))
    assert first.compute and first.signal is None
    reused = policy.decide(ctx(1, 1.1, computed=(0,)))  # one computed step: reuse it
    assert not reused.compute and reused.weights is None and reused.signal == pytest.approx(0.1)
    policy.decide(ctx(2, 1.1, computed=(0,)))  # no change: 0.1 again, still below 0.25
    assert policy.decide(ctx(3, 1.3, computed=(0,))).compute  # max_consecutive_cached=2 forces it
    step4 = policy.decide(ctx(4, 1.32, computed=(3, 0)))
    # distance 3 -> 4 over 0 -> 3: the newest residual plus 1/3 of the difference
    assert step4.weights == pytest.approx((4 / 3, -1 / 3)) and step4.signal == pytest.approx(0.02 / 1.3, rel=1e-5)
    assert policy.decide(ctx(9, 1.32, computed=(3, 0))).compute  # the last step (cache_end_steps=1)


def test_computes_when_the_sum_reaches_the_threshold():
    policy = SeaCache(threshold=0.15, max_consecutive_cached=0)
    decisions = [policy.decide(ctx(step, value, computed=(0,))) for step, value in enumerate([1.0, 1.1, 1.2, 1.25])]
    # 0.1 (reuse), 0.1 + 0.0909 (compute, sum reset), 0.0417 (reuse)
    assert [d.compute for d in decisions] == [True, False, True, False]


@pytest.mark.parametrize("bad, message", [
    (dict(residual_order=2), "residual_order must be 0 or 1"),
    (dict(threshold=-0.1), "threshold must be a number >= 0"),
    (dict(max_consecutive_cached=1.5), "max_consecutive_cached must be an integer"),
    (dict(power_exp=0), "power_exp must be a number > 0"),
])
def test_bad_settings_fail_early(bad, message):
    with pytest.raises(ValueError, match=message):
        SeaCache(**bad)


def test_an_image_model_gets_a_clear_error(flux):
    with pytest.raises(ValueError, match=r"sea_indicator needs video latents \(B, C, T, H, W\)"):
        cachelab_run(flux, SeaCache(), lambda: generate(flux, steps=3))


def test_another_prior_exponent_is_its_own_signal():
    assert SeaCache().signals == ("sea_indicator",)
    assert SeaCache(power_exp=2.0).signals == ("sea_indicator_p2",)
    assert "sea_indicator_p2" in cachelab.policies.CALL_SIGNALS
