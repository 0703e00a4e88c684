"""Measure the video digits model and write its card: ``python experiments/train_video_digits/measure_video_digits.py``.

Writes measurements.json, samples.png and README.md (the model card) into the checkpoint folder (or --dir);
every number in the card comes from this run or from the training run's train_log.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from card import write_card
from PIL import Image

from cachelab import zoo
from cachelab.zoo.video_data import all_video_prompts
from cachelab.zoo.video_metric import video_accuracy_of_prompts

COMMAND = "python experiments/train_video_digits/measure_video_digits.py"
STEPS = 30
SEEDS = (0, 1)
GUIDANCE = (5.0, 1.0)  # the default true CFG, and none (the conditional branch alone)


def generate(pipe, seed: int, guidance: float, prompts=None) -> np.ndarray:
    """(N, 9, 32, 32, 3) frames in [0, 1] of the 40 prompts, from one generator seeded with `seed`."""
    prompts = prompts or all_video_prompts()
    gen = torch.Generator().manual_seed(seed)
    return pipe(prompts, num_inference_steps=STEPS, guidance_scale=guidance, generator=gen, output_type="np").frames


def accuracy(pipe, guidance: float) -> tuple[dict, list[np.ndarray]]:
    videos = [generate(pipe, seed, guidance) for seed in SEEDS]
    scores = video_accuracy_of_prompts(np.concatenate(videos), all_video_prompts() * len(SEEDS))
    return {key: round(value, 4) for key, value in scores.items()}, videos


def seconds_per_call(pipe, repeats: int = 5) -> dict:
    """Median wall time of one transformer call and of one whole 1-prompt generation (CFG, STEPS steps)."""
    calls = []
    hooks = [pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(time.perf_counter())),
             pipe.transformer.register_forward_hook(lambda *_: calls.append(time.perf_counter()))]
    whole = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            generate(pipe, 0, GUIDANCE[0], all_video_prompts()[:1])
            whole.append(time.perf_counter() - start)
    finally:
        for hook in hooks:
            hook.remove()
    per_call = [end - begin for begin, end in zip(calls[::2], calls[1::2])]
    return {"transformer_call_ms": round(1000 * statistics.median(per_call), 2),
            "generation_s": round(statistics.median(whole), 3)}


def save_samples(videos: np.ndarray, target: Path, rows: int = 8) -> None:
    """One row per video (the first `rows` prompts' ... every fifth prompt), its frames left to right, 2x."""
    picked = videos[::5][:rows]
    grid = np.concatenate([np.concatenate(list(video), axis=1) for video in picked], axis=0)
    image = Image.fromarray((grid * 255).round().astype(np.uint8))
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(target)


def checkpoint_megabytes(root: Path) -> float:
    return round(sum(f.stat().st_size for f in root.rglob("*.safetensors")) / 2**20, 2)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=zoo.path("video_digits"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = zoo.load_pipeline(args.dir, calibrated=False)
    pipe.set_progress_bar_config(disable=True)
    record = {"command": COMMAND, "steps": STEPS, "seeds": list(SEEDS), "prompts": len(all_video_prompts()),
              "accuracy": {}, "threads": args.threads}
    for guidance in GUIDANCE:
        scores, videos = accuracy(pipe, guidance)
        record["accuracy"][f"guidance {guidance:g}"] = scores
        print(f"guidance {guidance:g}: {scores}", flush=True)
        if guidance == GUIDANCE[0]:
            save_samples(videos[0], args.dir / "samples.png")
    record["speed"] = seconds_per_call(pipe)
    record["checkpoint_mb"] = checkpoint_megabytes(args.dir)
    (args.dir / "measurements.json").write_text(json.dumps(record, indent=1) + "\n")
    write_card(args.dir)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
