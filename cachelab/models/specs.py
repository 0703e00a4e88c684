"""Model specs: everything model-specific the executor and policies need, one entry per family."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch


@dataclass(frozen=True)
class BlockOutput:
    """Where a block returns its streams: tuple indices, or ``hidden=None`` for a bare tensor."""

    hidden: int | None
    encoder: int | None = None

    def pack(self, hidden, encoder):
        """The block's return value for these streams."""
        if self.hidden is None:
            return hidden
        values = [None] * (max(self.hidden, self.encoder or 0) + 1)
        values[self.hidden] = hidden
        if self.encoder is not None:
            values[self.encoder] = encoder
        return tuple(values)

    def unpack(self, result):
        """(hidden, encoder) from the block's return value; encoder is None for image-only blocks."""
        if self.hidden is None:
            return result, None
        return result[self.hidden], None if self.encoder is None else result[self.encoder]


IMAGE_ONLY = BlockOutput(hidden=None)
ENCODER_FIRST = BlockOutput(hidden=1, encoder=0)
HIDDEN_FIRST = BlockOutput(hidden=0, encoder=1)


JOINT = {"attn": ("attn",), "ff": ("ff", "ff_context")}  # MMDiT blocks: one joint attention, a feed-forward per stream
SINGLE = {"attn": ("attn",), "ff": ("proj_mlp",)}  # single-stream blocks: attention and MLP in parallel
SELF_FF = {"attn": ("attn1",), "ff": ("ff",)}
SELF_CROSS_FF = {"attn": ("attn1",), "cross_attn": ("attn2",), "ff": ("ff",)}


@dataclass(frozen=True)
class ModelSpec:
    """Block layout and signals of one transformer family.

    ``modulated_input(block0, arguments)`` returns TeaCache's signal from the first block and the
    arguments it was called with (a name -> value mapping).
    """


    family: str
    transformer_classes: tuple[str, ...]
    block_lists: tuple[str, ...]
    block_outputs: dict[str, BlockOutput]
    modulated_input: Callable[[torch.nn.Module, "Arguments"], torch.Tensor] | None = None
    timestep_argument: str = "timestep"
    #: Per block class: module role (``cachelab.units.ROLES``) -> the block's attributes that play it.
    module_roles: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    #: The scheduler's timestep = the transformer's timestep argument x this (Flux pipelines pass t / 1000).
    timestep_scale: float = 1.0
    #: The transformer's output is a latent image or video whose last two dims are height and width (not packed
    #: tokens): FasterCache's CFG part splits it into 2-D frequency bands.
    image_outputs: bool = False
    notes: str = field(default="", compare=False)


def blocks_of(transformer: torch.nn.Module, spec: ModelSpec) -> list[tuple[torch.nn.Module, BlockOutput]]:
    """Every block of the spec's block lists, in order, with how it returns its streams."""
    blocks = []
    for list_name in spec.block_lists:
        for block in getattr(transformer, list_name, None) or []:
            output = spec.block_outputs.get(type(block).__name__)
            if output is None:
                raise ValueError(
                    f"the {spec.family} spec does not know block class {type(block).__name__} "
                    f"in {type(transformer).__name__}.{list_name}; add it to the spec's block_outputs"
                )
            blocks.append((block, output))
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} has no blocks in {spec.block_lists}")
    return blocks


class Arguments:
    """Read a module call's arguments by parameter name, whether passed by position or keyword."""

    def __init__(self, module: torch.nn.Module, args: tuple, kwargs: dict, loop: dict | None = None):
        self.names = parameter_names(type(module))
        self.args, self.kwargs = args, kwargs
        #: Where the pipeline's denoising loop is, as its ``cache_context`` said (Wan: step_index, sigma,
        #: num_inference_steps); empty where it said nothing.
        self.loop = loop or {}

    def __getitem__(self, name: str):
        if name in self.kwargs:
            return self.kwargs[name]
        index = self.names.index(name) if name in self.names else len(self.args)
        return self.args[index] if index < len(self.args) else None


@lru_cache(maxsize=None)
def parameter_names(module_class: type) -> list[str]:
    return list(inspect.signature(module_class.forward).parameters)[1:]


def adaln_zero_input(block, arguments):
    return block.norm1(arguments["hidden_states"], emb=arguments["temb"])[0]


def cogview4_input(block, arguments):
    return block.norm1(arguments["hidden_states"], arguments["encoder_hidden_states"], arguments["temb"])[0]


def timestep_embedding_input(block, arguments):
    return arguments["temb"]


def ltx_input(block, arguments):
    hidden, temb = arguments["hidden_states"], arguments["temb"]
    table = block.scale_shift_table
    ada = table[None, None].to(temb.device) + temb.reshape(hidden.size(0), temb.size(1), table.shape[0], -1)
    shift_msa, scale_msa = ada.unbind(dim=2)[:2]
    return block.norm1(hidden) * (1 + scale_msa) + shift_msa


