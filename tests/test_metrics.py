"""Quality and speed figures on hand-made inputs with known answers."""

import math
from types import SimpleNamespace

import numpy as np
import pytest

from cachelab import metrics


def record(branch="cond", computed=True, seconds=1.0, work=1.0):
    return SimpleNamespace(branch=branch, computed=computed, seconds=seconds, work=work)


def test_psnr_of_a_known_error_and_of_identical_images():
    reference = np.full((2, 16, 16, 3), 0.5, dtype=np.float32)
    cached = reference.copy()
    cached[0] += 0.1  # mse 0.01 -> 20 dB
    per_sample = metrics.psnr_per_sample(reference, cached)
    assert per_sample[0] == pytest.approx(20.0, abs=1e-4) and math.isinf(per_sample[1])
    assert metrics.psnr(reference, cached) == pytest.approx(10 * math.log10(1 / 0.005), abs=1e-4)  # mean mse 0.005
    assert math.isinf(metrics.psnr(reference, reference))


def test_ssim_of_images_and_videos():
    rng = np.random.default_rng(0)
    images = rng.random((2, 16, 16, 3), dtype=np.float32)
    assert metrics.ssim(images, images) == pytest.approx([1.0, 1.0])
    videos = rng.random((1, 3, 16, 16, 3), dtype=np.float32)
    noisy = np.clip(videos + rng.normal(0, 0.2, videos.shape), 0, 1).astype(np.float32)
    (value,) = metrics.ssim(videos, noisy)
    assert 0 < value < 1


def test_speedup_is_a_ratio_of_medians():
    assert metrics.speedup([4.0, 100.0, 4.2], [2.0, 2.1, 1.9]) == pytest.approx(4.2 / 2.0)


def test_computed_fraction_per_branch_and_overall():
    trace = [record("cond", True), record("cond", False), record("uncond", True), record("uncond", True)]
    assert metrics.computed_fraction(trace) == {"cond": 0.5, "uncond": 1.0, "all": 0.75}


def test_ideal_speedup_counts_skipped_calls_at_their_measured_block_work():
    trace = [record(computed=True, seconds=1.2)] * 2 + [record(computed=False, seconds=0.3, work=0.25)] * 2
    ideal, skip_cost = metrics.ideal_speedup(trace, full_call_seconds=1.0)
    assert skip_cost == pytest.approx(0.3)
    assert metrics.work_fraction(trace) == pytest.approx((2 + 2 * 0.25) / 4)
    assert ideal == pytest.approx(4 / (2 + 2 * 0.25))
    assert metrics.executor_overhead(trace, 1.0) == pytest.approx(0.2)


def test_ideal_speedup_without_skips_is_one():
    assert metrics.ideal_speedup([record()] * 3, 1.0) == (1.0, 0.0)
