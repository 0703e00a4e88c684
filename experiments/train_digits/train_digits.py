"""Train the embedded digits model: ``python experiments/train_digits/train_digits.py [--out DIR] [--seed 0]``.

A complete FluxPipeline on scikit-learn's digits, on CPU: frozen random text encoders, an
AutoencoderKL trained on 32x32 digits, and a FluxTransformer2DModel trained with rectified flow in
the VAE's latent space on the sigmas FluxPipeline samples at this resolution.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift
from digits_architecture import build_pipeline

from cachelab import zoo
from cachelab.zoo.data import IMAGE_SIZE, MAX_SEQUENCE_LENGTH, load_digits_8x8, prompts_for, upsample

COMMAND = "python experiments/train_digits/train_digits.py"
DEFAULT_OUT = zoo.path("digits")
CFG_DROPOUT = 0.1  # fraction of empty prompts, so that true CFG (negative_prompt="") works


def log(start: float, msg: str) -> None:
    print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)


def lr_at(step: int, steps: int, lr: float, warmup: int = 50) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.45 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))))


def optimise(parameters, batch_loss, steps: int, lr: float, start: float, name: str, *, betas=(0.9, 0.999),
             clip: bool = True, log_every: int = 50, after_step=None, stop: int | None = None) -> list:
    """AdamW (no weight decay) on ``batch_loss()`` with ``lr_at``'s schedule over ``steps`` steps, ending after
    ``stop`` of them (default: all); gradients clipped at norm 1 where ``clip``; ``after_step(step)`` runs after
    every optimiser step. Returns the loss every ``log_every`` steps and at the last. The loop of every model
    these recipes train (experiments/train_shapes and train_video_digits use it too)."""
    parameters = list(parameters)
    opt = torch.optim.AdamW(parameters, lr=lr, betas=betas, weight_decay=0.0)
    history = []
    for step in range(min(stop or steps, steps)):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        opt.step()
        if after_step is not None:
            after_step(step)
        if step % log_every == 0 or step == steps - 1:
            history.append((step, round(loss.item(), 5)))
            log(start, f"{name} step {step}/{steps} loss {loss.item():.5f}")
    return history


def train_vae(vae, images: torch.Tensor, steps: int, batch: int, gen: torch.Generator, start: float) -> list:
    """images: (N, 3, 32, 32) in [-1, 1]. MSE reconstruction + a small KL term."""
    vae.train().requires_grad_(True)

    def batch_loss():
        x = images[torch.randint(len(images), (batch,), generator=gen)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        return F.mse_loss(recon, x) + 1e-5 * posterior.kl().mean()

    history = optimise(vae.parameters(), batch_loss, steps, 2e-3, start, "vae", clip=False, log_every=100)
    vae.eval().requires_grad_(False)
    return history


@torch.no_grad()
def normalised_latents(vae, images: torch.Tensor) -> torch.Tensor:
    """Encode (posterior mean) and store shift/scale in the VAE config, as FluxPipeline decodes them."""
    mean = torch.cat([vae.encode(chunk).latent_dist.mean for chunk in images.split(256)])
    shift, scale = mean.mean().item(), 1.0 / mean.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return (mean - shift) * scale


def pipeline_sigmas(u: torch.Tensor, image_tokens: int, scheduler) -> torch.Tensor:
    """Map uniform u in (0, 1) through the scheduler's dynamic shift, as FluxPipeline's schedule does."""
    cfg = scheduler.config
    mu = calculate_shift(image_tokens, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
    return scheduler.time_shift(mu, 1.0, u)


def with_transformer(pipe, transformer, fn):
    """Run fn() while `transformer` is the pipeline's transformer."""
    current = pipe.transformer
    pipe.register_modules(transformer=transformer)
    try:
        return fn()
    finally:
        pipe.register_modules(transformer=current)


