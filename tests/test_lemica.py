"""LeMiCa: schedules calibrated on a tiny Flux run as calibrated, the solver's path on the calibration's own costs,
the shipped schedules of the digits and video digits models, and the errors that say what to do."""

import pytest
import torch
from tiny import generate, run_cached

from cachelab.calibrate.learned import uncached_runs
from cachelab.calibrate.lemica import lemica_policy, lemica_schedules, schedules_from_gram
from cachelab.calibration import read_calibration
from cachelab.minimax_path import minimax_path, reuse_errors
from cachelab.policies.lemica import LeMiCa
from cachelab.zoo import path

STEPS = 8


def run(pipe, policy, steps=STEPS):
    image, executor = run_cached(pipe, policy, lambda: generate(pipe, steps=steps))
    return [step for step, record in enumerate(executor.trace) if record.computed], image


def test_calibrated_schedules_run_as_calibrated(flux):
    call = dict(num_inference_steps=STEPS, height=32, width=32, max_sequence_length=16, output_type="pt")
    schedules = lemica_schedules(flux, ["a photo of a cat"], [3, 5], generator=torch.Generator().manual_seed(7), **call)
    assert set(schedules) == {3, 5}
    for budget, schedule in schedules.items():
        assert schedule["steps"] == STEPS and len(schedule["computed"]) == budget and schedule["computed"][0] == 0
        assert schedule["worst"] == sorted(schedule["worst"], reverse=True)
        computed, image = run(flux, LeMiCa(budget, schedules=schedules))
        assert computed == schedule["computed"]
    _, reused = run(flux, LeMiCa(3, schedules=schedules))
    _, forecast = run(flux, LeMiCa(3, schedules=schedules, forecaster="taylor"))
    assert (reused - forecast).abs().max() > 1e-4  # the stand-in knob changes the skipped steps
    assert lemica_policy(flux, ["a photo of a cat"], 3, generator=torch.Generator().manual_seed(7), **call).for_model(
        {}, "flux").computed == frozenset(schedules[3]["computed"])


def test_schedule_is_the_minimax_path_of_the_reuse_costs(flux):
    runs = uncached_runs(flux, ["a photo of a cat"], num_inference_steps=6, height=32, width=32, max_sequence_length=16,
                         generator=torch.Generator().manual_seed(3), output_type="pt")
    schedules = schedules_from_gram(runs.gram, [2, 4])
    for budget in (2, 4):
        assert minimax_path(reuse_errors(runs.gram), budget)[0] == schedules[budget]["computed"]


def test_errors_say_what_to_do(flux):
    with pytest.raises(ValueError, match="budget must be an integer >= 1"):
        LeMiCa(0)
    with pytest.raises(ValueError, match="no calibrated schedules.*python -m cachelab.calibrate"):
        LeMiCa(4).for_model({}, "flux")
    schedules = {"3": {"steps": STEPS, "computed": [0, 3, 6], "worst": [1.0, 1.0, 0.0]}}
    with pytest.raises(ValueError, match="no LeMiCa schedule for budget=4.*calibrated budgets: 3"):
        LeMiCa(4, schedules=schedules).for_model({}, "flux")
    ready = LeMiCa(3).for_model({"schedules": schedules}, "flux")
    assert "schedules" not in ready.params() and ready.params()["budget"] == 3 and ready.computed == {0, 3, 6}
    with pytest.raises(ValueError, match="calibrated for 8 steps, not 10"):
        ready.check_steps(10)
    assert run(flux, ready)[0] == [0, 3, 6]


@pytest.mark.parametrize("model, budgets", [("digits", (3, 4, 5, 6, 7, 8, 10)), ("video_digits", (4, 5, 6, 8, 10))])
def test_shipped_schedules(model, budgets):
    schedules = read_calibration(path(model))["lemica"]["schedules"]
    assert {int(b) for b in schedules} == set(budgets)
    steps = {s["steps"] for s in schedules.values()}
    assert len(steps) == 1
    for budget, schedule in schedules.items():
        computed = schedule["computed"]
        assert len(computed) == int(budget) and computed[0] == 0 and computed == sorted(set(computed))
        assert max(computed) < schedule["steps"]
