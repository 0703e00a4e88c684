"""Train the embedded video model: ``python experiments/train_video_digits/train_video_digits.py [--out DIR]``.

A complete WanPipeline on clips of scikit-learn's digits sliding left, right, up or down, on CPU: a frozen
random UMT5 text encoder, an AutoencoderKLWan trained on the clips, and a WanTransformer3DModel trained with
flow matching (velocity noise - x0) in the VAE's normalised latent space, on the sigmas its UniPC scheduler
samples (flow shift 3), with 10% empty prompts so that classifier-free guidance works; then the VAE's decoder
alone is fine-tuned (the encoder, and so the latents the transformer learned, stay as they are).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train_digits"))  # the digits recipe's training loop

from train_digits import log, optimise, train_with_ema, with_transformer  # noqa: E402
from video_architecture import SCHEDULER_CONFIG, build_pipeline  # noqa: E402

from cachelab import zoo  # noqa: E402
from cachelab.zoo.data import load_digits_8x8  # noqa: E402
from cachelab.zoo.video_data import DIRECTIONS, MAX_SEQUENCE_LENGTH, TRAVEL, digit_tiles, make_clip, video_prompt  # noqa: E402

COMMAND = "python experiments/train_video_digits/train_video_digits.py"
DEFAULT_OUT = zoo.path("video_digits")
CFG_DROPOUT = 0.1


def random_clips(tiles: torch.Tensor, count: int, gen: torch.Generator):
    """`count` clips (count, 3, F, H, W) in [-1, 1] with their tile indices and direction indices."""
    idx = torch.randint(len(tiles), (count,), generator=gen)
    direction = torch.randint(len(DIRECTIONS), (count,), generator=gen)
    across = torch.randint(TRAVEL // 4, TRAVEL * 3 // 4 + 1, (count,), generator=gen)
    clips = torch.stack([make_clip(tiles[i], DIRECTIONS[d], int(a)) for i, d, a in zip(idx, direction, across)])
    return clips[:, None].repeat(1, 3, 1, 1, 1) * 2 - 1, idx, direction


@contextlib.contextmanager
def straight_through_clamp():
    """AutoencoderKLWan's decode clamps to [-1, 1], which gives no gradient to an ink pixel decoded below -1: a
    fresh decoder then settles on a black frame (the mean of mostly black clips). While training, the clamp keeps
    its values but passes gradients through."""
    clamp = torch.clamp

    def passing(x, min=None, max=None):
        return x + (clamp(x, min=min, max=max) - x).detach()

    torch.clamp = passing
    try:
        yield
    finally:
        torch.clamp = clamp


def train_vae(vae, tiles, steps: int, batch: int, gen, start: float) -> list:
    """MSE reconstruction of random clips + a small KL term."""
    vae.train().requires_grad_(True)

    def batch_loss():
        x, _, _ = random_clips(tiles, batch, gen)
        posterior = vae.encode(x).latent_dist
        with straight_through_clamp():
            recon = vae.decode(posterior.sample(generator=gen)).sample
        return F.mse_loss(recon, x) + 1e-5 * posterior.kl().mean()

    history = optimise(vae.parameters(), batch_loss, steps, 2e-3, start, "vae")
    vae.eval().requires_grad_(False)
    return history


def finetune_decoder(vae, tiles, steps: int, batch: int, seed: int, start: float) -> list:
    """Train the decoder alone on random clips (the encoder frozen, so the latents the transformer learned keep
    their meaning): the VAE's own training leaves digits too blurred for the classifier. Its own generator."""
    gen = torch.Generator().manual_seed(seed)
    vae.train().requires_grad_(False)
    decoder = [p for name, p in vae.named_parameters() if name.startswith(("decoder.", "post_quant_conv."))]
    for p in decoder:
        p.requires_grad_(True)

    def batch_loss():
        x, _, _ = random_clips(tiles, batch, gen)
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample(generator=gen)
        with straight_through_clamp():
            recon = vae.decode(latents).sample
        return F.mse_loss(recon, x)

    history = optimise(decoder, batch_loss, steps, 1e-3, start, "decoder")
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def latent_dataset(vae, tiles, labels, count: int, gen, start: float):
    """Encode `count` random clips (posterior mean); store the per-channel mean/std in the VAE config, as
    WanPipeline decodes them. Returns normalised latents and their prompt indices (10 x 4 prompts)."""
    means, prompt_ids = [], []
    for done in range(0, count, 64):
        x, idx, direction = random_clips(tiles, min(64, count - done), gen)
        means.append(vae.encode(x).latent_dist.mean)
        prompt_ids.append(labels[idx] * len(DIRECTIONS) + direction)
        if done % 1024 == 0:
            log(start, f"encoded {done}/{count} clips")
    latents = torch.cat(means)
    mean = latents.mean(dim=(0, 2, 3, 4))
    std = latents.std(dim=(0, 2, 3, 4))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())
    return (latents - mean[None, :, None, None, None]) / std[None, :, None, None, None], torch.cat(prompt_ids)


