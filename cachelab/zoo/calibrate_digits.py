"""Measure TeaCache's coefficients and MagCache's ratios for the digits model and store them with it.

    python -m cachelab.zoo.calibrate_digits [--seeds 3]

Writes ``digits/calibration.json``; ``load_pipeline`` gives them to the executor, so ``TeaCache()`` and
``MagCache()`` on the digits model use numbers measured on it rather than FLUX.1-dev's.
"""

import argparse
import json

import torch

from cachelab.calibrate import magcache_ratios, teacache_coefficients
from cachelab.zoo import CALIBRATION_FILE, load_pipeline, path, prompts_for


def calibrate(seeds: int, steps: int = 28) -> dict:
    pipe = load_pipeline("digits", calibrated=False)
    pipe.set_progress_bar_config(disable=True)
    batches = [prompts_for(range(10))] * seeds

    def call_kwargs():
        return dict(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="np")

    return {
        "teacache_coefficients": teacache_coefficients(pipe, batches, **call_kwargs()),
        "magcache_ratios": magcache_ratios(pipe, batches, **call_kwargs()),
        "command": f"python -m cachelab.zoo.calibrate_digits --seeds {seeds}",
        "data": f"10 digits x {seeds} seeds, {steps} steps, uncached",
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    numbers = calibrate(args.seeds)
    target = path("digits") / CALIBRATION_FILE
    target.write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {target}:\n{json.dumps(numbers, indent=2)}")


if __name__ == "__main__":
    main()
