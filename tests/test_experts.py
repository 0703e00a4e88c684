"""Two experts (Wan 2.2: ``transformer`` for the high-noise steps, ``transformer_2`` after the boundary): every
built-in policy runs with each expert's state apart, the second expert's first call computes (its caches start
empty at the switch), and nothing one expert kept ever stands in for the other's blocks."""

import pytest
import torch
from tiny import generate, run_cached, wan_pipeline

import cachelab
from cachelab.schedules import Plan

STEPS = 8


@pytest.fixture(scope="module")
def wan22():
    one = wan_pipeline()
    torch.manual_seed(1)
    second = type(one.transformer)(**one.transformer.config).eval()  # other weights, same architecture
    pipe = type(one)(one.tokenizer, one.text_encoder, one.vae, one.scheduler, one.transformer, transformer_2=second,
                     boundary_ratio=0.9)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def learned(steps):
    computed = list(range(0, steps, 2))
    plan = Plan(steps, computed, {s: [1.0] for s in range(steps) if s not in computed})
    return {"budget": len(computed), "plans": {len(computed): plan}}


def lemica(steps):
    computed = list(range(0, steps, 2))
    return {"budget": len(computed), "schedules": {len(computed): {"steps": steps, "computed": computed, "worst": 0.0}}}


SETTINGS = {
    "first_block": {"threshold": 0.5},
    "dbcache": {"threshold": 0.5, "compute_first": 1, "compute_last": 1, "warmup_steps": 1},
    "fixed_interval": {"interval": 3},
    "taylorseer": {"interval": 3, "order": 1},
    "teacache": {"threshold": 0.6, "coefficients": [1.0, 0.0]},
    "magcache": {"threshold": 0.3, "max_skip_steps": 2, "retention_ratio": 0.0, "mag_ratios": [1.0] * STEPS},
    "learned": learned(STEPS),
    "oracle": {"budget": STEPS // 2},
    "dbprune": {"threshold": 0.5, "compute_first": 1, "warmup_steps": 1},
    "lemica": lemica(STEPS),
    "sencache": {"threshold": 0.5, "sensitivities": {"timesteps": [0.0, 1000.0], "alpha_x": [1.0, 1.0], "alpha_t": [0.001, 0.001]}},
}
BUILT_IN = sorted(name for name, cls in cachelab.registered_policies().items() if cls.__module__.startswith("cachelab.policies."))


def run(pipe, policy):
    return run_cached(pipe, policy, lambda: generate(pipe, steps=STEPS))


def test_none_gives_the_uncached_images(wan22):
    uncached = generate(wan22, steps=STEPS)
    images, executor = run(wan22, cachelab.NoCache())
    assert torch.equal(images, uncached)
    assert {key for key in executor._branches} == {"cond", "uncond", ("cond", 1), ("uncond", 1)}


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_policy_keeps_each_experts_state_apart(wan22, name):
    images, executor = run(wan22, cachelab.make_policy(name, **SETTINGS.get(name, {})))
    assert torch.isfinite(images).all()
    switch = min(r.step for r in executor.trace if r.expert == 1)
    assert all(r.expert == (r.step >= switch) for r in executor.trace)
    for record in executor.trace:
        if record.step == switch:  # the second expert starts with nothing kept: every unit computes
            assert record.computed and all(computed for _, computed in record.units), record
    for key, branch in executor._branches.items():
        second = isinstance(key, tuple)
        assert all((step >= switch) == second for kept in branch.kept.values() for step in kept.steps), key


def test_a_schedule_that_skips_at_the_switch_computes_there_instead(wan22):
    _, executor = run(wan22, cachelab.FixedInterval(interval=STEPS))  # step 0 and the last step, reuse between
    switch = min(r.step for r in executor.trace if r.expert == 1)
    assert 0 < switch < STEPS - 1
    computed = {r.step for r in executor.trace if r.branch == "cond" and r.computed}
    assert computed == {0, switch, STEPS - 1}
