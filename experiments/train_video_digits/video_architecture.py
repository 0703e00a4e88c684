"""Architecture of the embedded video model: configs and constructors of every WanPipeline part.

`train_video_digits.py` trains the pipeline that `build_pipeline` makes. The saved checkpoint
(`cachelab/zoo/video_digits/`) holds the same configs, so loading it needs none of this.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import T5TokenizerFast, UMT5Config, UMT5EncoderModel

from cachelab.zoo.video_data import DIRECTIONS, MAX_SEQUENCE_LENGTH

# As small as the digits model's T5 (2 layers, width 64); frozen at its random initialisation.
UMT5_CONFIG = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
# Two down-sampling levels instead of Wan 2.1's three: 4x in space (32x32 -> 8x8) and 4x in time
# (9 -> 3 latent frames, Wan's temporal factor), so a 16-pixel digit covers 4x4 latent pixels.
VAE_CONFIG = dict(
    base_dim=16, z_dim=8, dim_mult=[1, 2, 2], num_res_blocks=1, attn_scales=[],
    temperal_downsample=[True, True], scale_factor_spatial=4, scale_factor_temporal=4,
    latents_mean=[0.0] * 8, latents_std=[1.0] * 8,
)
# Wan 2.1's patching (1, 2, 2): 3 x 4 x 4 = 48 tokens for a 9-frame 32x32 clip.
TRANSFORMER_CONFIG = dict(
    patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=32, in_channels=8, out_channels=8,
    text_dim=UMT5_CONFIG["d_model"], freq_dim=64, ffn_dim=256, num_layers=10, cross_attn_norm=True,
    qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=64,
)
# Wan2.1-T2V's scheduler (Wan-AI/Wan2.1-T2V-1.3B-Diffusers scheduler_config.json): UniPC on flow sigmas.
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    solver_order=2, solver_type="bh2", lower_order_final=True,
)


def umt5_tokenizer() -> T5TokenizerFast:
    words = ["<pad>", "</s>", "<unk>", "▁the", "▁digit", "▁moving"]
    words += [f"▁{d}" for d in range(10)] + [f"▁{direction}" for direction in DIRECTIONS]
    return T5TokenizerFast(vocab=[(w, 0.0) for w in words], model_max_length=MAX_SEQUENCE_LENGTH)


def build_pipeline(seed: int = 0) -> WanPipeline:
    """A WanPipeline with every part freshly initialised from `seed` (the text encoder stays as built)."""
    tokenizer = umt5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **UMT5_CONFIG))
    vae = AutoencoderKLWan(**VAE_CONFIG)
    transformer = WanTransformer3DModel(**TRANSFORMER_CONFIG)
    for module in (text_encoder, vae, transformer):
        module.eval().requires_grad_(False)
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler(**SCHEDULER_CONFIG))
