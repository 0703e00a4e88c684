"""Quality and speed figures of a cached run against its uncached reference.

Images are float arrays in [0, 1]: (N, H, W, C) for images, (N, F, H, W, C) for videos.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity


def psnr(reference: np.ndarray, cached: np.ndarray) -> float:
    """PSNR in dB of the whole set (from the MSE over every sample): infinite only if all are identical,
    unlike a mean of per-sample PSNRs, which one identical sample makes infinite."""
    if mean_squared_error(reference, cached) == 0:
        return float("inf")
    return float(peak_signal_noise_ratio(reference, cached, data_range=1.0))


def psnr_per_sample(reference: np.ndarray, cached: np.ndarray) -> list[float]:
    return [psnr(r[None], c[None]) for r, c in zip(reference, cached)]


def ssim(reference: np.ndarray, cached: np.ndarray) -> list[float]:
    """SSIM of every sample; a video's is the mean over its frames."""
    def one(r, c):
        frames = [(r, c)] if r.ndim == 3 else zip(r, c)
        return float(np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1) for a, b in frames]))

    return [one(r, c) for r, c in zip(reference, cached)]


def speedup(reference_seconds: Sequence[float], cached_seconds: Sequence[float]) -> float:
    """Median uncached wall time over median cached wall time."""
    return statistics.median(reference_seconds) / statistics.median(cached_seconds)


def computed_fraction(trace: Iterable) -> dict[str, float]:
    """Fraction of transformer calls that ran every block, per CFG branch and over all ("all")."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for record in trace:
        for branch in (record.branch, "all"):
            counts[branch][0] += bool(record.computed)
            counts[branch][1] += 1
    return {branch: computed / total for branch, (computed, total) in counts.items()}


def work_fraction(trace: Sequence) -> float:
    """The computed share of the transformer's block work over the trace's calls: each call's blocks and
    modules weighted by their measured time (``StepRecord.work``), averaged over calls."""
    return float(np.mean([r.work for r in trace])) if trace else 1.0


def ideal_speedup(trace: Sequence, full_call_seconds: float) -> tuple[float, float]:
    """(ideal speedup, skip cost) that the trace's decisions allow.

    ideal speedup = 1 / ``work_fraction``: the speedup if the blocks were all the work and what the policy
    skipped cost nothing (head and tail blocks, and the parts of a block a module-unit policy does not skip,
    count as computed). skip cost = median seconds of a fully skipped call / `full_call_seconds` (the
    median uncached transformer call; 0 when no call skipped every block it could). The gap between the
    ideal and the measured speedup is executor overhead plus everything outside the blocks.
    """
    skipped = [r.seconds for r in trace if not r.computed]
    skip_cost = statistics.median(skipped) / full_call_seconds if skipped else 0.0
    return 1.0 / work_fraction(trace), skip_cost


def executor_overhead(trace: Sequence, full_call_seconds: float) -> float | None:
    """How much longer a computed call takes under the executor than an uncached call (0.1 = 10%)."""
    computed = [r.seconds for r in trace if r.computed]
    return statistics.median(computed) / full_call_seconds - 1 if computed else None


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values))
