"""Thresholds matched to a number of computed steps, on calibration seeds, for comparisons at equal compute.

    python -m cachelab.ablations.matching +variant=teacache_indicators/raw_input_6 --targets 6 9 12

composes the config the overrides give (its threshold is the one replaced), generates the run's
prompts with seeds from ``--seed`` (1000: no evaluation in this repository uses it), and bisects the
threshold until the mean computed steps per generation come closest to each target. An adaptive
policy's decisions depend on the prompt and seed, so the evaluation seeds land near the target, not on it.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable

from ..config import RunConfig, config_dir, validate

CALIBRATION_SEED = 1000


def match_threshold(computed_steps: Callable[[float], float], target: float, low: float, high: float,
                    iterations: int = 12) -> tuple[float, float]:
    """(threshold, computed steps) closest to ``target``, bisecting in log space between ``low`` (which must
    compute at least ``target``) and ``high`` (at most); computed steps fall as the threshold rises."""
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    best = None
    for _ in range(iterations):
        middle = math.sqrt(low * high)
        steps = computed_steps(middle)
        if best is None or abs(steps - target) < abs(best[1] - target):
            best = (middle, steps)
        if steps == target:
            break
        low, high = (middle, high) if steps > target else (low, middle)
    return best


def computed_steps_function(run: RunConfig) -> Callable[[float], float]:
    """threshold -> mean computed steps per generation of the run's prompts (uncached calls never run)."""
    from ..config import make_run_policy
    from ..runner import cpu_threads, decision_figures, generate, loaded_pipeline, make_calls, run_prompts

    calls = make_calls(run, run_prompts(run))
    pipe = loaded_pipeline(run)
    pipe.set_progress_bar_config(disable=True)

    def computed_steps(threshold: float) -> float:
        run.policy["threshold"] = threshold
        with cpu_threads(run.threads):
            passes = generate(pipe, calls, make_run_policy(run), desc="matching", quiet=True,
                              cfg_decisions=run.cfg_decisions)
        return decision_figures(passes.traces, run.steps)["computed_steps"]

    return computed_steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cachelab.ablations.matching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=float, nargs="+", required=True,
                        help="computed steps per generation (after the overrides)")
    parser.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="seed of the first prompt (default %(default)s)")
    parser.add_argument("--low", type=float, default=1e-4, help="a threshold that computes every step")
    parser.add_argument("--high", type=float, default=100.0, help="a threshold that computes the fewest steps")
    parser.add_argument("overrides", nargs="*", help="config overrides, as for python -m cachelab")
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*args.overrides, f"seed={args.seed}"])
    run = validate(cfg)
    if run.threshold is None:
        parser.error(f"policy={run.policy['name']} has no threshold to match")
    computed_steps = computed_steps_function(run)
    for target in args.targets:
        threshold, steps = match_threshold(computed_steps, target, args.low, args.high)
        print(f"target {target:g}: threshold {threshold:.6g} computes {steps:.2f} steps", flush=True)


if __name__ == "__main__":
    main()
