"""Render the digits model card (README.md) from measure_digits' measurements and train_log.json."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from diffusers.pipelines.flux.pipeline_flux import calculate_shift

from cachelab.calibration import CALIBRATION_FILE

TEMPLATE = """\
# digits: cachelab's embedded default model

A complete diffusers `FluxPipeline` (FluxTransformer2DModel, AutoencoderKL, CLIP and T5 text encoders)
trained by cachelab on scikit-learn's 8x8 handwritten digits (`sklearn.datasets.load_digits`, upsampled
bilinearly to 32x32, white ink on black, grey replicated to RGB). It loads offline from this folder,
generates 10 digits with 28 steps in {fastest:.1f} s on 2 CPU cores, and, unlike a randomly initialised
pipeline, its first-block signal depends on the image being drawn, so caching policies meet realistic
dynamics.

![samples](samples.png)

`samples.png`: one row per digit 0-9, 8 seeds (100-107), uncached, 28 steps, default call, no CFG.

## Use

```python
from cachelab import zoo
pipe = zoo.load_pipeline()   # offline, float32; a FluxPipeline subclass with the right call defaults
out = pipe(zoo.prompts_for([3, 7]), num_inference_steps=28)   # 32x32 PIL images
zoo.digit_accuracy(out.images, [3, 7])
```

With plain diffusers, pass the size and prompt length the model was trained on (FluxPipeline's own
defaults, 256x256 for this VAE and 512 T5 tokens, do not fit it):

```python
pipe = FluxPipeline.from_pretrained(zoo.path("digits"))
out = pipe(["a handwritten digit 7"], height=32, width=32, max_sequence_length=8)
```

Prompts are exactly `"a handwritten digit N"`; `""` is the unconditional prompt. There is no guidance
embedding (`guidance_embeds=False`, so `guidance_scale` is ignored); true classifier-free guidance works:
`pipe(prompts, negative_prompt="", true_cfg_scale=3.0)` (two transformer calls per step, cache contexts
"cond" and "uncond").

## Components

| component | class | parameters | safetensors | shape |
| --- | --- | ---: | ---: | --- |
{components}

Scheduler: `FlowMatchEulerDiscreteScheduler` with FLUX.1-dev's settings (`use_dynamic_shifting=True`,
base/max shift 0.5/1.15 at 256/4096 tokens). At 64 image tokens FluxPipeline computes mu = {mu:.4f}, a
time shift of exp(mu) = {shift:.3f}: sigma = {shift:.3f} u / (1 + {shift_m1:.3f} u) over u = linspace(1, 1/28).
Checkpoint: {total_mb:.1f} MB in total, safetensors and JSON only.

## Training

`{train_command}`: {seconds_total:.0f} s from building the pipeline to the last step, on {train_threads} torch
thread(s) of the 2-core machine below, of which {seconds_vae:.0f} s for the VAE; seed {seed}; deterministic for
a given seed and thread count; `--out DIR` writes elsewhere. Recipe in
`experiments/train_digits/` (`train_digits.py`, `digits_architecture.py`):

- Text encoders: random, frozen (seed {seed}); the transformer learns to read them. CLIP tokenizes
  characters (no merges, {clip_len} tokens), T5 has a 16-word vocabulary (8 tokens).
- VAE: {vae_steps} AdamW steps, batch {vae_batch}, lr 2e-3 (warm-up, cosine), MSE + 1e-5 KL
  (final batch loss {vae_loss}); latents are the posterior means, normalised with
  `shift_factor={shift_factor:.4f}`, `scaling_factor={scaling_factor:.4f}` (stored in the VAE config).
- Transformer: rectified flow, x_s = (1 - s) x0 + s noise, target noise - x0, timestep s;
  s = the pipeline's shift applied to u ~ U(0, 1) (the distribution FluxPipeline's 28-step grid samples);
  10% empty prompts; {steps} AdamW steps, batch {batch}, lr {lr} (50 warm-up steps, cosine to 10%),
  grad-norm clip 1, EMA 0.998 (the EMA weights are saved). Final batch loss {loss}.

