"""An exact cache: the keys and values of cross-attention over the text encoder's states.

Where a block's cross-attention reads the text encoder's states unchanged at every step (Wan's ``attn2``, LTX-Video's),
its key and value projections of them are the same at every step of a generation and CFG branch: they are computed
once and kept. Each kept projection is used only while its input equals (``torch.equal``) the input it was computed
from, so the output is the uncached one bit for bit, under any lossy policy. Families whose text stream changes from
block to block (joint attention: Flux, SD3, HunyuanVideo, Qwen-Image, CogVideoX, CogView4) are refused.
"""

from __future__ import annotations

import functools

import torch

from .units import module_sites

#: The projections of the text encoder's states in a cross-attention module (I2V models add the image's).
PROJECTIONS = ("to_k", "to_v", "add_k_proj", "add_v_proj")


class TextKV:
    def __init__(self, spec, expert_blocks, branch):
        """``expert_blocks``: the (block, output) lists of the transformer and of any second expert (Wan 2.2)."""
        sites = [(expert, site) for expert, blocks in enumerate(expert_blocks)
                 for site in module_sites([b for b, _ in blocks], spec.module_roles, ("cross_attn",))]
        if not sites:
            raise ValueError(
                f"the text K/V cache needs cross-attention over the text encoder's unchanged states; the {spec.family} "
                "family has none (its text stream changes from block to block in joint attention): run without text_kv"
            )
        self.projections = [(f"{'expert%d.' % expert if expert else ''}{site.key}.{name}", getattr(site.module, name))
                            for expert, site in sites for name in PROJECTIONS
                            if isinstance(getattr(site.module, name, None), torch.nn.Module)]
        self.branch = branch
        self.reset()

    def reset(self) -> None:
        self.kept: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}  # (branch, projection) -> (input, output)
        self.hits = self.misses = 0

    def install(self, patch) -> None:
        for key, module in self.projections:
            patch(module, "forward", functools.partial(self._forward, key))

    def _forward(self, key: str, original, states, *args, **kwargs):
        slot = (self.branch(), key)
        kept = self.kept.get(slot)
        if kept is not None and not args and not kwargs and kept[0].shape == states.shape and torch.equal(kept[0], states):
            self.hits += 1
            return kept[1]
        output = original(states, *args, **kwargs)
        self.kept[slot] = (states, output)
        self.misses += 1
        return output

    def nbytes(self) -> int:
        """Bytes of the kept projections (their inputs are the pipeline's own text states, shared by every block)."""
        return sum(output.numel() * output.element_size() for _, output in self.kept.values())
