"""Tiny random transformers of the families tested without a full pipeline, with one call's inputs."""

import torch
from diffusers import (
    CogVideoXTransformer3DModel,
    HunyuanVideoTransformer3DModel,
    LTXVideoTransformer3DModel,
    QwenImageTransformer2DModel,
)


def hunyuan_video():
    model = HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_single_layers=2, num_refiner_layers=1, patch_size=1, text_embed_dim=16, pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 2),
    )
    inputs = dict(
        hidden_states=torch.randn(1, 4, 1, 8, 8), encoder_hidden_states=torch.randn(1, 6, 16),
        encoder_attention_mask=torch.ones(1, 6), pooled_projections=torch.randn(1, 8),
        guidance=torch.tensor([3000.0]),
    )
    return model, inputs


def ltx_video():
    model = LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
        num_layers=3, caption_channels=16,
    )
    inputs = dict(
        hidden_states=torch.randn(1, 2 * 4 * 4, 4), encoder_hidden_states=torch.randn(1, 6, 16),
        encoder_attention_mask=torch.ones(1, 6), num_frames=2, height=4, width=4,
    )
    return model, inputs


def cogvideox():
    model = CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=8,
        text_embed_dim=16, num_layers=3, sample_width=8, sample_height=8, sample_frames=5, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=6,
    )
    inputs = dict(hidden_states=torch.randn(1, 2, 4, 8, 8), encoder_hidden_states=torch.randn(1, 6, 16))
    return model, inputs


def qwen_image():
    model = QwenImageTransformer2DModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=3, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=16, axes_dims_rope=(8, 4, 4),
    )
    inputs = dict(
        hidden_states=torch.randn(1, 16, 16), encoder_hidden_states=torch.randn(1, 6, 16),
        encoder_hidden_states_mask=torch.ones(1, 6), img_shapes=[(1, 4, 4)],
    )
    return model, inputs


FAMILIES = {"hunyuan_video": hunyuan_video, "ltx_video": ltx_video, "cogvideox": cogvideox, "qwen_image": qwen_image}
