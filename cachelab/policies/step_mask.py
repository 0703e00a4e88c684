"""Step computation masks (cache-dit 1.5.3's ``steps_computation_mask`` / ``steps_computation_policy``) on DBCache.

A mask says per step whether it must compute (1) or may be cached (0). cache-dit's ``steps_mask(mask_policy=...)``
builds one from a named preset (``slow``, ``medium``, ``fast``, ``ultra``) for any number of steps; the steps a
mask leaves to the cache are decided by DBCache's residual threshold (``"dynamic"``) or reused outright
(``"static"``, the head blocks still running, as in cache-dit).

The presets and the rule that fits them to a number of steps are facts read from cache-dit 1.5.3
(``cache_dit/caching/cache_interface.py``, ``steps_mask``): per preset a list of compute runs and a list of cache
runs, alternated from the first step; at 28 steps

    slow   compute 8, 3, 3, 2, 1, 1   cache 1, 2, 2, 2, 3   (18 computed)
    medium compute 6, 2, 2, 2, 2, 1   cache 1, 3, 3, 3, 3   (15)
    fast   compute 6, 1, 1, 1, 1, 1   cache 1, 3, 4, 5, 4   (11)
    ultra  compute 4, 1, 1, 1, 1      cache 2, 5, 6, 7      (8)

fewer steps shorten the runs from the end (the last cache run, then the last compute run, in turn); 8-15 steps
and 4 or 6 steps have presets of their own; more than 28 steps lengthen the runs in proportion. The last step
always computes. ``tests/test_step_mask.py`` checks every preset at every supported step count against the
installed cache-dit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..forecasters.taylor import taylor_weights
from .base import Decision, StepContext, compute, forecast
from .dual_block import DualBlockCache
from .registry import register_policy

MASK_PRESETS = ("slow", "medium", "fast", "ultra")
MASK_POLICIES = ("dynamic", "static")
_Runs = tuple[list[int], list[int]]  # (compute runs, cache runs)

_AT_28 = {"slow": ([8, 3, 3, 2, 1, 1], [1, 2, 2, 2, 3]), "medium": ([6, 2, 2, 2, 2, 1], [1, 3, 3, 3, 3]),
          "fast": ([6, 1, 1, 1, 1, 1], [1, 3, 4, 5, 4]), "ultra": ([4, 1, 1, 1, 1], [2, 5, 6, 7])}
_AT_9_TO_15 = {"slow": ([4, 2, 2, 2, 1], [1, 1, 1, 1]), "medium": ([4, 2, 1, 1, 1], [1, 1, 2, 2]),
               "fast": ([3, 1, 1, 1, 1], [1, 2, 2, 3]), "ultra": ([2, 1, 1, 1, 1], [1, 2, 3, 3])}
_AT_9 = {"slow": ([5, 2, 1], [1]), "medium": ([5, 1, 1], [1, 1]), "fast": ([4, 1, 1], [1, 2]), "ultra": ([3, 1, 1], [2, 2])}
_AT_8 = {"slow": ([5, 1, 1], [1]), "medium": ([4, 1, 1], [1, 1]), "fast": ([3, 1, 1], [1, 2]), "ultra": ([2, 1, 1], [2, 2])}
_AT_4 = ([2, 1], [1])
_AT_6 = ([3, 1], [2])


def _shorten(runs: _Runs, steps: int) -> None:
    """Take one step off the last cache run, then off the last compute run, in turn, until the runs cover ``steps``."""
    compute, cache = runs
    while sum(compute) + sum(cache) > steps:
        for bins in (cache, compute):
            if bins:
                bins[-1] -= 1
                if bins[-1] == 0:
                    bins.pop()
            if sum(compute) + sum(cache) <= steps:
                break


def _lengthen(runs: _Runs, steps: int) -> None:
    """Grow the runs pairwise in proportion to ``steps`` / 28 (at least one step each) until they cover ``steps``."""
    compute, cache = runs
    base_compute, base_cache = list(compute), list(cache)
    pairs = min(len(compute), len(cache))

    def covered() -> bool:
        return sum(compute) + sum(cache) >= steps

    while not covered():
        for i in range(pairs):
            compute[i] += max(int(base_compute[i] * (steps / 28) * 0.5), 1)
            if covered():
                return
            cache[i] += max(int(base_cache[i] * (steps / 28) * 0.5), 1)
            if covered():
                return
        compute[-1] += 1


def preset_runs(preset: str, steps: int) -> _Runs:
    """The compute and cache runs of a named preset at ``steps`` steps."""
    if preset not in MASK_PRESETS:
        raise ValueError(f"mask must be one of {', '.join(MASK_PRESETS)} or a list of 0/1 per step, got {preset!r}")
    if steps in (4, 6):
        compute, cache = _AT_4 if steps == 4 else _AT_6
        return list(compute), list(cache)
    if steps < 8 or steps in (5, 7):
        raise ValueError(f"the {preset!r} step mask exists for 4, 6 or >= 8 steps (as in cache-dit), not {steps}")
    table = _AT_8 if steps == 8 else _AT_9 if steps == 9 else _AT_9_TO_15 if steps < 16 else _AT_28
    runs = (list(table[preset][0]), list(table[preset][1]))
    if steps > 28:
        _lengthen(runs, steps)
    _shorten(runs, steps)
    return runs


def runs_mask(compute: list[int], cache: list[int], steps: int) -> list[int]:
    """Alternate the compute and cache runs from the first step, cut to ``steps``."""
    mask: list[int] = []
    for i in range(max(len(compute), len(cache))):
        mask += [1] * (compute[i] if i < len(compute) else 0) + [0] * (cache[i] if i < len(cache) else 0)
    if len(mask) < steps:
        raise ValueError(f"the runs cover {len(mask)} steps, fewer than {steps}")
    return mask[:steps]


def steps_mask(preset: str, steps: int) -> list[int]:
    """cache-dit's ``steps_mask(total_steps=steps, mask_policy=preset)``: 1 computes, 0 may be cached; the last is 1."""
    mask = runs_mask(*preset_runs(preset, steps), steps)
    mask[-1] = 1
    return mask


