"""Quality of generated digit videos, checked independently of the model: per-frame digit accuracy (the
digits classifier on a 16x16 crop around each frame's centre of mass) and motion-direction accuracy (from
the trajectory of the centre of mass)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cachelab.zoo.classifier import classify_digits
from cachelab.zoo.video_data import DIGIT_SIZE, DIRECTIONS, TRAVEL, parse_video_prompt

INK = 0.3  # intensities below this are background or noise, not ink (the tiles' soft edges are also dropped)
MIN_TRAVEL = TRAVEL / 4  # a centre of mass that moves less than this has no direction


def as_videos(videos) -> np.ndarray:
    """(N, F, H, W) float in [0, 1] from (N, F, H, W, C) or (N, F, H, W) arrays (WanPipeline's np/pt frames)."""
    arr = videos.detach().cpu().numpy() if isinstance(videos, torch.Tensor) else np.asarray(videos)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    if arr.ndim == 5:
        channel_axis = 2 if arr.shape[2] in (1, 3) and arr.shape[-1] not in (1, 3) else -1
        arr = arr.mean(axis=channel_axis)
    if arr.ndim != 4:
        raise ValueError(f"expected videos of shape (N, F, H, W) or (N, F, H, W, C), got {arr.shape}")
    return arr


def centres_of_mass(videos: np.ndarray) -> np.ndarray:
    """(N, F, 2) (row, column) of every frame's ink; NaN for a frame without ink."""
    ink = np.where(videos >= INK, videos, 0.0)
    rows, cols = np.arange(videos.shape[2]), np.arange(videos.shape[3])
    mass = ink.sum(axis=(2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        row = (ink.sum(axis=3) * rows).sum(axis=2) / mass
        col = (ink.sum(axis=2) * cols).sum(axis=2) / mass
    return np.stack([row, col], axis=-1)


def directions_of(videos) -> list[str | None]:
    """The direction each video's digit moves (first frame to last), None when it barely moves."""
    path = centres_of_mass(as_videos(videos))
    found = []
    for drow, dcol in path[:, -1] - path[:, 0]:
        if not np.isfinite([drow, dcol]).all() or max(abs(drow), abs(dcol)) < MIN_TRAVEL:
            found.append(None)
        elif abs(dcol) >= abs(drow):
            found.append("right" if dcol > 0 else "left")
        else:
            found.append("down" if drow > 0 else "up")
    return found


def ink_box_centres(frames: np.ndarray) -> np.ndarray:
    """(M, 2) centre of every frame's ink bounding box, in pixel-edge coordinates (a tile at rows 4..19 has
    centre row 12); NaN for a frame without ink. Centred on the box, a crop holds the tile as it was drawn
    (a crop centred on the centre of mass is off by up to 2 pixels and misreads a tenth of the true tiles)."""
    centres = np.full((len(frames), 2), np.nan)
    for i, ink in enumerate(frames >= INK):
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        if len(rows):
            centres[i] = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    return centres


def digit_crops(videos) -> np.ndarray:
    """(N * F, 16, 16): every frame cut to a digit-sized window centred on its ink (zeros without ink)."""
    videos = as_videos(videos)
    frames = videos.reshape(-1, *videos.shape[2:])
    half = DIGIT_SIZE // 2
    padded = F.pad(torch.from_numpy(frames), (half, half, half, half)).numpy()
    crops = np.zeros((len(frames), DIGIT_SIZE, DIGIT_SIZE), dtype=np.float32)
    for i, (row, col) in enumerate(ink_box_centres(frames)):
        if np.isfinite(row):
            top, left = int(np.floor(row)), int(np.floor(col))  # + half of padding - half of the window
            crops[i] = padded[i, top:top + DIGIT_SIZE, left:left + DIGIT_SIZE]
    return crops


def video_accuracy(videos, digits: Sequence[int], directions: Sequence[str]) -> dict[str, float]:
    """{"digit": share of frames the classifier reads as the video's digit (a frame without ink is a miss),
    "motion": share of videos
    whose digit moves in the video's direction}."""
    videos = as_videos(videos)
    if not len(videos) == len(digits) == len(directions):
        raise ValueError(f"{len(videos)} videos, {len(digits)} digits, {len(directions)} directions")
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        raise ValueError(f"unknown directions {sorted(unknown)}; expected {DIRECTIONS}")
    has_ink = np.isfinite(ink_box_centres(videos.reshape(-1, *videos.shape[2:]))[:, 0])
    predicted = np.where(has_ink, classify_digits(digit_crops(videos)), -1).reshape(len(videos), -1)
    digit = float((predicted == np.asarray(digits)[:, None]).mean())
    motion = float(np.mean([found == wanted for found, wanted in zip(directions_of(videos), directions)]))
    return {"digit": digit, "motion": motion}


def video_accuracy_of_prompts(videos, prompts: Sequence[str]) -> dict[str, float] | None:
    """`video_accuracy` against the digits and directions the prompts name; None when there are no prompts or
    any prompt is not one that `video_prompt` writes (the metric does not apply to them)."""
    parsed = [parse_video_prompt(prompt) for prompt in prompts]
    if not parsed or None in parsed:
        return None
    return video_accuracy(videos, [digit for digit, _ in parsed], [direction for _, direction in parsed])
