"""Executor overhead and the cost of a skipped step, from paired runs in one process.

    python experiments/benchmarks/executor_overhead.py [--repeats 7] [--batch 10] [--steps 28]

Runs the embedded digits model (FluxPipeline) plain and with ``NoCache`` attached, alternating, and
prints the median ratio (target: under 1.02). Then, from the executor's per-call trace, the median
time of a skipped call relative to a computed one for First Block Cache and TeaCache.
"""

import argparse
import statistics
import time

import torch

import cachelab
from cachelab import FirstBlockCache, NoCache, TeaCache
from cachelab.zoo import load_pipeline, prompts_for


def generate(pipe, prompts, steps):
    pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")


def timed(pipe, prompts, steps) -> float:
    start = time.perf_counter()
    generate(pipe, prompts, steps)
    return time.perf_counter() - start


def overhead(pipe, prompts, steps, repeats) -> list[float]:
    ratios = []
    for _ in range(repeats):
        plain = timed(pipe, prompts, steps)
        cachelab.attach(pipe, NoCache())
        try:
            attached = timed(pipe, prompts, steps)
        finally:
            cachelab.detach(pipe)
        ratios.append(attached / plain)
    return ratios


def skipped_call_cost(pipe, prompts, steps, policy) -> tuple[float, int]:
    executor = cachelab.attach(pipe, policy)
    try:
        generate(pipe, prompts, steps)
    finally:
        cachelab.detach(pipe)
    computed = [r.seconds for r in executor.trace if r.computed]
    skipped = [r.seconds for r in executor.trace if not r.computed]
    if not skipped:
        return float("nan"), len(computed)
    return statistics.median(skipped) / statistics.median(computed), len(computed)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--steps", type=int, default=28)
    args = parser.parse_args()
    torch.manual_seed(0)
    pipe = load_pipeline("digits")
    pipe.set_progress_bar_config(disable=True)
    prompts = prompts_for([i % 10 for i in range(args.batch)])
    generate(pipe, prompts, args.steps)  # warm-up
    ratios = overhead(pipe, prompts, args.steps, args.repeats)
    print(f"NoCache / plain wall time: median {statistics.median(ratios):.4f} "
          f"(min {min(ratios):.4f}, max {max(ratios):.4f}, {args.repeats} pairs, batch {args.batch}, {args.steps} steps)")
    for policy in (FirstBlockCache(0.2), TeaCache(0.6)):
        cost, computed = skipped_call_cost(pipe, prompts, args.steps, policy)
        print(f"{policy!r}: {computed}/{args.steps} steps computed; a skipped call costs {cost:.1%} of a computed one")


if __name__ == "__main__":
    main()
