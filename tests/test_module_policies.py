"""The module-unit policies (PAB, TaylorSeer's module form, FasterCache, FORA) against the installed peers
(diffusers' hooks) on the same pipeline and seed: the same decisions for every attention module at every step,
and images within float tolerance of the peer's. On the digits model and on a tiny Wan (FasterCache's CFG part:
on a tiny CogVideoX, whose pipeline batches CFG)."""

import pytest
import torch
from diffusers import FasterCacheConfig, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig
from tiny import generate

import cachelab
from cachelab import zoo
from cachelab.models.specs import blocks_of, spec_for
from cachelab.policies import FasterCache, Fora, PyramidAttentionBroadcast, TaylorSeer
from cachelab.policies.taylor import taylor_weights
from cachelab.policies.taylorseer import divided_difference_weights
from cachelab.units import ROLES, module_sites

DIGITS = (3, 7)


def generate_digits(pipe, steps: int = 28):
    generator = torch.Generator().manual_seed(0)
    return pipe(zoo.prompts_for(DIGITS), num_inference_steps=steps, generator=generator, output_type="pt").images


def run_pipe(pipe, **kwargs):
    return generate_digits(pipe, **kwargs) if type(pipe).__name__ == "DigitsFluxPipeline" else generate(pipe, **kwargs)


def units_of(transformer, roles=ROLES) -> dict[torch.nn.Module, str]:
    """Each module of ``roles`` in the model spec -> its cachelab unit ("block3.attn")."""
    blocks = [block for block, _ in blocks_of(transformer, spec_for(transformer))]
    return {site.module: site.unit for site in module_sites(blocks, spec_for(transformer).module_roles, roles)}


def peer_run(pipe, config, roles=("attn",), **kwargs):
    """Run a diffusers cache; per transformer call, {unit: computed} for the modules of ``roles`` that were called
    (a module computed iff its query projection ran)."""
    transformer, calls, handles = pipe.transformer, [], []
    handles.append(transformer.register_forward_pre_hook(lambda *_: calls.append({})))
    for module, unit in units_of(transformer, roles).items():
        handles.append(module.register_forward_pre_hook(lambda *_, unit=unit: calls[-1].__setitem__(unit, False)))
        handles.append(module.to_q.register_forward_pre_hook(lambda *_, unit=unit: calls[-1].__setitem__(unit, True)))
    transformer.enable_cache(config)
    try:
        image = run_pipe(pipe, **kwargs)
    finally:
        transformer.disable_cache()
        for handle in handles:
            handle.remove()
    return calls, image


def cachelab_run(pipe, policy, **kwargs):
    executor = cachelab.attach(pipe, policy)
    try:
        image = run_pipe(pipe, **kwargs)
    finally:
        cachelab.detach(pipe)
    return [dict(record.units) for record in executor.trace], image


def skipped(calls) -> int:
    return sum(not computed for call in calls for computed in call.values())


def timestep_callback(pipe):
    return lambda: pipe.current_timestep


# -- Pyramid Attention Broadcast --------------------------------------------------------------------------------

PAB_DIGITS = [
    {},  # the defaults: spatial every 2nd step inside (100, 800)
    {"spatial_attention_block_skip_range": 3, "spatial_attention_timestep_skip_range": (300, 990)},
]


@pytest.mark.parametrize("settings", PAB_DIGITS)
def test_pab_matches_diffusers_on_digits(digits, settings):
    config = PyramidAttentionBroadcastConfig(**{"spatial_attention_block_skip_range": 2, **settings},
                                             current_timestep_callback=timestep_callback(digits))
    expected, reference = peer_run(digits, config)
    decisions, image = cachelab_run(digits, PyramidAttentionBroadcast(**settings))
    assert decisions == expected
    assert skipped(expected) > 0 and len(expected) == 28
    assert (image - reference).abs().max().item() <= 1e-5


PAB_WAN = [
    {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (100, 990)},
    {"spatial_attention_block_skip_range": 3, "cross_attention_block_skip_range": 2,
     "spatial_attention_timestep_skip_range": (100, 960), "cross_attention_timestep_skip_range": (-1, 999)},
    {"spatial_attention_block_skip_range": None, "cross_attention_block_skip_range": 3,
     "cross_attention_timestep_skip_range": (-1, 990), "temporal_attention_block_skip_range": 2},
]