def qwen_image_input(block, arguments):
    image_modulation = block.img_mod(arguments["temb"]).chunk(2, dim=-1)[0]
    return block._modulate(block.img_norm1(arguments["hidden_states"]), image_modulation)[0]


_SPECS: list[ModelSpec] = []


def register_spec(spec: ModelSpec) -> ModelSpec:
    """Teach cachelab a new transformer family (its class name, block lists and signals)."""
    _SPECS.insert(0, spec)
    return spec


for _spec in (
    ModelSpec(
        "flux",
        ("FluxTransformer2DModel",),
        ("transformer_blocks", "single_transformer_blocks"),
        {"FluxTransformerBlock": ENCODER_FIRST, "FluxSingleTransformerBlock": ENCODER_FIRST},
        adaln_zero_input,
        module_roles={"FluxTransformerBlock": JOINT, "FluxSingleTransformerBlock": SINGLE},
        timestep_scale=1000.0,
    ),
    ModelSpec(
        "cogview4",
        ("CogView4Transformer2DModel",),
        ("transformer_blocks",),
        {"CogView4TransformerBlock": HIDDEN_FIRST},
        cogview4_input,
        module_roles={"CogView4TransformerBlock": SELF_FF},
        image_outputs=True,
    ),
    ModelSpec(
        "sd3",
        ("SD3Transformer2DModel",),
        ("transformer_blocks",),
        {"JointTransformerBlock": ENCODER_FIRST},
        adaln_zero_input,
        module_roles={"JointTransformerBlock": JOINT},
        image_outputs=True,
    ),
    ModelSpec(
        "wan",
        ("WanTransformer3DModel",),
        ("blocks",),
        {"WanTransformerBlock": IMAGE_ONLY},
        timestep_embedding_input,
        module_roles={"WanTransformerBlock": {"attn": ("attn1",), "cross_attn": ("attn2",), "ff": ("ffn",)}},
        image_outputs=True,
    ),
    ModelSpec(
        "hunyuan_video",
        ("HunyuanVideoTransformer3DModel",),
        ("transformer_blocks", "single_transformer_blocks"),
        {
            "HunyuanVideoTransformerBlock": HIDDEN_FIRST,
            "HunyuanVideoSingleTransformerBlock": HIDDEN_FIRST,
            "HunyuanVideoTokenReplaceTransformerBlock": HIDDEN_FIRST,
            "HunyuanVideoTokenReplaceSingleTransformerBlock": HIDDEN_FIRST,
        },
        adaln_zero_input,
        module_roles={"HunyuanVideoTransformerBlock": JOINT, "HunyuanVideoTokenReplaceTransformerBlock": JOINT,
                      "HunyuanVideoSingleTransformerBlock": SINGLE, "HunyuanVideoTokenReplaceSingleTransformerBlock": SINGLE},
        image_outputs=True,
    ),
    ModelSpec(
        "ltx_video",
        ("LTXVideoTransformer3DModel",),
        ("transformer_blocks",),
        {"LTXVideoTransformerBlock": IMAGE_ONLY},
        ltx_input,
        module_roles={"LTXVideoTransformerBlock": SELF_CROSS_FF},
    ),
    ModelSpec(
        "cogvideox",
        ("CogVideoXTransformer3DModel",),
        ("transformer_blocks",),
        {"CogVideoXBlock": HIDDEN_FIRST},
        timestep_embedding_input,
        module_roles={"CogVideoXBlock": SELF_FF},
        image_outputs=True,
    ),
    ModelSpec(
        "qwen_image",
        ("QwenImageTransformer2DModel",),
        ("transformer_blocks",),
        {"QwenImageTransformerBlock": ENCODER_FIRST},
        qwen_image_input,
        module_roles={"QwenImageTransformerBlock": {"attn": ("attn",), "ff": ("img_mlp", "txt_mlp")}},
    ),
):
    register_spec(_spec)


def known_families() -> list[str]:
    return [spec.family for spec in _SPECS]


def spec_by_family(family: str) -> ModelSpec:
    for spec in _SPECS:
        if spec.family == family:
            return spec
    raise ValueError(f"unknown model family {family!r}; known: {', '.join(known_families())}")


def spec_for(transformer: torch.nn.Module) -> ModelSpec:
    """The spec of a transformer's family, found by its class name."""
    for cls in type(transformer).__mro__:
        for spec in _SPECS:
            if cls.__name__ in spec.transformer_classes:
                return spec
    raise ValueError(
        f"cachelab has no model spec for {type(transformer).__name__}: its block layout is unknown. "
        f"Known families: {', '.join(known_families())}. Add one with "
        "cachelab.models.register_spec(ModelSpec(family, transformer_classes, block_lists, block_outputs, ...))."
    )
