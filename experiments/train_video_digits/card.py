"""Render the video digits model's card (README.md of the checkpoint) from measurements.json, train_log.json
and the component configs."""

from __future__ import annotations

import json
from pathlib import Path


def _json(root: Path, name: str) -> dict:
    return json.loads((root / name).read_text())


def _losses(history: list) -> str:
    picked = history[:: max(1, len(history) // 6)] + history[-1:]
    return ", ".join(f"{step}: {loss:.3f}" for step, loss in dict(picked).items())


def _parts(transformer: dict, vae: dict, encoder: dict) -> dict[str, str]:
    hidden = transformer["num_attention_heads"] * transformer["attention_head_dim"]
    return {
        "transformer": f"`WanTransformer3DModel`: {transformer['num_layers']} blocks, width {hidden} "
                       f"({transformer['num_attention_heads']} heads x {transformer['attention_head_dim']}), FFN "
                       f"{transformer['ffn_dim']}, patch {tuple(transformer['patch_size'])}, {transformer['in_channels']} "
                       "latent channels: 3 x 4 x 4 = 48 tokens per clip",
        "vae": f"`AutoencoderKLWan`: base width {vae['base_dim']}, `dim_mult` {vae['dim_mult']}, z {vae['z_dim']}, "
               f"temporal down-sampling {vae['temperal_downsample']}: 4x in space, 4x in time (9 frames -> 3 latent frames)",
        "text_encoder": f"`UMT5EncoderModel`: {encoder['num_layers']} layers, width {encoder['d_model']}, frozen at its "
                        "random initialisation (as the digits model's T5); an in-memory `T5TokenizerFast` of the 17 "
                        "words the prompts use, 8 tokens",
        "scheduler": "`UniPCMultistepScheduler` with flow sigmas, flow shift 3.0, flow prediction: Wan2.1-T2V's "
                     "(`Wan-AI/Wan2.1-T2V-1.3B-Diffusers`)",
    }


def render(root: Path) -> str:
    measured, log = _json(root, "measurements.json"), _json(root, "train_log.json")
    transformer, vae = _json(root, "transformer/config.json"), _json(root, "vae/config.json")
    encoder, args = _json(root, "text_encoder/config.json"), log["args"]
    rows = "\n".join(f"| {setting} | {scores['digit']:.1%} | {scores['motion']:.1%} |"
                     for setting, scores in measured["accuracy"].items())
    parts = _parts(transformer, vae, encoder)
    return f"""# video_digits: a small Wan 2.1 text-to-video model trained on moving digits

A complete diffusers `WanPipeline` (loaded by `cachelab.zoo.load_pipeline("video_digits")`, `model=video_digits`)
that generates 9 frames of 32x32: a handwritten digit from scikit-learn's digits sliding left, right, up or down,
from prompts like `"the digit 3 moving left"`. Trained on a CPU in {log['seconds_total'] / 60:.0f} min; weights
{measured['checkpoint_mb']} MB of safetensors. It exists so that caching policies can be studied on a video model
with true classifier-free guidance, offline, on a laptop.

## Quality

Measured by `{measured['command']}` on the {measured['prompts']} prompts (every digit, every direction) x seeds
{measured['seeds']}, {measured['steps']} steps, by a check independent of the model (`cachelab/zoo/video_metric.py`):
**digit** = share of frames that the digits classifier (an SVC on scikit-learn's 8x8 digits) reads as the prompted
digit, on a 16x16 window centred on the frame's ink; **motion** = share of videos whose centre of mass moves from
the first frame to the last in the prompted direction (by at least 4 pixels along the dominant axis).

| guidance | digit | motion |
|---|---|---|
{rows}

Guidance 5.0 (WanPipeline's default, empty negative prompt) is the default call; guidance 1.0 runs the
conditional branch alone. One transformer call (one CFG branch, 1 video) takes
{measured['speed']['transformer_call_ms']} ms and a whole 1-prompt generation {measured['speed']['generation_s']} s
on {measured['threads']} CPU thread(s).

![samples](samples.png) (rows: every fifth of the 40 prompts, seed 0, guidance 5; frames left to right)

## Architecture

| part | configuration |
|---|---|
| transformer | {parts['transformer']} |
| VAE | {parts['vae']} |
| text encoder | {parts['text_encoder']} |
| scheduler | {parts['scheduler']} |

**Why this VAE.** Wan 2.1's VAE down-samples space 8x with three levels; at 32x32 that leaves 4x4 latent pixels,
where a 16-pixel digit is one latent pixel wide and its 2-pixel steps are sub-latent-pixel. Two levels (the config
allows it: `dim_mult` of length 3, `scale_factor_spatial=4`) keep Wan's 4x temporal factor and its causal 3-D
convolutions while a digit covers 4x4 latent pixels. The VAE is trained here (reconstruction MSE + 1e-5 KL,
{args['vae_steps']} steps of {args['vae_batch']} clips; loss {_losses(log['vae_loss'])}), then its decoder alone
for {args['decoder_steps']} more steps after the transformer (loss {_losses(log['decoder_loss'])}; the encoder
stays frozen, so the latents the transformer learned keep their meaning): after the joint training alone the
classifier read only two thirds of the reconstructed frames. A trained Wan VAE does not exist at this size, and a
random one does not reconstruct. AutoencoderKLWan clamps its output to
[-1, 1], which gives no gradient to ink decoded below -1; training passes gradients through the clamp, or a fresh
decoder settles on black frames.

## Training

`{log['command']}` (seed {args['seed']}, {args['threads']} thread(s), deterministic for a seed and thread count):
clips of every digit image (1797) x direction x an offset across the motion of 4-12 pixels, the digit (8x8 upsampled
bilinearly to 16x16) moving 2 pixels per frame. {args['clips']} random clips are encoded once (posterior means,
normalised per channel into the VAE config's `latents_mean`/`latents_std`, as WanPipeline decodes them); the
transformer learns flow matching (x_s = (1 - s) x0 + s noise, target noise - x0, timestep 1000 s, s from the
scheduler's flow shift applied to uniform u) for {args['stop_after']} steps of {args['batch']} of a
{args['steps']}-step cosine schedule from learning rate {args['lr']} (EMA 0.998; the run was cut there to fit a
two-hour session on two shared cores), with {10}% empty prompts so that classifier-free guidance works. Transformer loss
{_losses(log['transformer_loss'])}. Total {log['seconds_total']:.0f} s (VAE {log['seconds_vae']:.0f} s, decoder
{log['seconds_decoder']:.0f} s) on {log['cpu']}, torch {log['versions']['torch']}. {log.get('note', '')}

## Caching notes

- CFG runs as two transformer calls per step (`cache_context("cond")` / `("uncond")`), so every policy sees two
  branches; `cfg_decisions=shared` lets the uncond branch follow the cond branch.
- The pipeline's UniPC scheduler passes integer timesteps (1000 sigma rounded down) to the transformer, so a
  signal computed from the timestep sees sigma to within 1e-3 (cachelab's `sea_indicator`; diffusers' SeaCache
  reads the exact sigma from the cache context).
- `calibration.json` (`python -m cachelab.calibrate model=video_digits`, generations seeded 1000, disjoint from the
  evaluation seeds 0..) holds TeaCache coefficients, MagCache ratios and learned plans for this model.
"""


def write_card(root: Path) -> None:
    (Path(root) / "README.md").write_text(render(Path(root)))
