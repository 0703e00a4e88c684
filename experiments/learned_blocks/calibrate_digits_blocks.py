"""Search the digits model's per-block learned plans from its shipped (refined) step plans and store them
in ``cachelab/zoo/digits/calibration.json`` (its ``learned.block_plans``; nothing else changes).

    python experiments/learned_blocks/calibrate_digits_blocks.py [--budgets 3 4 5 6 7 8 10] [--moves 6]

Calibration generations as for the step plans (experiments/train_digits/calibrate_digits.py): the 10 digits
twice, from one generator seeded 1000, 28 steps.
"""

import argparse
import json
import time

import torch

from cachelab.calibrate.learned_blocks import learned_block_plans
from cachelab.calibration import CALIBRATION_FILE
from cachelab.schedules import Plan
from cachelab.zoo import load_pipeline, path, prompts_for

SEED, GENERATIONS = 1000, 2


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[3, 4, 5, 6, 7, 8, 10])
    parser.add_argument("--moves", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    target = path("digits") / CALIBRATION_FILE
    numbers = json.loads(target.read_text())
    learned = numbers["policies"]["learned"]
    pipe = load_pipeline("digits", calibrated=False)
    pipe.set_progress_bar_config(disable=True)
    starts = {b: Plan.from_json(learned["plans"][str(b)]) for b in args.budgets}
    start = time.perf_counter()
    plans = learned_block_plans(pipe, [prompts_for(range(10))] * GENERATIONS, args.budgets, step_plans=starts,
                                moves=args.moves, num_inference_steps=28, output_type="np",
                                generator=torch.Generator().manual_seed(SEED))
    print(f"searched in {time.perf_counter() - start:.0f} s")
    learned["block_plans"].update({str(b): {u: p.to_json() for u, p in units.items()} for b, units in plans.items()})
    how = ("every block follows the step plan" if args.moves == 0 else
           f"block groups' schedules searched from the step plans there (up to {args.moves} moves)")
    learned["data"] = (f"10 digits x {GENERATIONS} generations from one generator seeded {SEED}, 28 steps; step "
                       f"schedules refined on those generations' cached images; block plans: {how} "
                       f"(experiments/learned_blocks/calibrate_digits_blocks.py --moves {args.moves})")
    target.write_text(json.dumps(numbers, indent=2) + "\n")
    for b, units in plans.items():
        print(b, {u: p.computed for u, p in units.items()})


if __name__ == "__main__":
    main()
