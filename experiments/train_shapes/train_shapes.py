"""Train a second small FluxPipeline, on coloured shapes: ``python experiments/train_shapes/train_shapes.py [--out DIR]``.

A held-out model for checking that a caching policy calibrated on the digits model generalises: same
FluxPipeline recipe as `experiments/train_digits/train_digits.py` (frozen random text encoders, an AutoencoderKL and
a rectified-flow FluxTransformer2DModel, all trained on CPU), but a different dataset, a smaller VAE
and a smaller transformer. The data are procedurally drawn 32x32 RGB images of "a {colour} {shape}" on black, with
random position and size; everything is deterministic given --seed and the thread count.

    python experiments/train_shapes/train_shapes.py             # trains into experiments/train_shapes/shapes/
    python experiments/train_shapes/train_shapes.py --evaluate  # only re-measure a saved checkpoint

Load it with ``cachelab.zoo.load_pipeline(Path("experiments/train_shapes/shapes"))``: 32x32 images and
8 T5 tokens are that pipeline's call defaults, as for the digits model.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FluxTransformer2DModel
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

from cachelab.zoo.data import IMAGE_SIZE, MAX_SEQUENCE_LENGTH

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "train_digits"))  # the digits recipe this model reuses
import train_digits  # noqa: E402
from digits_architecture import T5_CONFIG, TRANSFORMER_CONFIG, VAE_CONFIG, build_pipeline  # noqa: E402

DEFAULT_OUT = HERE / "shapes"
PROMPT = "a {} {}"
# Saturated colours, so that the mean colour of an image names its prompt's colour.
COLOURS = {"red": (1.0, 0.1, 0.1), "green": (0.1, 0.9, 0.1), "blue": (0.1, 0.3, 1.0), "yellow": (1.0, 0.9, 0.1)}
SHAPES = ("circle", "square", "triangle")
CLASSES = [(colour, shape) for colour in COLOURS for shape in SHAPES]  # class k = CLASSES[k]
# Smaller than the digits transformer (4 double + 8 single blocks of width 128, 4.3M weights): 3 + 3 blocks
# of width 96 (three 32-dim heads, so the digits RoPE axes still fit), 1.5M weights.
SMALL_TRANSFORMER = dict(num_layers=3, num_single_layers=3, num_attention_heads=3)
# Half the channels of the digits VAE (32, 64), a quarter of its weights: flat colours need no more, and it
# trains about three times as fast.
VAE_CHANNELS = (16, 32)
SUPERSAMPLE = 4  # shapes are drawn at 4x and area-averaged: anti-aliased edges


def prompts() -> list[str]:
    """The evaluation prompts: every colour x shape, ["a red circle", "a red square", ...] (12)."""
    return [PROMPT.format(colour, shape) for colour, shape in CLASSES]


# ---------------------------------------------------------------------------------------------- data


def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Mask of the points (x, y) inside `shape` centred at (cx, cy) with circumradius-like size r."""
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        half = 0.85 * r
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # Upright equilateral triangle with circumradius r (y grows downwards): three half-planes.
    apex, base = -r, 0.5 * r
    slope = np.sqrt(3.0)  # the sides make 60 degrees with the base
    return (dy <= base) & (dy >= apex + slope * np.abs(dx))


