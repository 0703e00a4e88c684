"""Digit accuracy of generated images: an SVC fit on scikit-learn's real 8x8 digits (in-process, no pickle)."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from cachelab.zoo.data import DIGIT_PROMPT, downsample, load_digits_8x8


@lru_cache(maxsize=1)
def _classifier():
    from sklearn.svm import SVC

    images, labels = load_digits_8x8()
    return SVC(gamma=0.001, C=10.0).fit(images.reshape(len(images), -1), labels)


def _as_gray(images) -> torch.Tensor:
    """PIL images or an (N, H, W[, C]) array, in [0, 1] or uint8 -> (N, 1, H, W) float in [0, 1]."""
    if isinstance(images, np.ndarray):
        arr = images
    else:
        arr = np.stack([np.asarray(im.convert("L") if hasattr(im, "convert") else im) for im in images])
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.ndim == 4:
        arr = arr.mean(axis=-1)
    if arr.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, H, W, C), got {arr.shape}")
    return torch.from_numpy(arr)[:, None]


def classify_digits(images) -> np.ndarray:
    """Predicted digit (0-9) for every image: white ink on black, any size, downsampled to 8x8."""
    features = downsample(_as_gray(images)).reshape(-1, 64).numpy()
    return _classifier().predict(features)


def digit_accuracy(images, digits: Sequence[int]) -> float:
    """Fraction of `images` classified as the digit in the same position of `digits`."""
    predicted = classify_digits(images)
    digits = np.asarray(digits)
    if len(digits) != len(predicted):
        raise ValueError(f"{len(predicted)} images but {len(digits)} digits")
    return float((predicted == digits).mean())


_PROMPT_PATTERN = re.compile(re.escape(DIGIT_PROMPT).replace(re.escape("{}"), "([0-9])"))


def digit_of_prompt(prompt: str) -> int | None:
    """The digit that a prompt written by `prompts_for` names ("a handwritten digit 7" -> 7), else None."""
    match = _PROMPT_PATTERN.fullmatch(prompt)
    return int(match.group(1)) if match else None


def digit_accuracy_of_prompts(images, prompts: Sequence[str]) -> float | None:
    """`digit_accuracy` of `images` against the digits their `prompts` name; None when there are no prompts
    or any prompt is not one that `prompts_for` writes (the metric does not apply to them)."""
    digits = [digit_of_prompt(prompt) for prompt in prompts]
    if not digits or None in digits:
        return None
    return digit_accuracy(images, digits)
