"""What the exact text K/V cache saves on the embedded video model, from paired runs in one process.

    python experiments/benchmarks/text_kv.py [--repeats 7] [--steps 28] [--batch 4] [--threads 1] [--text-tokens N]

Each pair runs a generation with ``NoCache`` and with ``NoCache`` + the text K/V cache, alternating (then the same
under First Block Cache 0.1), and prints the median wall-time ratio, the block work of one transformer call with the
cache as a share of the block work without it (the blocks' measured CPU time, ``cachelab.engine.units.Costs``), and
whether the videos are identical (they must be: the cache is exact). ``--text-tokens``: the prompt padded to N
tokens (the model's default is its training length; Wan's pipelines pad to 512).
"""

import argparse
import statistics
import time

import torch

import cachelab
from cachelab import FirstBlockCache, NoCache, zoo
from cachelab.zoo.video_data import all_video_prompts


def run(pipe, prompts, steps, policy, text_kv, text_tokens=None):
    executor = cachelab.attach(pipe, policy, text_kv=text_kv)
    try:
        start = time.perf_counter()
        extra = {} if text_tokens is None else {"max_sequence_length": text_tokens}
        frames = pipe(prompts, num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="pt",
                      **extra).frames
        seconds = time.perf_counter() - start
    finally:
        cachelab.detach(pipe)
    block_seconds = sum(executor.costs.of(f"block{i}") for i in range(len(executor.blocks)))
    return seconds, block_seconds, frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text-tokens", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pipe = zoo.load_pipeline("video_digits")
    pipe.set_progress_bar_config(disable=True)
    prompts = all_video_prompts()[: args.batch]
    print(f"video_digits, batch {args.batch}, {args.steps} steps, {args.threads} thread(s), {args.repeats} pairs (median), "
          f"text tokens {args.text_tokens or 'as trained'}")
    print("| under | wall time with / without | block work with / without | identical |")
    print("|---|---|---|---|")
    for name, make in (("none", NoCache), ("first_block 0.1", lambda: FirstBlockCache(0.1))):
        walls, works, identical = [], [], True
        for repeat in range(args.repeats + 1):
            plain = run(pipe, prompts, args.steps, make(), False, args.text_tokens)
            cached = run(pipe, prompts, args.steps, make(), True, args.text_tokens)
            identical &= torch.equal(plain[2], cached[2])
            if repeat:  # the first pair warms up
                walls.append(cached[0] / plain[0])
                works.append(cached[1] / plain[1])
        print(f"| {name} | {statistics.median(walls):.3f} | {statistics.median(works):.3f} | {identical} |")


if __name__ == "__main__":
    main()
