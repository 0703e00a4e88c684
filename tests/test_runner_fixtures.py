"""Helpers shared by the CLI/runner/tracking tests: a tiny saved pipeline, composed configs, CLI runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tiny
from hydra import compose, initialize_config_dir

from cachelab.config import config_dir

REPO = Path(__file__).resolve().parent.parent


def saved_tiny_flux(tmp_path_factory) -> Path:
    """tests/tiny.py's random FluxPipeline saved with save_pretrained, once per session."""
    directory = tmp_path_factory.getbasetemp() / "tiny_flux_pipeline"
    if not (directory / "model_index.json").is_file():
        tiny.flux_pipeline().save_pretrained(directory)
    return directory


def tiny_overrides(pipeline_dir: Path, cache_dir: Path) -> list[str]:
    """A fast run on the tiny pipeline: 2 prompts, 4 steps, one timed round, no W&B."""
    return [
        "model=flux", f"model.path={pipeline_dir}", "height=32", "width=32", "steps=4",
        "model.call_kwargs.max_sequence_length=16", "prompts=['a photo of a cat','a red dog']",
        "timing.prompts=1", "timing.repeats=1", "timing.warmup=0", "logger=none", f"cache_dir={cache_dir}", "quiet=true", "threads=1",
    ]


def composed(overrides: list[str] = (), return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def run_cli(args: list[str], cwd: Path, timeout: float = 300, module: str = "cachelab", **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)