@pytest.mark.parametrize("settings", PAB_WAN)
def test_pab_matches_diffusers_on_wan_with_one_call_per_step(wan, settings):
    """guidance_scale=1: one call per step; with CFG diffusers' state mixes the branches (see the docstring)."""
    config = PyramidAttentionBroadcastConfig(**settings, current_timestep_callback=timestep_callback(wan))
    expected, reference = peer_run(wan, config, roles=("attn", "cross_attn"), steps=10, guidance_scale=1.0)
    policy = PyramidAttentionBroadcast(**settings)
    decisions, image = cachelab_run(wan, policy, steps=10, guidance_scale=1.0)
    assert len(decisions) == 10 and all(len(call) == 3 * len(policy.roles) for call in decisions)
    decided = [{u: c for u, c in call.items() if u.partition(".")[2] in policy.roles} for call in expected]
    assert decisions == decided and skipped(decisions) > 0
    assert skipped(expected) == skipped(decided), "diffusers cached a module of a kind left uncached"
    assert (image - reference).abs().max().item() <= 1e-5


def test_pab_keeps_the_cfg_branches_apart(wan):
    """diffusers counts a module's calls over both branches and serves a skipped uncond call the cond output;
    cachelab decides each branch on its own steps: both branches skip as a run without CFG does."""
    settings = PAB_WAN[1]
    alone, _ = cachelab_run(wan, PyramidAttentionBroadcast(**settings), steps=6, guidance_scale=1.0)
    executor = cachelab.attach(wan, PyramidAttentionBroadcast(**settings))
    try:
        generate(wan, steps=6, guidance_scale=5.0)
    finally:
        cachelab.detach(wan)
    for branch in ("cond", "uncond"):
        assert [dict(r.units) for r in executor.trace if r.branch == branch] == alone


@pytest.mark.parametrize("settings, message", [
    ({"spatial_attention_block_skip_range": 0}, "spatial_attention_block_skip_range must be an integer >= 1"),
    ({"cross_attention_block_skip_range": 1.5}, "cross_attention_block_skip_range must be an integer"),
    ({"spatial_attention_timestep_skip_range": (800, 100)}, "must have low < high"),
    ({"cross_attention_timestep_skip_range": (100,)}, "must be two numbers"),
    ({"spatial_attention_block_skip_range": None, "temporal_attention_block_skip_range": 2},
     "temporal attention matches no module"),
])
def test_pab_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        PyramidAttentionBroadcast(**settings)


def test_pab_settings_from_a_config_are_tuples():
    policy = PyramidAttentionBroadcast(cross_attention_block_skip_range=4, cross_attention_timestep_skip_range=[0, 900])
    assert policy.cross_attention_timestep_skip_range == (0, 900) and policy.roles == ("attn", "cross_attn")


# -- TaylorSeer, module form ------------------------------------------------------------------------------------

TAYLOR_DIGITS = [(5, 3, 1), (3, 2, 2), (4, 1, 0)]  # (interval, warmup_steps, order)


@pytest.mark.parametrize("interval, warmup, order", TAYLOR_DIGITS)
def test_taylorseer_module_form_matches_diffusers_on_digits(digits, interval, warmup, order):
    config = TaylorSeerCacheConfig(cache_interval=interval, disable_cache_before_step=warmup, max_order=order,
                                   taylor_factors_dtype=torch.float32)
    expected, reference = peer_run(digits, config)
    decisions, image = cachelab_run(digits, TaylorSeer(interval, order, warmup, unit="module"))
    assert decisions == expected and skipped(expected) > 0
    assert (image - reference).abs().max().item() <= 1e-5


@pytest.mark.parametrize("guidance_scale", [1.0, 5.0])
def test_taylorseer_module_form_matches_diffusers_on_wan(wan, guidance_scale):
    """diffusers keeps TaylorSeer's state per cache context ("cond", "uncond"), so with CFG too. Its default
    patterns miss Wan's ``attn1``; named explicitly, it forecasts the modules of cachelab's ``attn`` role."""
    config = TaylorSeerCacheConfig(cache_interval=3, disable_cache_before_step=2, max_order=1,
                                   taylor_factors_dtype=torch.float32, cache_identifiers=[r"blocks\.\d+\.attn1"])
    expected, reference = peer_run(wan, config, steps=10, guidance_scale=guidance_scale)
    decisions, image = cachelab_run(wan, TaylorSeer(3, 1, 2, unit="module"), steps=10, guidance_scale=guidance_scale)
    assert len(decisions) == (10 if guidance_scale == 1.0 else 20)
    assert decisions == expected and skipped(expected) > 0
    assert (image - reference).abs().max().item() <= 1e-5


def test_taylorseer_module_weights_are_diffusers_divided_differences():
    # order 1 from steps 2 and 1 at step 3: F2 + (F2 - F1) * 1; cache-dit's ladder (step form) has no derivative yet
    assert divided_difference_weights([2, 1], 3, 1) == [2.0, -1.0]
    assert taylor_weights([2, 1], 3, 1) == [1.0, 0.0]
    # order 2 over steps 8, 4, 0 at step 10: D1 = (F8 - F4) / 4, D2 = (D1 - (F4 - F0) / 4) / 4; F8 + 2 D1 + 2 D2
    assert divided_difference_weights([8, 4, 0], 10, 2) == pytest.approx([1 + 0.5 + 0.125, -0.5 - 0.25, 0.125])


