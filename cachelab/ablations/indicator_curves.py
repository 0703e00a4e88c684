"""How closely each indicator of TeaCache's ablation follows the ideal one, along uncached generations.

    python -m cachelab.ablations.indicator_curves [--out experiments/teacache_indicators/indicators.png]

generates the digits model's 10 prompts (prompt i seeded i, 28 steps) uncached and records at every step
the four indicators of `experiments/teacache_indicators` and the model output's relative change: (a) the
rescaled and (b) the raw change of the modulated input, (c) the timestep embedding's change, (d) the
change of the residual of all blocks. It prints each one's Pearson correlation with (d) and with the
output change over all (prompt, step) pairs, and plots their means per step, each divided by its mean.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from ..calibrate.signals import signal_pairs
from ..calibration import measured
from ..engine.attach import attach, detach
from ..policies.base import relative_l1
from ..policies.teacache import rescale
from .indicators import TimestepEmbeddingChange, UncachedResidualChange

NAMES = ("(a) rescaled input", "(b) raw input", "(c) timestep embedding", "(d) uncached residual", "model output")


def curves(pipe, prompts: list[str], steps: int = 28) -> np.ndarray:
    """(indicator, prompt, step) changes from step 1 to the last, indicators in the order of ``NAMES``."""
    coefficients = measured(pipe.transformer)["teacache"]["coefficients"]
    found = []
    for seed, prompt in enumerate(prompts):
        def call(prompt=prompt, seed=seed):
            return pipe(prompt, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed), output_type="np")

        raw, output = signal_pairs(pipe, [prompt], num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                                   output_type="np")
        executor = attach(pipe, UncachedResidualChange())
        try:
            residuals = executor.rehearse(call)["cond"]
        finally:
            detach(pipe)
        embedding = TimestepEmbeddingChange()
        embeddings = [embedding.embedding(t) for t in pipe.scheduler.timesteps / 1000]
        found.append([
            [rescale(coefficients, x) for x in raw], raw,
            [relative_l1(b, a) for a, b in zip(embeddings, embeddings[1:])],
            [relative_l1(b, a) for a, b in zip(residuals, residuals[1:])], output,
        ])
    return np.asarray(found, dtype=float).transpose(1, 0, 2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cachelab.ablations.indicator_curves", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("experiments/teacache_indicators/indicators.png"))
    args = parser.parse_args(argv)
    from .. import zoo

    torch.set_num_threads(1)
    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    values = curves(pipe, zoo.prompts_for(range(10)))
    flat = values.reshape(len(NAMES), -1)
    print("| indicator | correlation with (d) | with the output change |\n|---|---:|---:|")
    for name, series in zip(NAMES[:4], flat):
        print(f"| {name} | {np.corrcoef(series, flat[3])[0, 1]:.3f} | {np.corrcoef(series, flat[4])[0, 1]:.3f} |")
    plot(values, args.out)
    print(f"wrote {args.out}")


def plot(values: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, panel = plt.subplots(figsize=(7, 4))
    steps = np.arange(1, values.shape[2] + 1)
    for name, series in zip(NAMES, values):
        mean = series.mean(axis=0)
        panel.plot(steps, mean / mean.mean(), marker=".", linestyle=":" if name == "model output" else "-", label=name)
    panel.set(xlabel="step", ylabel="change from the previous step / its mean",
              title="indicators along uncached digits generations (mean of 10)")
    panel.grid(alpha=0.3)
    panel.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    main()
