"""``python -m cachelab.calibrate model=<name> [calibrate.budgets=[4,6,8]] [calibrate.refine=true] ...``:
TeaCache's coefficients, MagCache's ratios and the learned plans for any model, in one calibration.json
that ``python -m cachelab ... calibration_file=<it>`` hands to the calibrated policies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig

from .. import launch
from ..config import ConfigError, RunConfig, check_calibrate, config_dir, validate
from ..config_choices import check_group_choices
from .learned import learned_plans
from .learned_blocks import learned_block_plans
from .lemica import lemica_schedules
from .sencache import sencache_sensitivities
from .signals import magcache_ratios, teacache_coefficients


def calibrate_model(run: RunConfig) -> dict:
    """Every calibrated policy's numbers for the run's model and prompts, in calibration.json's layout."""
    from ..runner import cpu_threads, loaded_pipeline, make_calls, run_prompts

    setting = run.calibrate
    prompts = run_prompts(run) * setting.generations
    arguments = make_calls(run, prompts[:1])[0].arguments

    def kwargs():
        return dict(generator=torch.Generator("cpu").manual_seed(setting.seed), **arguments)

    with cpu_threads(run.threads):
        pipe = loaded_pipeline(run)
        pipe.set_progress_bar_config(disable=True)
        plans = learned_plans(pipe, prompts, setting.budgets, setting.history, setting.refine, **kwargs())
        numbers = {
            "teacache": {"coefficients": teacache_coefficients(pipe, prompts, **kwargs())},
            "magcache": {"mag_ratios": magcache_ratios(pipe, prompts, **kwargs())},
            "lemica": {"schedules": {str(budget): schedule for budget, schedule in
                                     lemica_schedules(pipe, prompts, setting.budgets, **kwargs()).items()}},
            "sencache": {"sensitivities": sencache_sensitivities(pipe, prompts, **kwargs())},
            "learned": {"plans": {str(budget): plan.to_json() for budget, plan in plans.items()},
                        "block_plans": {str(budget): {unit: plan.to_json() for unit, plan in units.items()}
                                        for budget, units in learned_block_plans(
                                            pipe, prompts, setting.budgets, setting.history, step_plans=plans,
                                            moves=6 if setting.refine else 0, **kwargs()).items()}},
        }
    data = (f"model={run.model.name}: {len(prompts)} uncached generations ({setting.generations} per prompt) from "
            f"one generator seeded {setting.seed}, {run.steps} steps")
    return {"data": data, "prompts": sorted(set(prompts)), "policies": numbers}


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg) -> None:
    try:
        run = validate(cfg)
        check_calibrate(run)
    except ConfigError as error:
        if launch.is_writer():
            print(f"cachelab.calibrate: error: {error}", file=sys.stderr)
        sys.exit(2)
    launch.start(run.parallel, run.device)
    numbers = calibrate_model(run)  # under context parallelism every rank measures the same numbers
    if not launch.is_writer():
        return
    hydra_config = HydraConfig.get()
    numbers["command"] = " ".join(["python -m cachelab.calibrate", *hydra_config.overrides.task])
    out = Path(run.calibrate.out).expanduser()
    out = out if out.is_absolute() else Path(hydra_config.runtime.output_dir) / out
    out.write_text(json.dumps(numbers, indent=2) + "\n")
    plans = numbers["policies"]["learned"]["plans"]
    print("learned plans (computed steps): " + "; ".join(f"{b}: {p['computed']}" for b, p in plans.items()))
    print(f"wrote {out}\nuse it: python -m cachelab model={run.model.name} policy=learned policy.budget=<one of "
          f"{', '.join(plans)}> calibration_file={out}")


if __name__ == "__main__":
    try:
        check_group_choices(sys.argv[1:], config_dir(), "config")
    except ConfigError as error:
        if launch.is_writer():
            print(f"cachelab.calibrate: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv.extend(launch.hydra_overrides_for_other_ranks(sys.argv[1:]))
    main()