def test_taylorseer_unit_is_step_or_module():
    assert TaylorSeer().unit == "step" and TaylorSeer(unit="module").unit == "module"
    with pytest.raises(ValueError, match="unit must be 'step' or 'module'"):
        TaylorSeer(unit="block")


# -- FORA --------------------------------------------------------------------------------------------------------


def fora_rule(step: int, interval: int, warmup: int) -> bool:
    return step < warmup or (step - warmup) % interval == 0


@pytest.mark.parametrize("name, interval, warmup", [("digits", 3, 0), ("digits", 4, 2), ("wan", 2, 1)])
def test_fora_caches_every_attention_and_mlp_on_its_published_rule(request, name, interval, warmup):
    pipe = request.getfixturevalue(name)
    kwargs = {} if name == "digits" else {"steps": 8, "guidance_scale": 1.0}
    decisions, _ = cachelab_run(pipe, Fora(interval, warmup), **kwargs)
    units = sorted(set(units_of(pipe.transformer).values()))
    assert {u.partition(".")[2] for u in units} == ({"attn", "ff"} if name == "digits" else {"attn", "cross_attn", "ff"})
    for step, call in enumerate(decisions):
        assert sorted(call) == units
        assert set(call.values()) == {fora_rule(step, interval, warmup)}, f"step {step}"
    assert len(decisions) == (28 if name == "digits" else 8)


@pytest.mark.parametrize("name", ["digits", "wan"])
def test_fora_with_interval_1_is_the_uncached_generation(request, name):
    pipe = request.getfixturevalue(name)
    kwargs = {} if name == "digits" else {"steps": 6}
    decisions, image = cachelab_run(pipe, Fora(interval=1), **kwargs)
    assert skipped(decisions) == 0 and all(decisions)
    assert torch.equal(image, run_pipe(pipe, **kwargs))


def test_fora_reuse_changes_the_images_and_counts_the_work(digits):
    executor = cachelab.attach(digits, Fora(interval=2))
    try:
        image = generate_digits(digits)
    finally:
        cachelab.detach(digits)
    assert 0 < (image - generate_digits(digits)).abs().max().item() < 0.5
    skipping = [record.work for record in executor.trace if record.step % 2]
    assert all(0 < work < 1 for work in skipping) and all(r.work == 1 for r in executor.trace if r.step % 2 == 0)


def test_fora_refuses_bad_settings():
    with pytest.raises(ValueError, match="interval must be an integer >= 1"):
        Fora(interval=0)
    with pytest.raises(ValueError, match="warmup_steps must be an integer >= 0"):
        Fora(warmup_steps=-1)


# -- FasterCache, attention part -------------------------------------------------------------------------------

FASTER_DIGITS = [
    {},  # the defaults: every 2nd step below timestep 681, weight 0.5
    {"spatial_attention_block_skip_range": 3, "spatial_attention_timestep_skip_range": (200, 900), "attention_weight": 0.3},
]


def faster_cache_config(pipe, settings):
    weight = settings.get("attention_weight", 0.5)
    diffusers_settings = {k: v for k, v in settings.items() if k != "attention_weight"}
    return FasterCacheConfig(**diffusers_settings, is_guidance_distilled=True, attention_weight_callback=lambda _: weight,
                             current_timestep_callback=timestep_callback(pipe))


@pytest.mark.parametrize("settings", FASTER_DIGITS)
def test_faster_cache_matches_diffusers_on_digits(digits, settings):
    expected, reference = peer_run(digits, faster_cache_config(digits, settings))
    decisions, image = cachelab_run(digits, FasterCache(**settings))
    assert decisions == expected and skipped(expected) > 0
    assert (image - reference).abs().max().item() <= 1e-5


def test_faster_cache_matches_diffusers_on_wan_with_one_call_per_step(wan):
    settings = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 990)}
    expected, reference = peer_run(wan, faster_cache_config(wan, settings), steps=10, guidance_scale=1.0)
    decisions, image = cachelab_run(wan, FasterCache(**settings), steps=10, guidance_scale=1.0)
    assert decisions == expected and skipped(expected) > 0
    assert (image - reference).abs().max().item() <= 1e-5


# -- FasterCache, CFG part ---------------------------------------------------------------------------------------

