"""Regional torch.compile of a transformer's repeated blocks that cachelab's executor can run around."""

from __future__ import annotations

import torch

from .executor import _ATTRIBUTE

#: torch.compile modes that capture CUDA graphs, whose replays overwrite the block outputs the executor keeps.
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compile_blocks(transformer: torch.nn.Module, **compile_kwargs) -> list[torch.nn.Module]:
    """Compile the forward of every block whose class the transformer lists in ``_repeated_blocks``
    (the blocks diffusers' ``compile_repeated_blocks`` compiles); returns the compiled blocks.

    Each block's own ``forward`` is replaced by its compiled version, an instance attribute, and not
    its ``__call__``: cachelab's executor then wraps the compiled computation, so its per-step Python
    decisions stay outside the compiled region and never cause a recompilation. Blocks of one class
    share their compiled code. ``compile_kwargs`` go to ``torch.compile`` (``mode``, ``dynamic``, ...).
    Call it once, after loading and before ``cachelab.attach``; the uncached and cached runs of the
    pipeline then both run compiled."""
    if transformer.__dict__.get(_ATTRIBUTE) is not None:
        raise RuntimeError(f"{type(transformer).__name__} runs a cachelab policy; call cachelab.detach() before compile_blocks")
    if getattr(transformer, "is_cache_enabled", False):
        raise RuntimeError(f"{type(transformer).__name__} has a diffusers cache enabled; compile_blocks first, then enable_cache")
    if compile_kwargs.get("mode") in _CUDA_GRAPH_MODES:
        raise ValueError(
            f"mode={compile_kwargs['mode']!r} captures CUDA graphs, which the executor's kept residuals do not survive; "
            "use mode='default' or 'max-autotune-no-cudagraphs'"
        )
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    if not names:
        raise ValueError(f"{type(transformer).__name__} names no _repeated_blocks; set that class attribute to its block class names")
    blocks = [module for module in transformer.modules() if type(module).__name__ in names]
    if not blocks:
        raise ValueError(f"{type(transformer).__name__} holds no blocks of its _repeated_blocks {sorted(names)}")
    if any(getattr(block.forward, "_cachelab_compiled", False) for block in blocks):
        raise RuntimeError(f"the blocks of this {type(transformer).__name__} are compiled already")
    for block in blocks:
        compiled = torch.compile(block.forward, **compile_kwargs)
        compiled._cachelab_compiled = True
        block.forward = compiled
    return blocks