@register_policy("step_mask")
@dataclass(eq=False, repr=False)
class StepMask(DualBlockCache):
    """DBCache with a step computation mask (cache-dit's ``steps_computation_mask``): the steps whose ``mask`` entry
    is 1 compute; the others are left to DBCache's threshold on the residual of the first ``compute_first`` blocks
    (``mask_policy="dynamic"``, its limits included) or reuse the cached residual of the middle blocks outright
    (``"static"``; the head blocks still run). ``mask``: a preset name (``slow``, ``medium``, ``fast``, ``ultra``,
    fitted to the generation's number of steps as cache-dit's ``steps_mask`` does) or a list of 0/1 per step (steps
    past its end may be cached). The warm-up is cut to the mask's first run of 1s, as in cache-dit; a first step
    with nothing cached computes. Defaults are cache-dit's (``DBCacheConfig``, ``steps_mask``) but ``compute_first``:
    1, not 8, so that a masked step saves most of the work. Signal: DBCache's, on the dynamic steps it compares."""
    parity = ("cache-dit 1.5.3 steps_computation_mask / steps_computation_policy: same masks, decisions and images "
              "(tests/test_step_mask.py)")

    compute_first: int = 1
    mask: Any = "medium"
    mask_policy: str = "dynamic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.mask, str):
            preset_runs(self.mask, 28)  # an unknown name fails here, not at the first step
        else:
            self.mask = [int(m) for m in self.mask]
            if not self.mask or set(self.mask) - {0, 1}:
                raise ValueError(f"mask must be a preset ({', '.join(MASK_PRESETS)}) or a non-empty list of 0/1, got {self.mask!r}")
        if self.mask_policy not in MASK_POLICIES:
            raise ValueError(f"mask_policy must be one of {', '.join(MASK_POLICIES)}, got {self.mask_policy!r}")

    @classmethod
    def tune_knob(cls, steps: int, blocks: int) -> tuple[str, tuple]:
        """The knob ``cachelab.tune`` should search and its values, safest first: the presets."""
        return "mask", MASK_PRESETS

    def check_steps(self, steps: int) -> None:
        if isinstance(self.mask, str):
            preset_runs(self.mask, steps)

    def reset(self) -> None:
        super().reset()
        self.resolved: list[int] | None = None

    def mask_for(self, steps: int | None) -> list[int]:
        """The mask of a generation of ``steps`` steps (an explicit mask as given)."""
        if not isinstance(self.mask, str):
            return self.mask
        if steps is None:
            raise ValueError(f"the {self.mask!r} step mask needs the number of steps, which this pipeline does not say")
        return steps_mask(self.mask, steps)

    def _may_reuse(self, step: int) -> bool:
        leading = next((i for i, m in enumerate(self.resolved) if m != 1), len(self.resolved))
        warmup = min(self.warmup_steps, leading)
        return (step >= warmup and self.cached_steps != self.max_cached_steps
                and self.continuous_cached_steps != self.max_continuous_cached_steps)

    def decide(self, ctx: StepContext) -> Decision:
        if self.resolved is None:
            self.resolved = self.mask_for(ctx.num_steps)
        must = ctx.step < len(self.resolved) and self.resolved[ctx.step] == 1
        if must or self.mask_policy == "dynamic" or self.last_computed_residual is None:
            return super().decide(ctx) if not must else self._computed(ctx)
        self.cached_steps += 1
        self.continuous_cached_steps += 1
        if self.taylor_order:
            return forecast(taylor_weights(ctx.computed_steps, ctx.step, self.taylor_order))
        return self.skip(ctx)

    def _computed(self, ctx: StepContext) -> Decision:
        self.last_computed_residual = ctx.signals["head_residual"]
        self.continuous_cached_steps = 0
        return compute()
