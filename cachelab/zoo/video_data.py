"""The video digits task: a scikit-learn digit (16x16) sliding across a 32x32 frame in one of four
directions over 9 frames, the prompts, and the call sizes the embedded video model is trained for."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from cachelab.zoo.data import DATASET_MAX

DIRECTIONS = ("left", "right", "up", "down")
VIDEO_PROMPT = "the digit {} moving {}"
FRAME_SIZE = 32
DIGIT_SIZE = 16
NUM_FRAMES = 9  # 1 + 2 x Wan's temporal factor 4: three latent frames
TRAVEL = FRAME_SIZE - DIGIT_SIZE  # pixels the digit moves from the first frame to the last, 2 per frame
MAX_SEQUENCE_LENGTH = 8  # UMT5 tokens; "the digit 3 moving left" is 6 with </s>
# WanPipeline's own defaults (480x832, 81 frames, 512 tokens) do not fit the video digits model.
CALL_DEFAULTS = {"height": FRAME_SIZE, "width": FRAME_SIZE, "num_frames": NUM_FRAMES,
                 "max_sequence_length": MAX_SEQUENCE_LENGTH}
_PROMPT_PATTERN = re.compile(r"the digit ([0-9]) moving (left|right|up|down)")


def video_prompt(digit: int, direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return VIDEO_PROMPT.format(int(digit), direction)


def all_video_prompts() -> list[str]:
    """The 40 prompts: every digit with every direction, digit-major."""
    return [video_prompt(d, direction) for d in range(10) for direction in DIRECTIONS]


def parse_video_prompt(prompt: str) -> tuple[int, str] | None:
    """(digit, direction) of a prompt that `video_prompt` writes, else None."""
    match = _PROMPT_PATTERN.fullmatch(prompt)
    return (int(match.group(1)), match.group(2)) if match else None


def digit_tiles(images_8x8: np.ndarray) -> torch.Tensor:
    """(N, 8, 8) in 0..16 -> (N, 16, 16) in [0, 1], bilinear: white ink on black."""
    x = torch.as_tensor(images_8x8, dtype=torch.float32)[:, None] / DATASET_MAX
    return F.interpolate(x, size=(DIGIT_SIZE, DIGIT_SIZE), mode="bilinear", align_corners=False).clamp(0, 1)[:, 0]


def corner_path(direction: str, across: int) -> list[tuple[int, int]]:
    """(row, column) of the tile's top-left corner in every frame; `across` is the fixed other coordinate."""
    forward = [round(TRAVEL * f / (NUM_FRAMES - 1)) for f in range(NUM_FRAMES)]
    along = {"left": forward[::-1], "right": forward, "up": forward[::-1], "down": forward}[direction]
    if direction in ("left", "right"):
        return [(across, col) for col in along]
    return [(row, across) for row in along]


def make_clip(tile: torch.Tensor, direction: str, across: int) -> torch.Tensor:
    """(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE) in [0, 1]: `tile` (16x16) moving in `direction`."""
    clip = torch.zeros(NUM_FRAMES, FRAME_SIZE, FRAME_SIZE)
    for frame, (row, col) in enumerate(corner_path(direction, across)):
        clip[frame, row:row + DIGIT_SIZE, col:col + DIGIT_SIZE] = tile
    return clip