FASTER_CFG = [
    {},  # the defaults: uncond every 5th step below timestep 641, attention every 2nd below 681
    {"unconditional_batch_skip_range": 3, "unconditional_batch_timestep_skip_range": (-1, 900),
     "spatial_attention_block_skip_range": 3, "alpha_low_frequency": 1.3, "alpha_high_frequency": 0.8,
     "low_frequency_weight_update_timestep_range": (300, 950)},
]


def batch_sizes(pipe, run):
    """The batch of the first block's input at each transformer call of ``run()``, and run()'s result."""
    sizes = []
    first = blocks_of(pipe.transformer, spec_for(pipe.transformer))[0][0]
    handle = first.register_forward_pre_hook(lambda _, args, kwargs: sizes.append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    try:
        return sizes, run()
    finally:
        handle.remove()


@pytest.mark.parametrize("settings", FASTER_CFG)
def test_faster_cache_with_batched_cfg_matches_diffusers_on_cogvideox(cogvideox, settings):
    weight = settings.get("attention_weight", 0.5)
    config = FasterCacheConfig(**settings, tensor_format="BFCHW", attention_weight_callback=lambda _: weight,
                               current_timestep_callback=timestep_callback(cogvideox))
    peer_sizes, (expected, reference) = batch_sizes(cogvideox, lambda: peer_run(cogvideox, config, steps=12))
    executor = cachelab.attach(cogvideox, FasterCache(**settings))
    try:
        sizes, image = batch_sizes(cogvideox, lambda: generate(cogvideox, steps=12))
    finally:
        cachelab.detach(cogvideox)
    assert sizes == peer_sizes and 1 in sizes and 2 in sizes  # the uncond half skipped at the same steps
    assert [dict(record.units) for record in executor.trace] == expected and skipped(expected) > 0
    assert [record.batch_share for record in executor.trace] == [size / 2 for size in sizes]
    assert (image - reference).abs().max().item() <= 1e-5


def test_faster_cache_builds_separate_uncond_calls_from_the_cond_call(wan):
    """Wan runs CFG in two calls per step. With the negative prompt equal to the prompt the two branches agree,
    so the built uncond outputs are exact: the image equals the uncached one while most uncond calls are not run."""
    settings = dict(unconditional_batch_skip_range=4, unconditional_batch_timestep_skip_range=(-1, 1000),
                    spatial_attention_timestep_skip_range=(-1, 0))  # the attention part never skips
    reference = generate(wan, steps=10, negative_prompt="a photo of a cat")
    executor = cachelab.attach(wan, FasterCache(**settings))
    try:
        image = generate(wan, steps=10, negative_prompt="a photo of a cat")
        uncond = [record.computed for record in executor.trace if record.branch == "uncond"]
        different = generate(wan, steps=10, negative_prompt="a red dog")
    finally:
        cachelab.detach(wan)
    assert uncond == [step % 4 == 0 for step in range(10)]
    assert all(record.work == 0 for record in executor.trace if record.branch == "uncond" and not record.computed)
    assert (image - reference).abs().max().item() <= 1e-5
    uncached = generate(wan, steps=10, negative_prompt="a red dog")
    assert 0 < (different - uncached).abs().max().item() < 0.5


def test_faster_cache_cfg_part_needs_image_shaped_outputs(flux):
    cachelab.attach(flux, FasterCache())
    try:
        with pytest.raises(ValueError, match="returns packed tokens; pass is_guidance_distilled=True"):
            generate(flux, steps=4, true_cfg_scale=2.0, negative_prompt="a red dog")
        generate(flux, steps=4)  # without CFG it is the attention part alone
    finally:
        cachelab.detach(flux)


@pytest.mark.parametrize("settings, message", [
    ({"spatial_attention_block_skip_range": 0}, "spatial_attention_block_skip_range must be an integer >= 1"),
    ({"temporal_attention_block_skip_range": 0}, "temporal_attention_block_skip_range must be an integer >= 1"),
    ({"spatial_attention_timestep_skip_range": (681, -1)}, "must have low < high"),
    ({"attention_weight": "half"}, "attention_weight must be a number"),
    ({"unconditional_batch_skip_range": 0}, "unconditional_batch_skip_range must be an integer >= 1"),
    ({"alpha_low_frequency": None}, "alpha_low_frequency must be a number"),
    ({"is_guidance_distilled": "yes"}, "is_guidance_distilled must be true or false"),
])
def test_faster_cache_refuses_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        FasterCache(**settings)


def test_the_timestep_is_read_once_per_step(digits, monkeypatch):
    from cachelab.policies.base import StepContext

    reads = []
    original = StepContext.scheduler_timestep
    monkeypatch.setattr(StepContext, "scheduler_timestep", property(lambda ctx: reads.append(ctx.step) or original.fget(ctx)))
    cachelab_run(digits, PyramidAttentionBroadcast(), steps=6)
    assert reads == list(range(6))
