"""Every built-in policy at 4 and 8 steps on the digits model (few-step and distilled models): it runs with its
defaults and its decisions stay within its bounds (the first call computes, at least one call computes, never
more than every call); a policy whose calibrated numbers hold for another step count refuses with a line that
says which (the README's table says which policies skip nothing at these step counts, and why)."""

import pytest
import torch
from tiny import run_cached

import cachelab
from cachelab import zoo
from cachelab.zoo.video_data import video_prompt

BUILT_IN = sorted(name for name, cls in cachelab.registered_policies().items() if cls.__module__.startswith("cachelab.policies."))
#: Calibrated for the digits model's 28 steps: they refuse other step counts, saying so.
STEP_BOUND = {"learned", "lemica"}
#: SeaCache's indicator filters video latents: it runs on the video model.
VIDEO_ONLY = {"seacache"}


@pytest.fixture(scope="module")
def digits():
    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def video():
    pipe = zoo.load_pipeline("video_digits")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, steps):
    prompts = zoo.prompts_for([3, 8]) if type(pipe).__name__ != "WanPipeline" else [video_prompt(3, "left")]
    output = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt")
    return output.images if hasattr(output, "images") else output.frames


@pytest.mark.parametrize("steps", [4, 8])
@pytest.mark.parametrize("name", BUILT_IN)
def test_runs_within_its_bounds_at_few_steps(request, name, steps):
    digits = request.getfixturevalue("video" if name in VIDEO_ONLY else "digits")
    policy = cachelab.make_policy(name)
    if name == "oracle" and steps < policy.budget:
        with pytest.raises(ValueError, match=f"budget={policy.budget} is more than the {steps} steps"):
            policy.check_steps(steps)
        policy = cachelab.make_policy(name, budget=steps // 2)
    if name in STEP_BOUND:
        with pytest.raises(ValueError, match=f"for 28 steps.*{steps}|28 steps"):
            executor = cachelab.attach(digits, policy)
            try:
                generate(digits, steps)
            finally:
                cachelab.detach(digits)
        return
    images, executor = run_cached(digits, policy, lambda: generate(digits, steps))
    assert torch.isfinite(images).all()
    for branch in {r.branch for r in executor.trace}:
        trace = [r for r in executor.trace if r.branch == branch]
        assert [r.step for r in trace] == list(range(steps)) and trace[0].computed
        assert 1 <= sum(r.computed for r in trace) <= steps
        # a partial token call can cost more than the whole module on these small models: measured, not capped
        assert all(0.0 <= r.work <= (1.0 if policy.unit != "token" else 2.0) for r in trace)
