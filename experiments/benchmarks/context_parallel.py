"""Caching under context parallelism: speedup on N ranks against the same policy on one process, and
what keeping the ranks in step costs per transformer call.

    torchrun --nproc_per_node 2 experiments/benchmarks/context_parallel.py [--tiny] [--repeats 3] [--out cp.json]

On CUDA the ranks use NCCL (one GPU each), else gloo on the CPU. For every policy, rank 0 first times
uncached and cached generations alone (the other ranks wait), alternating, then all ranks time the same
pair under Ulysses context parallelism (degree = number of ranks). Speedups are medians of paired ratios.
The synchronisation cost is what ``cachelab.parallel`` exchanged: all-gathers per call, their size
(scalars, never activations) and their wall time.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

import cachelab
from cachelab import launch
from cachelab.policies import DualBlockCache, FirstBlockCache, FixedInterval, Learned, MagCache, TaylorSeer, TeaCache
from cachelab.zoo import load_pipeline, prompts_for

POLICIES = {
    "first_block 0.2": lambda: FirstBlockCache(threshold=0.2),
    "teacache 0.2": lambda: TeaCache(threshold=0.2),
    "magcache 0.12": lambda: MagCache(threshold=0.12),
    "dbcache F1B0 0.12": lambda: DualBlockCache(threshold=0.12, compute_first=1, warmup_steps=0),
    "fixed_interval 3": lambda: FixedInterval(interval=3),
    "taylorseer 4": lambda: TaylorSeer(interval=4, order=1),
    "learned 6": lambda: Learned(budget=6),
}


def timed(pipe, prompts, steps) -> float:
    start = time.perf_counter()
    pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def paired(pipe, prompts, steps, make_policy, repeats) -> tuple[float, object]:
    """Median uncached / cached time over ``repeats`` alternating pairs, and the last executor."""
    ratios, executor = [], None
    for repeat in range(repeats):
        times = {}
        for cached in ((False, True) if repeat % 2 == 0 else (True, False)):
            if cached:
                executor = cachelab.attach(pipe, make_policy())
            try:
                times[cached] = timed(pipe, prompts, steps)
            finally:
                if cached:
                    cachelab.detach(pipe)
        ratios.append(times[False] / times[True])
    return statistics.median(ratios), executor


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="2 prompts and two policies: a check that it runs")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON (rank 0)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    launch.start(launch.ParallelConfig(ulysses_degree=int(os.environ["WORLD_SIZE"])), device)
    ranks, rank = dist.get_world_size(), dist.get_rank()
    if not cuda:
        torch.set_num_threads(1)
    policies = dict(list(POLICIES.items())[:2]) if args.tiny else POLICIES
    prompts = prompts_for([i % 10 for i in range(2 if args.tiny else args.batch)])
    steps = 28

    alone = load_pipeline().to(device)
    parallel = load_pipeline().to(device)
    launch.enable(parallel.transformer, launch.ParallelConfig(ulysses_degree=ranks))
    for pipe in (alone, parallel):
        pipe.set_progress_bar_config(disable=True)
    rows = {}
    for name, make_policy in policies.items():
        one = paired(alone, prompts, steps, make_policy, args.repeats)[0] if rank == 0 else None
        dist.barrier()
        speedup, executor = paired(parallel, prompts, steps, make_policy, args.repeats)
        calls, reduction = len(executor.trace), executor.reduction
        rows[name] = dict(
            computed=sum(r.computed for r in executor.trace), calls=calls, speedup_one_process=one, speedup_parallel=speedup,
            messages_per_call=reduction.messages / calls, message_bytes=8 * (reduction.width + 2),
            sync_ms_per_call=1000 * reduction.seconds / calls,
            call_ms=1000 * statistics.median(r.seconds for r in executor.trace if r.computed),
        )
    if rank == 0:
        print(f"{ranks} ranks ({'NCCL' if cuda else 'gloo, CPU'}), Ulysses degree {ranks}; digits model, batch "
              f"{len(prompts)}, {steps} steps, {args.repeats} paired repeats")
        print("| policy | computed | speedup, 1 process | speedup, CP | all-gathers / call | bytes each | sync ms / call "
              "| computed call ms |")
        print("|---|---|---|---|---|---|---|---|")
        for name, row in rows.items():
            print(f"| {name} | {row['computed']}/{row['calls']} | {row['speedup_one_process']:.2f}x "
                  f"| {row['speedup_parallel']:.2f}x | {row['messages_per_call']:.2f} | {row['message_bytes']} "
                  f"| {row['sync_ms_per_call']:.3f} | {row['call_ms']:.1f} |")
        if args.out is not None:
            args.out.write_text(json.dumps(dict(ranks=ranks, backend=dist.get_backend(), rows=rows), indent=2) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
