"""The digits task: scikit-learn's 8x8 digits as 32x32 images, the inverse map used to classify
samples, the prompts, and the call sizes the embedded model is trained for."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DATASET_MAX = 16.0  # load_digits stores ink as integers 0..16
IMAGE_SIZE = 32
DIGIT_PROMPT = "a handwritten digit {}"
MAX_SEQUENCE_LENGTH = 8  # T5 tokens; "a handwritten digit 7" is 5 with </s>
# FluxPipeline's own defaults (1024x1024 for this VAE, 512 T5 tokens) do not fit the digits model.
CALL_DEFAULTS = {"height": IMAGE_SIZE, "width": IMAGE_SIZE, "max_sequence_length": MAX_SEQUENCE_LENGTH}


def prompts_for(digits) -> list[str]:
    """["a handwritten digit 3", ...] for digits [3, ...]."""
    return [DIGIT_PROMPT.format(int(d)) for d in digits]


def load_digits_8x8() -> tuple[np.ndarray, np.ndarray]:
    """(N, 8, 8) float32 images in 0..16 and their (N,) integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32), data.target.astype(np.int64)


def upsample(images_8x8: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) in 0..16 -> (N, 1, 32, 32) in [0, 1], bilinear: white ink on black."""
    x = torch.as_tensor(images_8x8, dtype=torch.float32)[:, None] / DATASET_MAX
    return F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)


def downsample(images: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) in [0, 1] -> (N, 8, 8) in 0..16 by area averaging (inverse of `upsample`)."""
    return F.adaptive_avg_pool2d(images, (8, 8))[:, 0] * DATASET_MAX
