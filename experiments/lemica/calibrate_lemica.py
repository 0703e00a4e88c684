"""Fit LeMiCa's schedules and SenCache's sensitivities for the shipped models and store them in their
calibration.json (keys ``lemica``, ``sencache``), on the same uncached calibration generations as their learned plans:

    python experiments/lemica/calibrate_lemica.py [--models digits video_digits] [--policies lemica sencache]

digits: the 10 digit prompts in one batch, 2 generations from one generator seeded 1000, 28 steps (as
``experiments/train_digits/calibrate_digits.py`` fits the learned plans); video_digits: the model's prompts, 2
generations each from one generator seeded 1000, its default steps and size (as ``python -m cachelab.calibrate
model=video_digits``). No evaluation in this repository uses seed 1000.
"""

import argparse
import json

import torch
from hydra import compose, initialize_config_dir

from cachelab.calibrate.lemica import lemica_schedules
from cachelab.calibrate.sencache import sencache_sensitivities
from cachelab.calibration import CALIBRATION_FILE
from cachelab.config import config_dir, validate
from cachelab.runner import make_calls, run_prompts
from cachelab.zoo import load_pipeline, path, prompts_for

SEED = 1000
GENERATIONS = 2
BUDGETS = {"digits": (3, 4, 5, 6, 7, 8, 10), "video_digits": (4, 5, 6, 8, 10)}


def calibration_data(model: str, generations: int = GENERATIONS):
    """(prompts, call keyword arguments, description) of the model's learned-plan calibration."""
    if model == "digits":
        prompts, steps = [prompts_for(range(10))] * generations, 28
        kwargs = dict(num_inference_steps=steps, output_type="np")
        return prompts, kwargs, f"10 digits in one batch x {generations} generations from one generator seeded {SEED}, {steps} steps"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        run = validate(compose(config_name="config", overrides=[f"model={model}"]))
    prompts = run_prompts(run) * generations
    kwargs = make_calls(run, prompts[:1])[0].arguments
    return prompts, kwargs, (f"model={model}: {len(prompts)} uncached generations ({generations} per prompt) from one "
                             f"generator seeded {SEED}, {run.steps} steps")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BUDGETS))
    parser.add_argument("--policies", nargs="+", default=["lemica", "sencache"])
    parser.add_argument("--generations", type=int, default=GENERATIONS, help="uncached generations per prompt")
    args = parser.parse_args()
    for model in args.models:
        pipe = load_pipeline(model, calibrated=False)
        pipe.set_progress_bar_config(disable=True)
        prompts, kwargs, data = calibration_data(model, args.generations)
        target = path(model) / CALIBRATION_FILE
        numbers = json.loads(target.read_text())
        if "lemica" in args.policies:
            schedules = lemica_schedules(pipe, prompts, BUDGETS[model], generator=torch.Generator().manual_seed(SEED), **kwargs)
            numbers["policies"]["lemica"] = {
                "schedules": {str(budget): schedule for budget, schedule in schedules.items()},
                "data": f"{data}; edge (i, j): squared error of reusing step i's residual of all blocks until step j "
                        f"(python experiments/lemica/calibrate_lemica.py)",
            }
            print(f"{model} lemica: " + "; ".join(f"{b}: {s['computed']}" for b, s in schedules.items()))
        if "sencache" in args.policies:
            sensitivities = sencache_sensitivities(pipe, prompts[: len(prompts) // args.generations],
                                                   generator=torch.Generator().manual_seed(SEED), **kwargs)
            numbers["policies"]["sencache"] = {
                "sensitivities": sensitivities,
                "data": f"{data}, the first generation of each prompt only; finite differences along them "
                        f"(python experiments/lemica/calibrate_lemica.py)",
            }
            print(f"{model} sencache: alpha_x {[round(a, 3) for a in sensitivities['alpha_x']]}")
        target.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