Regenerate this card, `samples.png` and `measurements.json`: `{measure_command}` ({seconds_measure:.0f} s).

## Quality

Digit accuracy: fraction of samples that an SVC fit on the real 8x8 digits (`cachelab.zoo.classifier`)
assigns to the prompted digit; 10 digits x {seeds} seeds, 28 steps.

| call | accuracy |
| --- | ---: |
| default (no CFG) | {accuracy:.2f} |
| `negative_prompt="", true_cfg_scale=3.0` | {accuracy_cfg3:.2f} |

## Speed

{cpu} (2 cores), torch {torch}, float32; medians of 3 runs of 10 images x 28 steps through the
pipeline, uncached, and of the transformer calls in one such run. A skipped step is one that First Block
Cache skips (embeddings, block 0, output projection only). The {threads}-thread row comes from
`{measure_command}`, other rows from `{measure_command} --speed-only --threads N`.

| threads | 10 x 28 steps (s) | true CFG (s) | forward, batch 10 (ms) | skipped step (ms) | skipped / computed |
| ---: | ---: | ---: | ---: | ---: | ---: |
{speed}

The machine was shared with other jobs; with two threads, torch slows down sharply whenever another
process competes for the cores, which is why training and the other measurements use one.

## Caching dynamics

Relative change from the previous step, mean over {seeds} seeds of 10 digits, uncached, 28 steps:
first block = mean|r_t - r_t-1| / mean|r_t-1| of block 0's image-stream residual (First Block Cache's
signal); output = the same for the transformer's output.

| step | sigma | first block | output |
| ---: | ---: | ---: | ---: |
{dynamics}

diffusers' First Block Cache (`pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=...))`,
which calls `apply_first_block_cache`) on the same {seeds} x 10 generations; computed steps of 28 (mean,
min-max over seeds), PSNR against the uncached images (mean per image), digit accuracy, and seconds for
10 images x 28 steps (seed 0, {threads} torch thread(s)). FBC compares the change over the whole batch of
10 images, so its decisions hardly vary between seeds:

| threshold | computed steps | PSNR (dB) | accuracy | seconds |
| ---: | ---: | ---: | ---: | ---: |
| uncached | 28 | inf | {accuracy:.2f} | {seconds_10x28:.2f} |
{fbc}
{calibration}"""

CALIBRATION = """
## Calibration

FLUX.1-dev's published TeaCache coefficients and MagCache ratios do not describe this model, so
`calibration.json` holds numbers measured on it ({data}; `{command}`), which `cachelab.zoo.load_pipeline` hands to the
executor (`load_pipeline(calibrated=False)` or plain `FluxPipeline.from_pretrained` keep the FLUX ones).
TeaCache coefficients (highest degree first, `numpy.polyfit` of the output change against the modulated
input change): {coefficients}. MagCache ratios, steps 0-27: {ratios}.
"""


def runnable(command: str) -> str:
    """A recorded command line as it runs today: these tools ran as `python -m cachelab.zoo.<tool>` until
    they moved to experiments/train_digits/, and the checkpoint's JSON files keep the command of their run."""
    return re.sub(r"^python -m cachelab\.zoo\.(\w+)", r"python experiments/train_digits/\1.py", command)


def _mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) / 2**20


def _components(folder: Path, params: dict) -> str:
    cfg = {name: json.loads((folder / name / "config.json").read_text()) for name in params}
    t, v, c, t5 = cfg["transformer"], cfg["vae"], cfg["text_encoder"], cfg["text_encoder_2"]
    shapes = {
        "transformer": f"{t['num_layers']} dual-stream + {t['num_single_layers']} single-stream blocks, hidden "
                       f"{t['num_attention_heads'] * t['attention_head_dim']} ({t['num_attention_heads']} heads x "
                       f"{t['attention_head_dim']}), rope axes {tuple(t['axes_dims_rope'])}, "
                       f"in_channels {t['in_channels']}",
        "vae": f"channels {tuple(v['block_out_channels'])}, {v['latent_channels']} latent channels, 2x down: "
               f"32x32 -> 16x16 -> 64 packed tokens",
        "text_encoder": f"{c['num_hidden_layers']} layers, hidden {c['hidden_size']}, frozen random",
        "text_encoder_2": f"{t5['num_layers']} layers, d_model {t5['d_model']}, frozen random",
    }
    classes = {"transformer": "FluxTransformer2DModel", "vae": "AutoencoderKL", "text_encoder": "CLIPTextModel",
               "text_encoder_2": "T5EncoderModel"}
    return "\n".join(f"| {n} | `{classes[n]}` | {params[n]:,} | {_mb(folder / n):.2f} MB | {shapes[n]} |"
                     for n in params)


