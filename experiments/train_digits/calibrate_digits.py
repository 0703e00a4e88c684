"""Measure TeaCache's coefficients, MagCache's ratios and the learned policy's plans for the digits model
and store them with it.

    python experiments/train_digits/calibrate_digits.py [--seeds 3]

Writes ``cachelab/zoo/digits/calibration.json``; ``load_pipeline`` gives them to the executor, so ``TeaCache()``,
``MagCache()`` and ``Learned()`` on the digits model use numbers measured on it rather than FLUX.1-dev's.
The learned plans are fitted on generations drawn from a generator seeded ``LEARNED_SEED``, which no
evaluation in this repository uses (evaluations seed each prompt with 0..10).
"""

import argparse
import json

import torch

from cachelab.calibrate import learned_plans, magcache_ratios, teacache_coefficients
from cachelab.calibrate.learned_blocks import learned_block_plans
from cachelab.calibration import CALIBRATION_FILE
from cachelab.zoo import load_pipeline, path, prompts_for

COMMAND = "python experiments/train_digits/calibrate_digits.py"
LEARNED_SEED = 1000
LEARNED_GENERATIONS = 2
LEARNED_BUDGETS = (3, 4, 5, 6, 7, 8, 10)


def calibrate(seeds: int, steps: int = 28) -> dict:
    pipe = load_pipeline("digits", calibrated=False)
    pipe.set_progress_bar_config(disable=True)
    batches = [prompts_for(range(10))] * seeds

    def call_kwargs(seed=0):
        return dict(num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np")

    plans = learned_plans(pipe, batches[:1] * LEARNED_GENERATIONS, LEARNED_BUDGETS, refine=True,
                          **call_kwargs(LEARNED_SEED))
    block_plans = learned_block_plans(pipe, batches[:1] * LEARNED_GENERATIONS, LEARNED_BUDGETS, **call_kwargs(LEARNED_SEED))

    return {
        "command": f"{COMMAND} --seeds {seeds}",
        "data": f"10 digits x {seeds} seeds, {steps} steps, uncached",
        "policies": {
            "teacache": {"coefficients": teacache_coefficients(pipe, batches, **call_kwargs())},
            "magcache": {"mag_ratios": magcache_ratios(pipe, batches, **call_kwargs())},
            "learned": {
                "plans": {str(budget): plan.to_json() for budget, plan in plans.items()},
                "block_plans": {str(budget): {unit: plan.to_json() for unit, plan in units.items()}
                                for budget, units in block_plans.items()},
                "data": f"10 digits x {LEARNED_GENERATIONS} generations from one generator seeded {LEARNED_SEED}, "
                        f"{steps} steps; step schedules refined on those generations' cached images, block schedules not",
            },
        },
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    numbers = calibrate(args.seeds)
    target = path("digits") / CALIBRATION_FILE
    target.write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {target}:\n{json.dumps(numbers, indent=2)}")


if __name__ == "__main__":
    main()
