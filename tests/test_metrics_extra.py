"""The metrics extra's install path: .ci/run installs `.[metrics]` over the CPU torch in a venv of its own and names
that venv's python in CACHELAB_METRICS_PYTHON. The LPIPS and Inception FID tests, which skip beside the CPU torch
build, must run and pass there."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
METRICS_PYTHON = os.environ.get("CACHELAB_METRICS_PYTHON")


@pytest.mark.skipif(not METRICS_PYTHON, reason="CACHELAB_METRICS_PYTHON names no venv with the metrics extra (.ci/run makes one)")
def test_the_torchvision_metrics_run_and_pass_where_the_metrics_extra_is_installed():
    done = subprocess.run([METRICS_PYTHON, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "tests/test_perceptual_backbones.py", "tests/test_perceptual.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, done.stdout[-3000:]
