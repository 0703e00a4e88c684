"""Tiny random diffusers pipelines built in memory (no downloads), shared by the tests."""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderKLCogVideoX,
    AutoencoderKLWan,
    CogVideoXDDIMScheduler,
    CogVideoXPipeline,
    CogVideoXTransformer3DModel,
    CogView4Pipeline,
    CogView4Transformer2DModel,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    GlmConfig,
    GlmModel,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
    UMT5Config,
    UMT5EncoderModel,
)

import cachelab

WORDS = ["a", "handwritten", "digit", "photo", "of", "cat", "dog", "red", "blue"] + [str(d) for d in range(10)]


def clip_tokenizer() -> CLIPTokenizer:
    special = ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(special + [w + "</w>" for w in WORDS] + list("abcdefghijklmnopqrstuvwxyz0123456789"))}
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def t5_tokenizer() -> T5TokenizerFast:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in WORDS]
    return T5TokenizerFast(vocab=vocab, model_max_length=16)


def clip_encoder(cls=CLIPTextModel, vocab_size: int = 64, **extra):
    torch.manual_seed(1)
    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1, **extra,
    )
    return cls(config).eval()


def t5_encoder(cls=T5EncoderModel, config_cls=T5Config, vocab_size: int = 32):
    torch.manual_seed(2)
    config = config_cls(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    return cls(config).eval()


def vae() -> AutoencoderKL:
    torch.manual_seed(3)
    return AutoencoderKL(
        block_out_channels=(8, 16), latent_channels=4, layers_per_block=1, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=32, shift_factor=0.0, scaling_factor=1.0,
    ).eval()


def flux_pipeline() -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=2, num_single_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 6, 6),
    )
    return FluxPipeline(
        FlowMatchEulerDiscreteScheduler(), vae(), clip_encoder(), clip_tokenizer(),
        t5_encoder(), t5_tokenizer(), transformer.eval(),
    )


def glm_tokenizer() -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "[gMASK]": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    # A prefix token keeps the empty negative prompt from reaching GlmModel with zero tokens.
    tokenizer.post_processor = processors.TemplateProcessing(single="[gMASK] $A", special_tokens=[("[gMASK]", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", padding_side="left")


def cogview4_pipeline() -> CogView4Pipeline:
    torch.manual_seed(0)
    transformer = CogView4Transformer2DModel(
        patch_size=2, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        out_channels=4, text_embed_dim=32, time_embed_dim=8, condition_dim=4,
    )
    torch.manual_seed(4)
    glm = GlmModel(GlmConfig(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, head_dim=8, pad_token_id=0)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(base_shift=0.25, max_shift=0.75, base_image_seq_len=256,
                                                use_dynamic_shifting=True, time_shift_type="linear")
    return CogView4Pipeline(glm_tokenizer(), glm, vae(), transformer.eval(), scheduler)


def sd3_pipeline() -> StableDiffusion3Pipeline:
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=1, in_channels=4, num_layers=3, attention_head_dim=8, num_attention_heads=4,
        caption_projection_dim=32, joint_attention_dim=32, pooled_projection_dim=64, out_channels=4,
    )
    encoders = [clip_encoder(CLIPTextModelWithProjection, projection_dim=32) for _ in range(2)]
    return StableDiffusion3Pipeline(
        transformer.eval(), FlowMatchEulerDiscreteScheduler(), vae(),
        encoders[0], clip_tokenizer(), encoders[1], clip_tokenizer(), t5_encoder(), t5_tokenizer(),
    )


def wan_pipeline() -> WanPipeline:
    torch.manual_seed(0)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=32, num_layers=3, cross_attn_norm=True, rope_max_seq_len=32,
    )
    torch.manual_seed(5)
    wan_vae = AutoencoderKLWan(base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4).eval()
    return WanPipeline(t5_tokenizer(), t5_encoder(UMT5EncoderModel, UMT5Config), wan_vae,
                       FlowMatchEulerDiscreteScheduler(shift=7.0), transformer.eval())


def cogvideox_pipeline() -> CogVideoXPipeline:
    """CFG in one batched call per step ([uncond; cond]), as diffusers' CogVideoX pipeline runs it."""
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8, text_embed_dim=32,
        num_layers=3, sample_width=8, sample_height=8, sample_frames=5, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=16,
    )
    torch.manual_seed(4)
    video_vae = AutoencoderKLCogVideoX(
        down_block_types=("CogVideoXDownBlock3D",) * 2, up_block_types=("CogVideoXUpBlock3D",) * 2,
        block_out_channels=(8, 8), latent_channels=4, layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()
    return CogVideoXPipeline(t5_tokenizer(), t5_encoder(), video_vae, transformer.eval(), CogVideoXDDIMScheduler())


def generate(pipe, seed: int = 0, steps: int = 6, **kwargs):
    """One small generation as a float tensor, whatever the pipeline."""
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_inference_steps=steps, generator=generator, output_type="pt")
    if isinstance(pipe, WanPipeline):
        common.update(height=16, width=16, num_frames=5, max_sequence_length=16)
        return pipe("a photo of a cat", **common, **kwargs).frames
    if isinstance(pipe, CogVideoXPipeline):
        common.update(height=16, width=16, num_frames=5, max_sequence_length=16)
        return pipe("a photo of a cat", negative_prompt="a red dog", **common, **kwargs).frames
    if isinstance(pipe, StableDiffusion3Pipeline):
        common.update(max_sequence_length=16)
    elif isinstance(pipe, FluxPipeline):
        common.update(max_sequence_length=16)
    return pipe("a photo of a cat", height=32, width=32, **common, **kwargs).images


def run_cached(pipe, policy, call, **attach_options):
    """``call()`` with ``policy`` attached to ``pipe`` for it (rehearsed first where the policy asks for that): its
    output and the executor."""
    executor = cachelab.attach(pipe, policy, **attach_options)
    try:
        if executor.policy.rehearses:
            executor.rehearse(call)
        return call(), executor
    finally:
        cachelab.detach(pipe)
