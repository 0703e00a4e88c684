"""PNG files and grids of a run's images: reference | cached | absolute difference."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def to_uint8(image: np.ndarray) -> np.ndarray:
    """One image (a video's first frame) as uint8 H x W x C."""
    image = image[0] if image.ndim == 4 else image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def sample_grid(reference: np.ndarray, cached: np.ndarray, border: int = 2) -> np.ndarray:
    """One row per prompt: reference | cached | absolute difference (not rescaled)."""
    rows = []
    for r, c in zip(reference, cached):
        tiles = [to_uint8(r), to_uint8(c), to_uint8(np.abs(c - r))]
        def pad(t):
            return np.pad(t, ((border, border), (border, border), (0, 0)), constant_values=255)
        rows.append(np.concatenate([pad(t) for t in tiles], axis=1))
    return np.concatenate(rows, axis=0)


def save_pngs(directory: Path, reference: np.ndarray, cached: np.ndarray) -> None:
    from PIL import Image

    images = directory / "images"
    images.mkdir(exist_ok=True)
    for i, (r, c) in enumerate(zip(reference, cached)):
        for kind, image in (("reference", r), ("cached", c), ("difference", np.abs(c - r))):
            Image.fromarray(to_uint8(image)).save(images / f"{i:03d}_{kind}.png")
    Image.fromarray(sample_grid(reference, cached)).save(directory / "grid.png")
