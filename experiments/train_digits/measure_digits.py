"""Measure the digits model and write its card: ``python experiments/train_digits/measure_digits.py [--dir DIR]``.

Writes measurements.json, samples.png and README.md (the model card) into the checkpoint folder;
every number in the card comes from this run or from the training run's train_log.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from card import write_card
from diffusers.hooks import FirstBlockCacheConfig

from cachelab import metrics, zoo
from cachelab.policies.base import relative_l1
from cachelab.runner import call_timer

COMMAND = "python experiments/train_digits/measure_digits.py"

STEPS = 28
SEEDS = range(10)
DIGITS = list(range(10))
THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
CFG = dict(negative_prompt="", true_cfg_scale=3.0)


def generate(pipe, seed: int, digits=DIGITS, **kwargs) -> np.ndarray:
    """(N, 32, 32, 3) images in [0, 1], one per digit, from one generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    return pipe(zoo.prompts_for(digits), num_inference_steps=STEPS, generator=gen, output_type="np", **kwargs).images


def accuracy(pipe, **kwargs) -> tuple[float, list[np.ndarray]]:
    images = [generate(pipe, seed, **kwargs) for seed in SEEDS]
    return zoo.digit_accuracy(np.concatenate(images), DIGITS * len(SEEDS)), images


def rel_change(seq: list[torch.Tensor]) -> list[float]:
    """mean|x_t - x_{t-1}| / mean|x_{t-1}| for t = 1..T-1 (First Block Cache's measure)."""
    return [relative_l1(b, a) for a, b in zip(seq, seq[1:])]


def dynamics(pipe) -> dict:
    """Per-step relative change of block 0's image-stream residual and of the model output, mean over seeds."""
    residuals, outputs = [], []

    def on_block(module, args, kwargs, out):
        residuals.append(out[1] - kwargs["hidden_states"])

    def on_model(module, args, out):
        outputs.append(out[0])

    hooks = [pipe.transformer.transformer_blocks[0].register_forward_hook(on_block, with_kwargs=True),
             pipe.transformer.register_forward_hook(on_model)]
    per_seed = []
    try:
        for seed in SEEDS:
            residuals.clear()
            outputs.clear()
            generate(pipe, seed)
            per_seed.append((rel_change(residuals), rel_change(outputs)))
    finally:
        for hook in hooks:
            hook.remove()
    mean = lambda rows: [round(float(np.mean(col)), 4) for col in zip(*rows)]  # noqa: E731
    return {"first_block": mean([r for r, _ in per_seed]), "output": mean([o for _, o in per_seed])}


def median_seconds(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_times(pipe, threshold: float | None = None) -> list[float]:
    """Seconds of every transformer call over one 10-image generation (optionally under FBC)."""
    if threshold is not None:
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        with call_timer(pipe.transformer) as times:
            generate(pipe, 0)
    finally:
        if threshold is not None:
            pipe.transformer.disable_cache()
    return times


def mean_psnr(reference: np.ndarray, images: np.ndarray) -> float:
    """Mean per-image PSNR in dB, infinite if any image equals its reference: the card's published figure,
    not `metrics.psnr` (the PSNR of the whole set), which `python -m cachelab` reports."""
    return metrics.mean(metrics.psnr_per_sample(reference, images))


def first_block_cache(pipe, threshold: float, reference: list[np.ndarray]) -> dict:
    """Computed steps (of STEPS, per seed), PSNR vs uncached, accuracy and time under diffusers' FBC."""
    computed = []
    counter = pipe.transformer.transformer_blocks[1].norm1.register_forward_hook(lambda *a: computed.append(1))
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        steps, images = [], []
        for seed in SEEDS:
            computed.clear()
            images.append(generate(pipe, seed))
            steps.append(len(computed))
        seconds = median_seconds(lambda: generate(pipe, 0))
    finally:
        counter.remove()
        pipe.transformer.disable_cache()
    return dict(
        threshold=threshold, computed_steps_mean=float(np.mean(steps)), computed_steps_min=min(steps),
        computed_steps_max=max(steps), psnr_db=round(mean_psnr(np.concatenate(reference), np.concatenate(images)), 2),
        accuracy=zoo.digit_accuracy(np.concatenate(images), DIGITS * len(SEEDS)), seconds_10x28=round(seconds, 3),
    )


def sample_grid(pipe, file: Path, seeds: int = 8, scale: int = 2) -> None:
    """One row per digit, one column per seed (uncached, default call), 2px gaps."""
    from PIL import Image

    columns = [generate(pipe, 100 + s) for s in range(seeds)]
    tile, gap = 32 * scale, 2
    grid = Image.new("L", (seeds * (tile + gap) + gap, 10 * (tile + gap) + gap), 96)
    for col, images in enumerate(columns):
        for row, image in enumerate(images):
            im = Image.fromarray((image.mean(-1) * 255).round().astype(np.uint8)).resize((tile, tile), Image.NEAREST)
            grid.paste(im, (gap + col * (tile + gap), gap + row * (tile + gap)))
    grid.save(file, optimize=True)


def parameter_counts(pipe) -> dict:
    parts = ("transformer", "vae", "text_encoder", "text_encoder_2")
    return {name: sum(p.numel() for p in getattr(pipe, name).parameters()) for name in parts}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@torch.no_grad()
def speed(pipe) -> dict:
    """Medians of 3 uncached 10x28 generations (and with true CFG), per-call transformer times."""
    generate(pipe, 0)  # warm-up
    uncached = forward_times(pipe)
    skipped = forward_times(pipe, threshold=1e9)[1:]  # after the first call every step is skipped
    return dict(
        seconds_10x28=round(median_seconds(lambda: generate(pipe, 0)), 3),
        seconds_10x28_cfg3=round(median_seconds(lambda: generate(pipe, 0, **CFG)), 3),
        forward_ms_batch10=round(1000 * statistics.median(uncached), 2),
        skipped_forward_ms_batch10=round(1000 * statistics.median(skipped), 2),
    )


@torch.no_grad()
def measure(pipe, folder: Path) -> dict:
    m = dict(command=COMMAND, steps=STEPS, seeds=len(SEEDS), cpu=cpu_name(),
             threads=torch.get_num_threads(), torch=torch.__version__, parameters=parameter_counts(pipe))
    m["accuracy"], reference = accuracy(pipe)
    m["accuracy_cfg3"], _ = accuracy(pipe, **CFG)
    m["speed"] = {str(m["threads"]): speed(pipe)}
    m["dynamics"] = dynamics(pipe)
    m["sigmas"] = [round(float(sigma), 4) for sigma in pipe.scheduler.sigmas]
    m["first_block_cache"] = [first_block_cache(pipe, thr, reference) for thr in THRESHOLDS]
    sample_grid(pipe, folder / "samples.png")
    return m


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=zoo.path("digits"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is robust on shared cores)")
    parser.add_argument("--speed-only", action="store_true",
                        help="only add the speed at --threads to an existing measurements.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    pipe = zoo.load_pipeline(args.dir)
    pipe.set_progress_bar_config(disable=True)
    file = args.dir / "measurements.json"
    if args.speed_only:
        m = json.loads(file.read_text())
        m["speed"][str(args.threads)] = speed(pipe)
    else:
        m = measure(pipe, args.dir)
        m["seconds_measure"] = round(time.perf_counter() - start, 1)
    file.write_text(json.dumps(m, indent=1) + "\n")
    write_card(args.dir, m)
    print(json.dumps({k: v for k, v in m.items() if k not in ("dynamics", "sigmas")}, indent=1))


if __name__ == "__main__":
    main()
