"""EasyCache: its decisions on a fixed sequence of inputs and outputs, worked out by hand from the reference's rule
(github.com/H-EmbodVis/EasyCache, ``easycache_sample_video.py``); the call's output reaches a step policy
(``observe_output``) on every tiny family; runs on the digits model, with a forecaster too."""

import pytest
import torch
from families import FAMILIES

import cachelab
from cachelab import zoo
from cachelab.policies import CachePolicy, compute
from cachelab.policies.base import StepContext
from cachelab.policies.easycache import EasyCache

STEPS = 9
INPUTS = [10.0, 9.0, 8.0, 7.5, 7.0, 6.0, 5.5, 5.0, 4.0]  # mean|x| per step (constant tensors)
OUTPUTS = [4.0, 5.0, 6.5, 7.0, 8.0, 9.0, 11.0, 12.0, 13.0]  # the output a computed step would give


def decisions(policy):
    """Drive the policy through one generation; after each call its output reaches the policy, as the runtime does."""
    policy.reset()
    made = []
    for step in range(STEPS):
        context = StepContext(step, STEPS, "cond", signals={"call_input": torch.full((2, 3), INPUTS[step])})
        decision = policy.decide(context)
        policy.observe_output(context, torch.full((2, 3), OUTPUTS[step]))  # the call ran (computed or not)
        made.append(("C" if decision.compute else "R", decision.signal))
    return made


# The reference's rule by hand, threshold 0.5, warm-up 2 (ret_steps):
#   0, 1: warm-up, compute.                         k = |5 - 4| / |9 - 10| = 1 (from steps 0 and 1)
#   2: sum = 1 * |8 - 9| / |5| = 0.2 < 0.5, reuse   3: 0.2 + |7.5 - 8| / 5 = 0.3, reuse   4: 0.4, reuse
#   5: 0.4 + |6 - 7| / 5 = 0.6 >= 0.5: compute, sum cleared; k = |9 - 5| / |6 - 9| = 4/3 (steps 1 and 5)
#   6: 4/3 * |5.5 - 6| / |9| = 0.0741, reuse        7: 0.1481, reuse        8: last step, compute
EXPECTED = [("C", None), ("C", None), ("R", 0.2), ("R", 0.3), ("R", 0.4), ("C", 0.6),
            ("R", 2 / 27), ("R", 4 / 27), ("C", None)]


def test_decisions_follow_the_reference_rule():
    made = decisions(EasyCache(threshold=0.5, warmup_steps=2))
    assert [d for d, _ in made] == [d for d, _ in EXPECTED]
    for (_, signal), (_, expected) in zip(made, EXPECTED):
        assert signal == (None if expected is None else pytest.approx(expected, rel=1e-6))


def test_without_warm_up_the_rate_needs_two_computed_steps():
    made = decisions(EasyCache(threshold=0.5, warmup_steps=0))
    assert made[:2] == [("C", None), ("C", None)]  # no rate yet, nothing compared
    assert [d for d, _ in made] == [d for d, _ in EXPECTED]


def test_a_lower_threshold_computes_more_and_state_resets():
    policy = EasyCache(threshold=0.25, warmup_steps=2)
    first = decisions(policy)
    # 2: sum 0.2, reuse; 3: 0.3 >= 0.25, compute (then k = |7 - 5| / |7.5 - 9| = 4/3)
    assert [d for d, _ in first][:4] == ["C", "C", "R", "C"]
    assert decisions(policy) == first  # reset() starts every generation afresh


def test_settings_are_checked():
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        EasyCache(threshold=-1)
    with pytest.raises(ValueError, match="warmup_steps must be an integer"):
        EasyCache(warmup_steps=1.5)


class OutputProbe(CachePolicy):
    signals = ("call_input",)

    def reset(self):
        self.seen = []

    def decide(self, ctx):
        return compute()

    def observe_output(self, ctx, output):
        type(self).last = (ctx.signals["call_input"], output)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_step_policy_sees_each_calls_input_and_output(family):
    model, inputs = FAMILIES[family]()
    cachelab.attach(model, OutputProbe(), num_steps=1)
    try:
        with torch.no_grad():
            output = model(**inputs, timestep=torch.tensor([500.0]), return_dict=False)[0]
    finally:
        cachelab.detach(model)
    seen_input, seen_output = OutputProbe.last
    assert seen_input is inputs["hidden_states"] and torch.equal(seen_output, output)


def test_runs_on_digits_with_reuse_and_with_a_forecaster(digits):
    call = dict(height=32, width=32, max_sequence_length=8, num_inference_steps=12, output_type="np")
    reference = digits(zoo.prompts_for([2]), generator=torch.Generator().manual_seed(0), **call).images
    results = {}
    for forecaster in ("reuse", "taylor"):
        executor = cachelab.attach(digits, EasyCache(threshold=0.3, warmup_steps=2, forecaster=forecaster))
        try:
            images = digits(zoo.prompts_for([2]), generator=torch.Generator().manual_seed(0), **call).images
        finally:
            cachelab.detach(digits)
        computed = [r.computed for r in executor.trace]
        assert computed[:2] == [True, True] and computed[-1] and not all(computed)
        results[forecaster] = (computed, float(abs(images - reference).max()))
    assert results["taylor"][1] < 0.5 and results["reuse"][1] < 0.5
