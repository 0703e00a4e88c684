"""The per-block learned policy: budgets shared among blocks, plans per block, the shipped digits plans."""

import pytest
import torch

import cachelab
from cachelab import zoo
from cachelab.calibrate import learned_policy
from cachelab.calibrate.learned_blocks import share_budget
from cachelab.policies import Learned
from cachelab.units import block_unit


def test_the_budget_goes_where_the_error_falls_most_per_second():
    errors = {"a": [10.0, 4.0, 3.0, 2.9], "b": [10.0, 9.0, 8.5, 8.4]}
    costs = {"a": 1.0, "b": 1.0}
    assert share_budget(errors, costs, budget=2) == {"a": 3, "b": 1}  # 4 block-steps: a's gains are larger
    assert share_budget(errors, {"a": 1.0, "b": 0.1}, budget=2) == {"a": 2, "b": 2}  # b's gain per second wins first
    assert share_budget(errors, costs, budget=1) == {"a": 1, "b": 1}  # step 0 of every block, nothing more


@pytest.fixture(scope="module")
def digits():
    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, policy, seed=0):
    executor = cachelab.attach(pipe, policy)
    try:
        images = pipe(zoo.prompts_for([2, 9]), generator=torch.Generator().manual_seed(seed), output_type="np").images
    finally:
        cachelab.detach(pipe)
    return images, executor


def test_a_calibrated_block_policy_follows_each_blocks_plan_within_its_budget(digits):
    policy = learned_policy(digits, zoo.prompts_for([1, 4]), budget=4, unit="block",
                            generator=torch.Generator().manual_seed(1000))
    plans = policy.block_plans[4]
    assert set(plans) == {block_unit(i) for i in range(12)} and all(p.steps == 28 and 0 in p.computed for p in plans.values())
    assert len({tuple(p.computed) for p in plans.values()}) > 1  # the blocks do not all share one schedule
    images, executor = run(digits, policy)
    for unit, plan in plans.items():
        computed = [r.step for r in executor.trace if dict(r.units)[unit]]
        assert computed == plan.computed
    work = sum(r.work for r in executor.trace)  # in whole-step equivalents
    assert 3 <= work <= 4 * 1.1  # block work of about 4 whole steps (costs are re-measured in this run)
    assert torch.isfinite(torch.as_tensor(images)).all()


def test_the_digits_model_ships_block_plans_for_its_budgets(digits):
    uncached = digits(zoo.prompts_for([2, 9]), generator=torch.Generator().manual_seed(0), output_type="np").images
    images, executor = run(digits, Learned(budget=6, unit="block"))
    assert not all(r.computed for r in executor.trace)
    psnr = 10 * torch.log10(1 / torch.as_tensor((images - uncached) ** 2).mean())
    assert psnr > 25


def test_a_budget_without_block_plans_is_a_clear_error(digits):
    with pytest.raises(ValueError, match="no learned block plan for budget=9"):
        cachelab.attach(digits, Learned(budget=9, unit="block"))
    with pytest.raises(ValueError, match="unit must be 'step' or 'block'"):
        Learned(unit="module")