def _calibration(folder: Path) -> str:
    file = folder / CALIBRATION_FILE
    if not file.is_file():
        return ""
    numbers = json.loads(file.read_text())
    return CALIBRATION.format(
        data=numbers["data"], command=runnable(numbers["command"]),
        coefficients=", ".join(f"{c:.6g}" for c in numbers["policies"]["teacache"]["coefficients"]),
        ratios=", ".join(f"{r:.4f}" for r in numbers["policies"]["magcache"]["mag_ratios"]),
    )


def write_card(folder: Path, m: dict) -> None:
    log = json.loads((folder / "train_log.json").read_text())
    args = log["args"]
    sched = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    mu = calculate_shift(64, sched["base_image_seq_len"], sched["max_image_seq_len"], sched["base_shift"],
                         sched["max_shift"])
    dyn = m["dynamics"]
    rows = [f"| {i} | {m['sigmas'][i]:.3f} | {dyn['first_block'][i - 1]:.3f} | {dyn['output'][i - 1]:.3f} |"
            for i in range(1, len(dyn["first_block"]) + 1)]
    fbc = [f"| {r['threshold']} | {r['computed_steps_mean']:.1f} ({r['computed_steps_min']}-{r['computed_steps_max']}) "
           f"| {r['psnr_db']:.1f} | {r['accuracy']:.2f} | {r['seconds_10x28']:.2f} |" for r in m["first_block_cache"]]
    speed = [f"| {t} | {v['seconds_10x28']:.2f} | {v['seconds_10x28_cfg3']:.2f} | {v['forward_ms_batch10']:.1f} | "
             f"{v['skipped_forward_ms_batch10']:.1f} | "
             f"{v['skipped_forward_ms_batch10'] / v['forward_ms_batch10']:.0%} |" for t, v in sorted(m["speed"].items())]
    main = m["speed"][str(m["threads"])]
    fastest = min(v["seconds_10x28"] for v in m["speed"].values())
    text = TEMPLATE.format(
        components=_components(folder, m["parameters"]), mu=mu, shift=math.exp(mu), shift_m1=math.exp(mu) - 1,
        total_mb=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20,
        train_command=runnable(log["command"]), seconds_total=log["seconds_total"], seconds_vae=log["seconds_vae"],
        train_threads=args["threads"], seed=args["seed"], clip_len=json.loads(
            (folder / "tokenizer" / "tokenizer_config.json").read_text()).get("model_max_length"),
        vae_steps=args["vae_steps"], vae_batch=args["vae_batch"], vae_loss=log["vae_loss"][-1][1],
        shift_factor=vae["shift_factor"], scaling_factor=vae["scaling_factor"], steps=args["steps"],
        batch=args["batch"], lr=args["lr"], loss=log["transformer_loss"][-1][1], measure_command=runnable(m["command"]),
        seconds_measure=m["seconds_measure"],
        seeds=m["seeds"], accuracy=m["accuracy"], accuracy_cfg3=m["accuracy_cfg3"], cpu=m["cpu"],
        torch=m["torch"], threads=m["threads"], seconds_10x28=main["seconds_10x28"], fastest=fastest,
        speed="\n".join(speed),
        dynamics="\n".join(rows), fbc="\n".join(fbc), calibration=_calibration(folder),
    )
    (folder / "README.md").write_text(text)
