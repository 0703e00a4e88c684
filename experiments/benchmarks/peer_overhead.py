"""cachelab's runtime against diffusers' hooks at identical decisions, from paired runs in one process.

    python experiments/benchmarks/peer_overhead.py [--repeats 7] [--batch 4] [--steps 28] [--threads 1]

On the embedded digits model (FluxPipeline), each pair runs the peer's cache and cachelab's twin, alternating,
and prints the median ratio cachelab time / diffusers time (target: <= 1.00) with the decisions of both (the
computed calls and the images must agree, or the ratio compares different work): First Block Cache (a step
unit), Pyramid Attention Broadcast (a module unit) and TaylorSeer on the attention modules (a module unit with
forecasts).
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import FirstBlockCacheConfig, FluxPipeline, PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig

sys.path.insert(0, str(Path(__file__).parents[1]))
import harness  # noqa: E402

from cachelab import FirstBlockCache, TaylorSeer, zoo  # noqa: E402
from cachelab.policies import PyramidAttentionBroadcast  # noqa: E402


def pairs(pipe):
    timestep = lambda: pipe._current_timestep  # noqa: E731
    return {
        "first_block 0.2": (FirstBlockCache(0.2), FirstBlockCacheConfig(threshold=0.2)),
        "pab spatial 3": (PyramidAttentionBroadcast(spatial_attention_block_skip_range=3),
                          PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=3, current_timestep_callback=timestep)),
        "taylorseer module 3": (TaylorSeer(3, order=1, warmup_steps=3, unit="module"),
                                TaylorSeerCacheConfig(cache_interval=3, taylor_factors_dtype=torch.float32)),
    }


def run(pipe, prompts, steps):
    start = time.perf_counter()
    images = pipe(prompts, height=32, width=32, max_sequence_length=8, num_inference_steps=steps,
                  generator=torch.Generator().manual_seed(0), output_type="np").images
    return time.perf_counter() - start, images


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = FluxPipeline(**zoo.load_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    prompts = zoo.prompts_for(range(args.batch))
    print(f"digits, batch {args.batch}, {args.steps} steps, {args.threads} thread(s), {args.repeats} pairs (median)")
    print("| pair | cachelab / diffusers | images max |diff| |")
    print("|---|---|---|")
    for name, (policy, config) in pairs(pipe).items():
        ratios, gap = [], 0.0
        for repeat in range(args.repeats + 1):
            with harness.with_diffusers(config, pipe):
                peer, peer_images = run(pipe, prompts, args.steps)
            with harness.with_cachelab(policy, pipe):
                ours, images = run(pipe, prompts, args.steps)
            gap = max(gap, float(np.abs(images - peer_images).max()))
            if repeat:  # the first pair warms up
                ratios.append(ours / peer)
        print(f"| {name} | {statistics.median(ratios):.3f} | {gap:.1e} |")


if __name__ == "__main__":
    main()
