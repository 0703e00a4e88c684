"""Caching on compiled blocks: speedups of cached over uncached generations, eager and compiled, on digits.

    python experiments/benchmarks/compile_speedup.py [--repeats 5] [--batch 10] [--steps 28] [--threads 1]

Loads the embedded digits model twice, compiles one copy's blocks (``cachelab.compile.compile_blocks``,
inductor), and times uncached and cached generations of both copies in one process: every repeat runs
all four passes, in an order that rotates from repeat to repeat, and each speedup is the median of
its per-repeat ratios. Checks that the cached passes decide alike eager and compiled.
"""

import argparse
import statistics
import time

import torch

import cachelab
from cachelab import FirstBlockCache, Learned
from cachelab.compile import compile_blocks
from cachelab.zoo import load_pipeline, prompts_for


def generation(pipe, prompts, steps, policy):
    """A function that runs one generation and returns its computed flags (None uncached)."""

    def run():
        executor = cachelab.attach(pipe, policy) if policy is not None else None
        try:
            pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
        finally:
            if executor is not None:
                cachelab.detach(pipe)
        return executor and [record.computed for record in executor.trace]

    return run


def seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def rotating_timings(passes: dict, repeats: int) -> dict[str, list[float]]:
    names = list(passes)
    times = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            times[name].append(seconds(passes[name]))
    return times


def median_ratio(numerators: list[float], denominators: list[float]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prompts = prompts_for([i % 10 for i in range(args.batch)])
    eager, compiled = load_pipeline("digits"), load_pipeline("digits")
    for pipe in (eager, compiled):
        pipe.set_progress_bar_config(disable=True)
    start = time.perf_counter()
    compile_blocks(compiled.transformer)
    generation(compiled, prompts, args.steps, None)()
    print(f"compiled the blocks in {time.perf_counter() - start:.1f} s (first generation included)")
    rows = []
    for policy in (FirstBlockCache(0.2), Learned(6)):
        passes = {
            "eager": generation(eager, prompts, args.steps, None),
            "eager cached": generation(eager, prompts, args.steps, policy),
            "compiled": generation(compiled, prompts, args.steps, None),
            "compiled cached": generation(compiled, prompts, args.steps, policy),
        }
        eager_decisions, compiled_decisions = passes["eager cached"](), passes["compiled cached"]()  # also warm-up
        passes["eager"]()
        times = rotating_timings(passes, args.repeats)
        rows.append((policy, sum(compiled_decisions), len(compiled_decisions), eager_decisions == compiled_decisions,
                     median_ratio(times["eager"], times["eager cached"]),
                     median_ratio(times["compiled"], times["compiled cached"]),
                     median_ratio(times["eager"], times["compiled"]),
                     median_ratio(times["eager"], times["compiled cached"]),
                     statistics.median(times["eager"]), statistics.median(times["compiled"])))
    print(f"\ndigits, batch {args.batch}, {args.steps} steps, {args.threads} thread(s), median of {args.repeats} rotating repeats\n")
    print("| policy | computed | same decisions | cached/uncached eager | cached/uncached compiled | "
          "compiled/eager uncached | compiled cached/eager uncached | eager s | compiled s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for policy, computed, calls, same, eager_speedup, compiled_speedup, compile_speedup, total, eager_s, compiled_s in rows:
        print(f"| {policy!r} | {computed}/{calls} | {'yes' if same else 'NO'} | {eager_speedup:.2f}x | {compiled_speedup:.2f}x "
              f"| {compile_speedup:.2f}x | {total:.2f}x | {eager_s:.2f} | {compiled_s:.2f} |")


if __name__ == "__main__":
    main()
