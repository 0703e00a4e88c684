"""Policies on compiled blocks (cachelab.compile): eager decisions, eager images, no recompilation per step.

The first compilation of the tiny model's two block classes takes about a minute of CPU (seconds once
inductor's on-disk cache is warm)."""

import shutil

import pytest
import torch
from tiny import flux_pipeline, generate, run_cached
from torch._dynamo.utils import counters

import cachelab
from cachelab.compile import compile_blocks
from cachelab.schedules import Plan

pytestmark = pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                                reason="inductor needs a C++ compiler on the CPU")


def learned_settings(steps):
    computed = list(range(0, steps, 2))
    plan = Plan(steps, computed, {step: [2.0, -1.0] for step in range(steps) if step not in computed})
    return {"budget": len(computed), "plans": {len(computed): plan}}


def lemica_settings(steps):
    computed = list(range(0, steps, 2))
    return {"budget": len(computed), "schedules": {len(computed): {"steps": steps, "computed": computed, "worst": 0.0}}}


SETTINGS = {
    "first_block": lambda steps: {"threshold": 0.5},
    "dbcache": lambda steps: {"threshold": 0.5, "compute_first": 1, "compute_last": 1, "warmup_steps": 1},
    "fixed_interval": lambda steps: {"interval": 2},
    "taylorseer": lambda steps: {"interval": 3, "order": 1},
    "teacache": lambda steps: {"threshold": 0.6},
    "magcache": lambda steps: {"threshold": 0.3, "max_skip_steps": 2, "retention_ratio": 0.0},
    "learned": learned_settings,
    "oracle": lambda steps: {"budget": steps // 2},
    "dbprune": lambda steps: {"threshold": 0.5, "compute_first": 1, "warmup_steps": 1},
    "easycache": lambda steps: {"threshold": 0.5, "warmup_steps": 1},
    "lemica": lemica_settings,
    "sencache": lambda steps: {"threshold": 1.0, "early_threshold": 1.0,
                               "sensitivities": {"timesteps": [0.0, 1000.0], "alpha_x": [1.0, 1.0], "alpha_t": [0.001, 0.001]}},
    "step_mask": lambda steps: {"mask": [int(i % 2 == 0 or i == steps - 1) for i in range(steps)], "mask_policy": "static"},
}


def compilations() -> int:
    return counters["frames"]["total"]


@pytest.fixture(scope="module")
def compiled():
    pipe = flux_pipeline()  # the same weights as the eager `flux` fixture
    pipe.set_progress_bar_config(disable=True)
    torch._dynamo.reset()  # code compiled by earlier tests would change the counts, or exhaust the recompile limit
    before = compilations()
    blocks = compile_blocks(pipe.transformer)
    assert len(blocks) == len(pipe.transformer.transformer_blocks) + len(pipe.transformer.single_transformer_blocks)
    generate(pipe, steps=2)
    # One graph per block class, and a recompilation for the single blocks' strided input; not one per block.
    assert 2 <= compilations() - before <= 4
    return pipe


def run(pipe, name, steps):
    policy = cachelab.make_policy(name, **SETTINGS.get(name, lambda steps: {})(steps))
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=steps))
    return [record.computed for record in executor.trace], image


def test_uncached_compiled_blocks_match_eager(compiled, flux):
    torch.testing.assert_close(generate(compiled), generate(flux), atol=1e-4, rtol=0)


BUILT_IN = {name: cls for name, cls in cachelab.registered_policies().items() if cls.__module__.startswith("cachelab.policies.")}
MODULE_UNIT = sorted(name for name, cls in BUILT_IN.items() if cls.unit in ("module", "token"))
IMAGE_MODELS = sorted(name for name in BUILT_IN if name != "seacache" and name not in MODULE_UNIT)  # seacache: video only


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_policy_decides_as_in_eager_mode_without_recompiling_per_step(compiled, flux, name):
    before = compilations()
    run(compiled, name, steps=4)
    assert compilations() == before, "the warm-up compiled every block class; a cached generation compiled again"
    decisions, image = run(compiled, name, steps=8)
    assert compilations() == before, "a longer generation compiled again"
    eager_decisions, eager_image = run(flux, name, steps=8)
    assert decisions == eager_decisions
    if name != "none":
        assert not all(decisions), "the settings must make the policy skip"
    torch.testing.assert_close(image, eager_image, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", MODULE_UNIT)
def test_module_unit_policies_are_refused_on_blocks_compiled_whole(compiled, name):
    with pytest.raises(ValueError, match="compiled whole"):
        cachelab.attach(compiled, cachelab.make_policy(name))


def test_compiling_twice_or_under_a_policy_is_refused(compiled, flux):
    with pytest.raises(RuntimeError, match="compiled already"):
        compile_blocks(compiled.transformer)
    cachelab.attach(flux, cachelab.NoCache())
    try:
        with pytest.raises(RuntimeError, match="call cachelab.detach"):
            compile_blocks(flux.transformer)
    finally:
        cachelab.detach(flux)
    with pytest.raises(ValueError, match="CUDA graphs.*max-autotune-no-cudagraphs"):
        compile_blocks(flux.transformer, mode="reduce-overhead")
