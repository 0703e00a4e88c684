"""Per-block learned schedules against step-level learned schedules at equal block work.

    python experiments/learned_blocks/compare.py [--model digits|shapes] [--budgets 4 6 8] [--out results.json]

Both policies are calibrated on generations from one generator seeded 1000 (digits: the plans shipped
with the model; shapes: the step plans of experiments/frontier/shapes/calibration.json and block plans
searched here from them the same way) and evaluated on every prompt with seeds 0 and 1, one call per prompt (prompt i
of seed s seeded 10 s + i), against the uncached images: PSNR over the set, the block work the trace
measured, and the wall speedup (median of paired, alternating uncached/cached passes over 2 prompts).
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

import cachelab
from cachelab import zoo
from cachelab.calibrate.learned_blocks import learned_block_plans
from cachelab.calibration import read_calibration
from cachelab.policies import Learned
from cachelab.schedules import Plan

HERE = Path(__file__).parent
SEEDS = (0, 1)
CALIBRATION_SEED = 1000
REPEATS = 3


def model(name: str):
    if name == "digits":
        return zoo.load_pipeline(), zoo.prompts_for(range(10)), None
    sys.path.insert(0, str(HERE.parent / "train_shapes"))
    import train_shapes

    pipe = zoo.load_pipeline(HERE.parent / "train_shapes" / "shapes", calibrated=False)
    return pipe, train_shapes.prompts(), read_calibration(HERE.parent / "frontier" / "shapes")["learned"]["plans"]


def generate(pipe, prompts, policy=None) -> tuple[np.ndarray, float, float]:
    """(images, block work in step equivalents per call, seconds) over every prompt and seed."""
    images, work, seconds = [], [], 0.0
    for seed in SEEDS:
        for i, prompt in enumerate(prompts):
            executor = cachelab.attach(pipe, policy) if policy is not None else None
            start = time.perf_counter()
            try:
                images.append(pipe(prompt, generator=torch.Generator().manual_seed(10 * seed + i), output_type="np").images)
            finally:
                seconds += time.perf_counter() - start
                if executor is not None:
                    cachelab.detach(pipe)
                    work.append(sum(r.work for r in executor.trace))
    return np.concatenate(images), float(np.mean(work)) if work else 28.0, seconds


def speedup(pipe, prompts, policy) -> float:
    ratios = []
    for repeat in range(REPEATS):
        times = {}
        for cached in ((False, True) if repeat % 2 == 0 else (True, False)):
            times[cached] = generate(pipe, prompts[:1], policy if cached else None)[2]
        ratios.append(times[False] / times[True])
    return statistics.median(ratios)


def psnr(reference, images) -> float:
    return float(10 * np.log10(1 / np.mean((reference - images) ** 2)))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits", choices=("digits", "shapes"))
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 6, 8])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipe, prompts, step_plans = model(args.model)
    pipe.set_progress_bar_config(disable=True)
    block_plans = None
    if args.model != "digits":  # searched from the step plans, on the same calibration generations
        starts = {b: Plan.from_json(step_plans[str(b)]) for b in args.budgets}
        start = time.perf_counter()
        fitted = learned_block_plans(pipe, [prompts] * 2, args.budgets, step_plans=starts, moves=6,
                                     generator=torch.Generator().manual_seed(CALIBRATION_SEED), output_type="np")
        print(f"block plans fitted in {time.perf_counter() - start:.0f} s", flush=True)
        block_plans = {b: {u: p.to_json() for u, p in units.items()} for b, units in fitted.items()}
    reference = generate(pipe, prompts)[0]
    rows = []
    for budget in args.budgets:
        for unit, plans in (("step", step_plans), ("block", block_plans)):
            policy = Learned(budget, unit=unit, **({"plans": plans} if unit == "step" else {"block_plans": plans}))
            images, work, _ = generate(pipe, prompts, policy)
            rows.append(dict(budget=budget, unit=unit, psnr=psnr(reference, images), block_work_steps=work,
                             speedup=speedup(pipe, prompts, policy)))
            print(f"budget {budget} unit {unit}: {rows[-1]['psnr']:.2f} dB, block work {work:.2f} step equivalents, "
                  f"{rows[-1]['speedup']:.2f}x", flush=True)
    print("\n| budget | step-level PSNR dB | per-block PSNR dB | margin dB | block work (step / block) | speedup (step / block) |")
    print("|---|---|---|---|---|---|")
    for budget in args.budgets:
        step, block = (next(r for r in rows if r["budget"] == budget and r["unit"] == u) for u in ("step", "block"))
        print(f"| {budget} | {step['psnr']:.2f} | {block['psnr']:.2f} | {block['psnr'] - step['psnr']:+.2f} "
              f"| {step['block_work_steps']:.2f} / {block['block_work_steps']:.2f} "
              f"| {step['speedup']:.2f}x / {block['speedup']:.2f}x |")
    if args.out is not None:
        args.out.write_text(json.dumps(dict(model=args.model, seeds=list(SEEDS), rows=rows), indent=2) + "\n")


if __name__ == "__main__":
    main()