def train_transformer(pipe, latents, labels, steps: int, batch: int, lr: float, gen, start: float,
                      snapshot=None, prompts=None):
    """Rectified flow: x_s = (1 - s) x0 + s noise, the transformer predicts noise - x0 at timestep s.

    `labels` index `prompts` (default: the ten digit prompts, then ""); the first "" is the CFG-dropout prompt.
    Returns the EMA of the weights and the loss history; `snapshot(step, ema)` runs after every step.
    """
    prompts = prompts or prompts_for(range(10)) + [""]
    empty = prompts.index("")
    with torch.no_grad():
        prompt_embeds, pooled, text_ids = pipe.encode_prompt(prompts, None, max_sequence_length=MAX_SEQUENCE_LENGTH)
    n, c, h, w = latents.shape
    packed = FluxPipeline._pack_latents(latents, n, c, h, w)
    img_ids = FluxPipeline._prepare_latent_image_ids(batch, h // 2, w // 2, "cpu", torch.float32)
    def batch_loss(model):
        idx = torch.randint(n, (batch,), generator=gen)
        cond = torch.where(torch.rand(batch, generator=gen) < CFG_DROPOUT, empty, labels[idx])
        sigma = pipeline_sigmas(torch.rand(batch, generator=gen), packed.shape[1], pipe.scheduler)
        x0, noise = packed[idx], torch.randn(packed[idx].shape, generator=gen)
        xt = (1 - sigma[:, None, None]) * x0 + sigma[:, None, None] * noise
        pred = model(hidden_states=xt, timestep=sigma, pooled_projections=pooled[cond],
                     encoder_hidden_states=prompt_embeds[cond], txt_ids=text_ids, img_ids=img_ids,
                     return_dict=False)[0]
        return F.mse_loss(pred, noise - x0)

    return train_with_ema(pipe.transformer, batch_loss, steps, lr, start, snapshot)


def train_with_ema(model, batch_loss, steps: int, lr: float, start: float, snapshot=None, stop: int | None = None):
    """``optimise`` (betas 0.9, 0.99) on ``batch_loss(model)`` with an EMA of the weights (decay
    min(0.998, (1 + step) / (10 + step))). Returns the EMA and the loss history; ``snapshot(step, ema)`` runs after
    every step. Shared with experiments/train_video_digits."""
    model = model.train().requires_grad_(True)
    ema = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update_ema(step):
        decay = min(0.998, (1 + step) / (10 + step))
        for p_ema, p in zip(ema.parameters(), model.parameters()):
            p_ema.lerp_(p, 1 - decay)
        if snapshot is not None:
            snapshot(step + 1, ema)

    history = optimise(model.parameters(), lambda: batch_loss(model), steps, lr, start, "transformer", betas=(0.9, 0.99),
                       after_step=update_ema, stop=stop)
    return ema, history


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vae-steps", type=int, default=300)
    parser.add_argument("--vae-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1800)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    # One thread: on 2 shared cores, two threads slowed to a crawl whenever another process ran.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--snapshot-every", type=int, default=0, help="save the EMA pipeline every N steps")
    parser.add_argument("--snapshot-dir", type=Path, default=Path("digits-snapshots"))
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed)
    pipe = build_pipeline(args.seed)
    digits, labels = load_digits_8x8()
    images = upsample(digits).repeat(1, 3, 1, 1) * 2 - 1
    vae_history = train_vae(pipe.vae, images, args.vae_steps, args.vae_batch, gen, start)
    vae_seconds = time.perf_counter() - start
    latents = normalised_latents(pipe.vae, images)
    log(start, f"latents {tuple(latents.shape)} shift {pipe.vae.config.shift_factor:.4f} "
               f"scale {pipe.vae.config.scaling_factor:.4f}")
    snapshot = None
    if args.snapshot_every:
        def snapshot(step, ema):
            if step % args.snapshot_every == 0:
                with_transformer(pipe, ema, lambda: pipe.save_pretrained(args.snapshot_dir / f"step{step}"))
    ema, history = train_transformer(pipe, latents, torch.as_tensor(labels), args.steps, args.batch, args.lr, gen,
                                     start, snapshot)
    pipe.register_modules(transformer=ema)
    total = time.perf_counter() - start
    pipe.save_pretrained(args.out, safe_serialization=True)
    record = dict(
        command=COMMAND, args={k: str(v) for k, v in vars(args).items()},
        seconds_total=round(total, 1), seconds_vae=round(vae_seconds, 1), image_size=IMAGE_SIZE,
        vae_loss=vae_history, transformer_loss=history,
        versions=dict(torch=torch.__version__, python=platform.python_version(), numpy=np.__version__),
        cpu=platform.processor() or platform.machine(),
    )
    (args.out / "train_log.json").write_text(json.dumps(record, indent=1) + "\n")
    log(start, f"saved to {args.out}")


if __name__ == "__main__":
    main()
