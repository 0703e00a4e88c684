"""The per-block learned policy: group moves from the step plan searched on realised calibration images,
never worse than the step plan there; plans per block; the shipped digits plans."""

import pytest
import torch

import cachelab
from cachelab import zoo
from cachelab.calibrate import learned_policy
from cachelab.calibrate.learned_blocks import _moves, _stale_input, block_groups, block_runs, realised_error, search_block_plans
from cachelab.calibration import read_calibration
from cachelab.policies import Learned
from cachelab.schedules import Plan
from cachelab.units import block_unit


def test_groups_split_where_the_block_kind_changes_and_in_the_middle():
    kinds = ["Double"] * 2 + ["Single"] * 4
    assert block_groups(kinds) == [range(6), range(2), range(2, 6), range(3), range(3, 6)]
    assert block_groups(["Block"] * 4) == [range(4), range(2), range(2, 4)]


def test_moves_keep_every_blocks_work_and_never_compute_after_a_stale_forecast():
    start = [frozenset({0, 4, 9})] * 4
    moves = _moves(start, block_groups(["Block"] * 4), steps=12)
    assert moves and all(len(s) == 3 and 0 in s for m in moves for s in m)
    assert [frozenset({0, 3, 9})] * 2 + [frozenset({0, 4, 9})] * 2 in moves  # the first blocks compute a step earlier
    assert [frozenset({0, 5, 9})] * 2 + [frozenset({0, 4, 9})] * 2 not in moves  # then the last ones run on stale input
    assert _stale_input([frozenset({0, 5}), frozenset({0, 4})], steps=6)
    assert not _stale_input([frozenset({0, 4}), frozenset({0, 5})], steps=6)  # block 0's forecast at 5 is one step old


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


def test_the_search_only_keeps_moves_that_lower_the_calibration_error(digits):
    runs = block_runs(digits, [zoo.prompts_for([1, 4, 7])], generator=torch.Generator().manual_seed(1000),
                      output_type="np")
    start = Plan.from_json(read_calibration(zoo.path("digits"))["learned"]["plans"]["4"])
    log = []
    plans = search_block_plans(digits, runs, start, budget=4, moves=2, log=log)
    errors = [error for error, _ in log]
    assert errors == sorted(errors, reverse=True) and errors[0] == realised_error(digits, runs, 4, {u: start for u in runs.units})
    assert realised_error(digits, runs, 4, plans) == pytest.approx(errors[-1])
    assert all(len(plan.computed) == 4 and 0 in plan.computed for plan in plans.values())  # each block's work kept


def test_a_calibrated_block_policy_follows_each_blocks_plan_within_its_budget(digits):
    policy = learned_policy(digits, zoo.prompts_for([1, 4]), budget=4, unit="block",
                            generator=torch.Generator().manual_seed(1000))
    plans = policy.block_plans[4]
    assert set(plans) == {block_unit(i) for i in range(12)} and all(p.steps == 28 and 0 in p.computed for p in plans.values())
    images, executor = run(digits, policy)
    for unit, plan in plans.items():
        computed = [r.step for r in executor.trace if dict(r.units)[unit]]
        assert computed == plan.computed
    work = sum(r.work for r in executor.trace)  # in whole-step equivalents
    assert 3.9 <= work <= 4.1
    assert torch.isfinite(torch.as_tensor(images)).all()


def test_the_digits_model_ships_block_plans_for_its_budgets(digits):
    uncached = digits(zoo.prompts_for([2, 9]), generator=torch.Generator().manual_seed(0), output_type="np").images
    images, executor = run(digits, Learned(budget=6, unit="block"))
    assert not all(r.computed for r in executor.trace)
    psnr = 10 * torch.log10(1 / torch.as_tensor((images - uncached) ** 2).mean())
    assert psnr > 35


def test_a_budget_without_block_plans_is_a_clear_error(digits):
    with pytest.raises(ValueError, match="no learned block plan for budget=9"):
        cachelab.attach(digits, Learned(budget=9, unit="block"))
    with pytest.raises(ValueError, match="unit must be 'step' or 'block'"):
        Learned(unit="module")