def pipeline_sigmas(u: torch.Tensor) -> torch.Tensor:
    """Uniform u through the scheduler's flow shift, as its inference sigmas are spaced."""
    shift = SCHEDULER_CONFIG["flow_shift"]
    return shift * u / (1 + (shift - 1) * u)


def train_transformer(pipe, latents, prompt_ids, steps: int, batch: int, lr: float, gen, start: float,
                      snapshot=None, stop: int | None = None):
    """x_s = (1 - s) x0 + s noise; the transformer predicts noise - x0 at timestep 1000 s. The learning rate
    follows a schedule of `steps` steps; training ends after `stop` of them (default: all).
    Returns the EMA of the weights and the loss history; `snapshot(step, ema)` runs after every step."""
    prompts = [video_prompt(d, direction) for d in range(10) for direction in DIRECTIONS] + [""]
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(prompts, do_classifier_free_guidance=False,
                                       max_sequence_length=MAX_SEQUENCE_LENGTH)
    empty = len(prompts) - 1
    def batch_loss(model):
        idx = torch.randint(len(latents), (batch,), generator=gen)
        cond = torch.where(torch.rand(batch, generator=gen) < CFG_DROPOUT, empty, prompt_ids[idx])
        sigma = pipeline_sigmas(torch.rand(batch, generator=gen))
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        s = sigma[:, None, None, None, None]
        pred = model(hidden_states=(1 - s) * x0 + s * noise, timestep=sigma * 1000,
                     encoder_hidden_states=embeds[cond], return_dict=False)[0]
        return F.mse_loss(pred, noise - x0)

    return train_with_ema(pipe.transformer, batch_loss, steps, lr, start, snapshot, stop)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=400)
    parser.add_argument("--vae-batch", type=int, default=12)
    parser.add_argument("--decoder-steps", type=int, default=600, help="decoder fine-tuning after the transformer")
    parser.add_argument("--clips", type=int, default=8192, help="encoded clips the transformer trains on")
    parser.add_argument("--steps", type=int, default=3500, help="length of the learning-rate schedule")
    # The shipped checkpoint: the run was cut after 1500 steps to fit a 2-hour session on 2 shared cores.
    parser.add_argument("--stop-after", type=int, default=1500, help="end the transformer's training after N steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    # One thread: the digits recipe's choice, so another process can use the second core.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--snapshot-every", type=int, default=0, help="save the EMA pipeline every N steps")
    parser.add_argument("--snapshot-dir", type=Path, default=Path("video-digits-snapshots"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    pipe = build_pipeline(args.seed)
    digits, labels = load_digits_8x8()
    tiles = digit_tiles(digits)
    vae_history = train_vae(pipe.vae, tiles, args.vae_steps, args.vae_batch, gen, start)
    vae_seconds = time.perf_counter() - start
    latents, prompt_ids = latent_dataset(pipe.vae, tiles, torch.as_tensor(labels), args.clips, gen, start)
    log(start, f"latents {tuple(latents.shape)}")
    snapshot = None
    if args.snapshot_every:
        def snapshot(step, ema):
            if step % args.snapshot_every == 0:
                with_transformer(pipe, ema, lambda: pipe.save_pretrained(args.snapshot_dir / f"step{step}"))
    ema, history = train_transformer(pipe, latents, prompt_ids, args.steps, args.batch, args.lr, gen, start,
                                     snapshot, args.stop_after)
    pipe.register_modules(transformer=ema)
    decoder_start = time.perf_counter()
    decoder_history = finetune_decoder(pipe.vae, tiles, args.decoder_steps, args.vae_batch, args.seed + 1, start)
    decoder_seconds = time.perf_counter() - decoder_start
    total = time.perf_counter() - start
    pipe.save_pretrained(args.out, safe_serialization=True)
    record = dict(
        command=COMMAND, args={k: str(v) for k, v in vars(args).items()},
        seconds_total=round(total, 1), seconds_vae=round(vae_seconds, 1), seconds_decoder=round(decoder_seconds, 1),
        vae_loss=vae_history, transformer_loss=history, decoder_loss=decoder_history,
        versions=dict(torch=torch.__version__, python=platform.python_version(), numpy=np.__version__),
        cpu=platform.processor() or platform.machine(),
    )
    (args.out / "train_log.json").write_text(json.dumps(record, indent=1) + "\n")
    log(start, f"saved to {args.out}")


if __name__ == "__main__":
    main()