def render(shape: str, rgb, cx: float, cy: float, r: float, size: int = IMAGE_SIZE) -> np.ndarray:
    """(3, size, size) float32 image in [0, 1]: the shape in colour `rgb` on black."""
    fine = (np.arange(size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    y, x = np.meshgrid(fine, fine, indexing="ij")
    mask = _inside(shape, x, y, cx, cy, r).astype(np.float32)
    cover = mask.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    return np.asarray(rgb, np.float32)[:, None, None] * cover[None]


def make_dataset(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) images in [0, 1] and their (N,) class indices into CLASSES, N = 12 * per_class.

    Random per image: size r in [8, 12] px, a centre that keeps the shape inside the frame, and a
    brightness in [0.75, 1] of the class colour.
    """
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(per_class):
        for k, (colour, shape) in enumerate(CLASSES):
            r = rng.uniform(8.0, 12.0)
            cx, cy = rng.uniform(r + 1, IMAGE_SIZE - r - 1, size=2)
            rgb = np.asarray(COLOURS[colour]) * rng.uniform(0.75, 1.0)
            images.append(render(shape, rgb, cx, cy, r))
            labels.append(k)
    return torch.from_numpy(np.stack(images)), torch.as_tensor(labels)


# ---------------------------------------------------------------------------------- automatic check


def guess_colour(image: np.ndarray) -> str:
    """Nearest colour (cosine) to the mean RGB of an (H, W, 3) image; the black background adds nothing."""
    mean = image.reshape(-1, 3).mean(axis=0)
    names = list(COLOURS)
    ref = np.asarray([COLOURS[n] for n in names])
    cos = ref @ mean / (np.linalg.norm(ref, axis=1) * np.linalg.norm(mean) + 1e-8)
    return names[int(np.argmax(cos))]


def guess_shape(image: np.ndarray) -> str:
    """From the fill ratio of the bright pixels in their bounding box: square ~1, circle ~0.79, triangle ~0.5."""
    ink = image.max(axis=2)
    mask = ink > 0.5 * ink.max()
    if not mask.any():
        return "nothing"
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    fill = mask.sum() / box
    return "square" if fill > 0.9 else "circle" if fill > 0.64 else "triangle"


def accuracy(images, classes) -> dict:
    """Fraction of (H, W, 3) images in [0, 1] whose guessed colour / shape / both match CLASSES[k]."""
    hits = np.asarray([(guess_colour(im) == CLASSES[k][0], guess_shape(im) == CLASSES[k][1])
                       for im, k in zip(images, classes)])
    return dict(colour=float(hits[:, 0].mean()), shape=float(hits[:, 1].mean()), both=float(hits.all(1).mean()))


# ---------------------------------------------------------------------------------------------- model


def build_shapes_pipeline(seed: int = 0):
    """The digits pipeline's parts with a T5 vocabulary for these prompts, a smaller VAE and transformer.

    The CLIP tokenizer of the digits model spells words by letter, so it covers these prompts as is.
    """
    pipe = build_pipeline(seed)  # seeds torch: the parts below are deterministic too
    words = ["<pad>", "</s>", "<unk>", "▁a", *(f"▁{w}" for w in (*COLOURS, *SHAPES))]
    tokenizer_2 = T5TokenizerFast(vocab=[(w, 0.0) for w in words], model_max_length=MAX_SEQUENCE_LENGTH)
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **T5_CONFIG))
    vae = AutoencoderKL(**{**VAE_CONFIG, "block_out_channels": VAE_CHANNELS})
    transformer = FluxTransformer2DModel(**{**TRANSFORMER_CONFIG, **SMALL_TRANSFORMER})
    for module in (text_encoder_2, vae, transformer):
        module.eval().requires_grad_(False)
    pipe.register_modules(tokenizer_2=tokenizer_2, text_encoder_2=text_encoder_2, vae=vae, transformer=transformer)
    return pipe


def _embedding_rows() -> list[str]:
    # The checkpoint was trained with the empty (CFG-dropout) prompt at row 10, where the digits model has
    # it: our 12 prompts go around it (rows 0-9, "" at 10, rows 11-12).
    ours = prompts()
    return ours[:10] + [""] + ours[10:]


def embedding_row(classes: torch.Tensor) -> torch.Tensor:
    """Class k -> its row in `_embedding_rows()`."""
    return classes + (classes >= 10).long()


def train_shapes_transformer(pipe, latents, classes, steps, batch, lr, gen, start):
    """`train_digits.train_transformer` (rectified flow, CFG dropout, EMA) with our prompts."""
    return train_digits.train_transformer(pipe, latents, embedding_row(classes), steps, batch, lr, gen, start,
                                          prompts=_embedding_rows())


# ------------------------------------------------------------------------------------------- samples


def generate(pipe, seeds, steps: int = 28, **kwargs) -> tuple[np.ndarray, list[int]]:
    """(len(seeds) * 12, 32, 32, 3) images in [0, 1]: every prompt once per seed, and their classes."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        out.append(pipe(prompts(), num_inference_steps=steps, generator=gen, output_type="np", **kwargs).images)
    return np.concatenate(out), list(range(len(CLASSES))) * len(seeds)


def save_grid(images: np.ndarray, columns: int, file: Path, pad: int = 2) -> None:
    """Images in rows of `columns`, on a grey background."""
    from PIL import Image

    rows = -(-len(images) // columns)
    size = images.shape[1]
    grid = np.full((rows * (size + pad) + pad, columns * (size + pad) + pad, 3), 0.5, np.float32)
    for i, image in enumerate(images):
        top, left = pad + (i // columns) * (size + pad), pad + (i % columns) * (size + pad)
        grid[top:top + size, left:left + size] = image
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(file)


def evaluate(directory: Path, grid_file: Path, seeds=range(8), cfg_scale: float = 3.0) -> dict:
    """Load the checkpoint through cachelab.zoo, write a grid of samples (a row per seed) and score them all."""
    from cachelab import zoo

    pipe = zoo.load_pipeline(directory)
    t0 = time.perf_counter()
    images, classes = generate(pipe, seeds)
    seconds = time.perf_counter() - t0
    save_grid(images[: 4 * len(CLASSES)], len(CLASSES), grid_file)
    cfg_images, _ = generate(pipe, seeds, negative_prompt="", true_cfg_scale=cfg_scale)
    return dict(
        samples=len(images), steps=28, seconds_per_image=round(seconds / len(images), 4),
        accuracy=accuracy(images, classes), accuracy_true_cfg=accuracy(cfg_images, classes), true_cfg_scale=cfg_scale,
    )


# ----------------------------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="checkpoint folder")
    parser.add_argument("--seed", type=int, default=0, help="data, initialisation and training noise")
    parser.add_argument("--per-class", type=int, default=200, help="training images per colour x shape")
    parser.add_argument("--vae-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=1800, help="transformer steps")
    parser.add_argument("--batch", type=int, default=32, help="batch of both the VAE and the transformer")
    parser.add_argument("--lr", type=float, default=1e-3, help="transformer learning rate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--samples", type=Path, default=HERE / "samples.png", help="sample grid written after training")
    parser.add_argument("--evaluate", action="store_true", help="only score the checkpoint in --out")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    log_file = args.out / "train_log.json"
    if args.evaluate:
        record = json.loads(log_file.read_text())
        record["evaluation"] = evaluate(args.out, args.samples)
        log_file.write_text(json.dumps(record, indent=1) + "\n")
        print(json.dumps(record["evaluation"], indent=1))
        return

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    pipe = build_shapes_pipeline(args.seed)
    images, classes = make_dataset(args.per_class, args.seed)
    train_digits.log(start, f"dataset {tuple(images.shape)}, data accuracy of the check "
                            f"{accuracy(images.permute(0, 2, 3, 1).numpy(), classes.tolist())}")
    images = images * 2 - 1
    vae_history = train_digits.train_vae(pipe.vae, images, args.vae_steps, args.batch, gen, start)
    seconds_vae = time.perf_counter() - start
    latents = train_digits.normalised_latents(pipe.vae, images)
    with torch.no_grad():
        recon = pipe.vae.decode(latents[:256] / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor).sample
    vae_mse = F.mse_loss((recon.clamp(-1, 1) + 1) / 2, (images[:256] + 1) / 2).item()
    train_digits.log(start, f"VAE reconstruction MSE {vae_mse:.5f} (pixels in [0, 1])")
    ema, history = train_shapes_transformer(pipe, latents, classes, args.steps, args.batch, args.lr, gen, start)
    pipe.register_modules(transformer=ema)
    seconds = time.perf_counter() - start
    pipe.save_pretrained(args.out, safe_serialization=True)
    record = dict(
        command="python experiments/train_shapes/train_shapes.py", args={k: str(v) for k, v in vars(args).items()},
        seconds_total=round(seconds, 1), seconds_vae=round(seconds_vae, 1), vae_reconstruction_mse=round(vae_mse, 6),
        prompts=prompts(), transformer_parameters=sum(p.numel() for p in ema.parameters()),
        vae_loss=vae_history, transformer_loss=history, torch=torch.__version__, python=platform.python_version(),
    )
    train_digits.log(start, f"saved to {args.out}; sampling")
    record["evaluation"] = evaluate(args.out, args.samples)
    log_file.write_text(json.dumps(record, indent=1) + "\n")
    train_digits.log(start, f"evaluation {record['evaluation']}")


if __name__ == "__main__":
    main()
