"""Embedded trained checkpoints (cachelab's default model) and their offline loader.

    from cachelab import zoo
    pipe = zoo.load_pipeline()                  # the digits FluxPipeline, 32x32, offline
    images = pipe(zoo.prompts_for([3, 7])).images
    zoo.digit_accuracy(images, [3, 7])
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from cachelab.calibration import use_calibration_file
from cachelab.zoo.checkpoint import CheckpointError, check_checkpoint, from_pretrained
from cachelab.zoo.classifier import classify_digits, digit_accuracy, digit_accuracy_of_prompts
from cachelab.zoo.data import CALL_DEFAULTS, DIGIT_PROMPT, prompts_for

_ROOT = Path(__file__).parent
MODELS = ("digits", "video_digits")

__all__ = [
    "CALL_DEFAULTS", "DIGIT_PROMPT", "MODELS", "CheckpointError", "check_checkpoint", "classify_digits",
    "digit_accuracy", "digit_accuracy_of_prompts", "load_pipeline", "path", "prompts_for",
]


def path(name: str = "digits") -> Path:
    """Directory of the embedded checkpoint `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown zoo model {name!r}; available: {', '.join(MODELS)}")
    return _ROOT / name


def _resolve(name_or_dir: str | os.PathLike) -> Path:
    if isinstance(name_or_dir, str) and name_or_dir in MODELS:
        return path(name_or_dir)
    if isinstance(name_or_dir, os.PathLike) or os.sep in name_or_dir:
        return Path(name_or_dir)
    return path(name_or_dir)  # raises, listing the names


def _pipeline_class(root: Path):
    """The zoo's subclass (call defaults that fit the model) of the pipeline class model_index.json names."""
    if json.loads((root / "model_index.json").read_text())["_class_name"] == "WanPipeline":
        from cachelab.zoo.video_model import VideoDigitsWanPipeline

        return VideoDigitsWanPipeline
    from cachelab.zoo.digits_model import DigitsFluxPipeline

    return DigitsFluxPipeline


def load_pipeline(name: str | os.PathLike = "digits", torch_dtype=None, calibrated: bool = True):
    """Load a zoo model (or a copy of one, given its directory) offline.

    The result is a `DigitsFluxPipeline`, a FluxPipeline subclass whose call defaults are CALL_DEFAULTS,
    so `pipe(prompt)` produces 32x32 images with the prompt length the model was trained on; for
    `video_digits` a `VideoDigitsWanPipeline` (9 frames of 32x32, `cachelab.zoo.video_data.CALL_DEFAULTS`). With
    `calibrated`, TeaCache and MagCache use the numbers measured on this model (`calibration.json`)
    instead of the published FLUX.1-dev ones.
    """
    root = _resolve(name)
    check_checkpoint(root)
    pipeline_class = _pipeline_class(root)  # imports diffusers: only when a model loads
    try:
        pipe = from_pretrained(pipeline_class, root, torch_dtype or torch.float32, local_files_only=True,
                               low_cpu_mem_usage=False)
    except Exception as err:
        raise CheckpointError(f"failed to load the checkpoint in {root}: {err}") from err
    if hasattr(pipe, "default_sample_size"):
        pipe.default_sample_size = CALL_DEFAULTS["height"] // pipe.vae_scale_factor
    if calibrated:
        use_calibration_file(pipe.transformer, root)
    return pipe
