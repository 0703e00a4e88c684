"""Architecture of the embedded digits model: configs and constructors of every FluxPipeline part.

`train_digits.py` trains the pipeline that `build_pipeline` makes; `experiments/train_shapes` reuses the parts.
The saved checkpoint (`cachelab/zoo/digits/`) holds the same configs, so loading it needs none of this.
"""

from __future__ import annotations

import string

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel, T5TokenizerFast

from cachelab.zoo.data import IMAGE_SIZE, MAX_SEQUENCE_LENGTH

CLIP_MAX_LENGTH = 32  # CLIP tokenizes characters (no merges): the prompt is 20 tokens with bos/eos

CLIP_CONFIG = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=CLIP_MAX_LENGTH, bos_token_id=0, eos_token_id=1, pad_token_id=1,
)
T5_CONFIG = dict(
    d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, dropout_rate=0.0,
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, sample_size=IMAGE_SIZE, layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64), norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
)
TRANSFORMER_CONFIG = dict(
    patch_size=1, in_channels=16, num_layers=4, num_single_layers=8, attention_head_dim=32,
    num_attention_heads=4, joint_attention_dim=T5_CONFIG["d_model"],
    pooled_projection_dim=CLIP_CONFIG["hidden_size"], guidance_embeds=False, axes_dims_rope=(8, 12, 12),
)
# FLUX.1-dev's scheduler: resolution-dependent shift, mu = calculate_shift(image tokens).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
    base_image_seq_len=256, max_image_seq_len=4096,
)


def clip_tokenizer() -> CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + string.digits:
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    eos = "<|endoftext|>"
    return CLIPTokenizer(vocab=vocab, merges=[], bos_token="<|startoftext|>", eos_token=eos, unk_token=eos,
                         pad_token=eos, model_max_length=CLIP_MAX_LENGTH)


def t5_tokenizer() -> T5TokenizerFast:
    words = ["<pad>", "</s>", "<unk>", "▁a", "▁handwritten", "▁digit"] + [f"▁{d}" for d in range(10)]
    return T5TokenizerFast(vocab=[(w, 0.0) for w in words], model_max_length=MAX_SEQUENCE_LENGTH)


def build_pipeline(seed: int = 0) -> FluxPipeline:
    """A FluxPipeline with every part freshly initialised from `seed` (text encoders stay as built)."""
    tokenizer, tokenizer_2 = clip_tokenizer(), t5_tokenizer()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), **CLIP_CONFIG))
    text_encoder_2 = T5EncoderModel(T5Config(vocab_size=len(tokenizer_2), **T5_CONFIG))
    vae = AutoencoderKL(**VAE_CONFIG)
    transformer = FluxTransformer2DModel(**TRANSFORMER_CONFIG)
    for module in (text_encoder, text_encoder_2, vae, transformer):
        module.eval().requires_grad_(False)
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG), vae=vae, text_encoder=text_encoder,
        tokenizer=tokenizer, text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
    )
