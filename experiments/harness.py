"""What the frontier harnesses (experiments/frontier, experiments/frontier_video) share: each library's cache
switched on and off around a pass, cache-dit's configs, and the block work a pass measured with forward hooks.

    sys.path.insert(0, str(Path(__file__).parents[1])); import harness
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read when cache_dit is imported

import cache_dit  # noqa: E402
from cache_dit import (  # noqa: E402
    DBCacheConfig,
    DBPruneConfig,
    DMDCalibratorConfig,
    FoCaCalibratorConfig,
    TaylorSeerCalibratorConfig,
)

import cachelab  # noqa: E402
from cachelab.engine.tokens import PARTIAL  # noqa: E402
from cachelab.models.specs import blocks_of, spec_for  # noqa: E402
from cachelab.units import ROLES, block_unit, module_sites  # noqa: E402


@dataclass(frozen=True)
class Row:
    """One measured setting of a frontier: its library, method, setting and how to switch it on."""

    library: str
    method: str
    setting: str
    enable: Callable  # pipe -> context manager yielding an Enabled
    bound: bool = False
    unit: str = "step"

    @property
    def curve(self) -> str:
        return f"{self.library} {self.method}"

    @property
    def kind(self) -> str:
        return "bound" if self.bound else "cachelab" if self.library == "cachelab" else "reference"


# -- caches: how each library enables and disables one --------------------------------------------

class Enabled:
    """A cache while it is on: untimed preparation before each call, and the library's own account of the
    calls of the last pipeline call (None where it keeps none)."""

    def prepare(self, run) -> None:
        """``run()`` makes the coming pipeline call (the oracle rehearses it uncached)."""

    def own_partial_calls(self) -> int | None:
        """Transformer calls of the last pipeline call that skipped some block work."""
        return None

    def own_skipped(self) -> list[set[str]] | None:
        """Per transformer call of the last pipeline call, the blocks and modules it stood in for."""
        return None

    def kept_peak(self) -> dict[str, int] | None:
        """The most bytes the cache kept at once in the last pipeline call, per unit kind and ``total`` (cachelab's
        ``executor.kept_peak``); None where the library does not say."""
        return None


class CachelabEnabled(Enabled):
    def __init__(self, executor):
        self.executor = executor

    def prepare(self, run):
        if self.executor.policy.rehearses:
            self.executor.rehearse(run)

    def own_partial_calls(self):
        return sum(not record.computed for record in self.executor.trace)

    def own_skipped(self):
        return [set(record.skipped_units) for record in self.executor.trace]

    def kept_peak(self):
        return dict(self.executor.kept_peak)


class CacheDitEnabled(Enabled):
    def __init__(self, pipe):
        self.pipe = pipe

    def own_partial_calls(self):
        return len(cache_dit.summary(self.pipe, logging=False)[-1].cached_steps)


@contextlib.contextmanager
def with_cachelab(policy, pipe):
    executor = cachelab.attach(pipe, policy)
    try:
        yield CachelabEnabled(executor)
    finally:
        cachelab.detach(pipe)


@contextlib.contextmanager
def with_diffusers(config, pipe):
    pipe.transformer.enable_cache(config)
    try:
        yield Enabled()
    finally:
        pipe.transformer.disable_cache()


@contextlib.contextmanager
def with_cache_dit(configs, pipe):
    cache_config, calibrator_config = configs
    cache_dit.enable_cache(pipe, cache_config=cache_config, calibrator_config=calibrator_config)
    try:
        yield CacheDitEnabled(pipe)
    finally:
        cache_dit.disable_cache(pipe)


ENABLE = {"cachelab": with_cachelab, "diffusers": with_diffusers, "cache-dit": with_cache_dit}


#: cache-dit's calibrators by the name of cachelab's stand-in that equals them (tests/test_forecaster_parity.py)
CALIBRATORS = {"foca": FoCaCalibratorConfig, "dmd": DMDCalibratorConfig}


def cache_dit_dbcache(threshold, order=None, calibrator=None):
    """cache-dit's DBCache F1B0 W0 (and its TaylorSeer calibrator of ``order``, or the calibrator named ``calibrator``,
    "foca" or "dmd", at its defaults): (cache config, calibrator config)."""
    config = DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0,
                           residual_diff_threshold=threshold)
    if calibrator:
        return config, CALIBRATORS[calibrator]()
    return config, order and TaylorSeerCalibratorConfig(taylorseer_order=order)


def cache_dit_step_mask(preset, threshold, steps, warmup=8):
    """cache-dit's DBCache F1B0 with its step computation mask ``preset`` (``steps_mask``, dynamic policy) over a
    generation of ``steps`` steps: cachelab's ``StepMask(threshold, mask=preset)`` (tests/test_step_mask.py)."""
    mask = cache_dit.steps_mask(total_steps=steps, mask_policy=preset)
    return DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=warmup, residual_diff_threshold=threshold,
                         steps_computation_mask=mask, steps_computation_policy="dynamic"), None


def cache_dit_dbprune(threshold):
    """cache-dit's DBPrune F1B0 W0: every block after the first skipped on its own below ``threshold``."""
    return DBPruneConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0,
                         residual_diff_threshold=threshold), None


# -- block work, measured -------------------------------------------------------------------------

def last_leaf(module: torch.nn.Module, outside=()) -> torch.nn.Module:
    """The last submodule without children (``module`` itself if it has none), not inside ``outside``."""
    inner = {id(m) for o in outside for m in o.modules()}
    return [m for m in module.modules() if not next(m.children(), None) and id(m) not in inner][-1]


class BlockWork:
    """The computed share of a transformer's block work in each call, measured by forward hooks whatever library
    does the caching. Units are cachelab's (``block3``, and inside a block its attention and feed-forward modules,
    ``block3.attn``, ``block3.ff_context``), each weighted by its median uncached seconds (``timing()``). A unit
    ran in a call when its sentinel ran: the last leaf module inside it (for a block, outside its attention and
    feed-forward modules; not its first, a norm that TeaCache's signal runs on its own), which no library's cache
    calls when it stands in for the unit. Blind spot: a module
    that is itself a leaf (Flux's single-block ``proj_mlp``) is its own sentinel, so a cache that patches that
    module's forward (cachelab's fora) looks as if it computed it; cachelab rows take their skipped units from
    cachelab's trace instead, checked against the hooks on every unit the hooks can see."""

    def __init__(self, transformer):
        self.transformer = transformer
        spec = spec_for(transformer)
        blocks = [block for block, _ in blocks_of(transformer, spec)]
        sites = module_sites(blocks, spec.module_roles, ROLES)
        self.blocks = [block_unit(i) for i in range(len(blocks))]
        self.modules = {block_unit(i): block for i, block in enumerate(blocks)} | {site.key: site.module for site in sites}
        self.parent = {site.key: block_unit(site.block) for site in sites}
        self.sentinels = {block_unit(i): last_leaf(block, [s.module for s in sites if s.block == i])
                          for i, block in enumerate(blocks)} | {site.key: last_leaf(site.module) for site in sites}
        self.blind = {key for key, sentinel in self.sentinels.items() if sentinel is self.modules[key]}
        self.costs: dict[str, float] = {}
        self.calls: list[set[str]] = []  # per transformer call while counting: the units whose sentinel ran

    @contextlib.contextmanager
    def _hooks(self, hooks):
        handles = [register(hook) for register, hook in hooks]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    @contextlib.contextmanager
    def timing(self):
        """Measure every unit's seconds (the calls inside must be uncached); ``costs`` = their medians. CPU seconds
        of this thread (torch on one thread): wall seconds of a block on a shared machine include the time other
        processes held the core, which inflated a 2.6 ms block to 10.6 ms in a measurement under load."""
        samples, started = {key: [] for key in self.modules}, {}

        def start(key):
            return lambda *_: started.__setitem__(key, time.thread_time())

        def stop(key):
            return lambda *_: samples[key].append(time.thread_time() - started[key])

        hooks = [(module.register_forward_pre_hook, start(key)) for key, module in self.modules.items()]
        hooks += [(module.register_forward_hook, stop(key)) for key, module in self.modules.items()]
        with self._hooks(hooks):
            yield
        self.costs = {key: statistics.median(seconds) for key, seconds in samples.items()}

    @contextlib.contextmanager
    def counting(self):
        """Record, per transformer call inside, the units whose sentinel ran (``calls``) and the CPU seconds of each
        module call (``module_seconds``: what a token policy's partial call of a module cost)."""
        self.calls, self.module_seconds, started = [], [], {}

        def ran(key):
            return lambda *_: self.calls[-1].add(key)

        def start(key):
            return lambda *_: started.__setitem__(key, time.thread_time())

        def stop(key):
            def hook(*_):
                seconds = self.module_seconds[-1]
                seconds[key] = seconds.get(key, 0.0) + time.thread_time() - started[key]
            return hook

        def new_call(*_):
            self.calls.append(set())
            self.module_seconds.append({})

        hooks = [(self.transformer.register_forward_pre_hook, new_call)]
        hooks += [(sentinel.register_forward_pre_hook, ran(key)) for key, sentinel in self.sentinels.items()]
        hooks += [(self.modules[key].register_forward_pre_hook, start(key)) for key in self.parent]
        hooks += [(self.modules[key].register_forward_hook, stop(key)) for key in self.parent]
        with self._hooks(hooks):
            yield

    def skipped(self, ran: set[str]) -> set[str]:
        """The units stood in for in a call: blocks that did not run, and modules that did not run in blocks that did."""
        return ({block for block in self.blocks if block not in ran}
                | {key for key, block in self.parent.items() if key not in ran and block in ran})

    def visible(self, skipped: set[str]) -> set[str]:
        """The stood-in units the hooks can see: not the blind ones, and not a token policy's partial calls
        (``block3.ff<block3.ff/tokens12``: the module ran, on some tokens)."""
        return {key for key in skipped if PARTIAL not in key} - self.blind

    def partial_samples(self, skipped: list[set[str]], seconds: list[dict[str, float]]) -> dict[str, list[float]]:
        """Per partial cost key of a token policy (``block3.ff/tokens12``), the CPU seconds its module's calls took,
        from the transformer calls' ``skipped`` units and ``module_seconds`` (gathers, scatters, merges included:
        they run inside the module's patched forward)."""
        samples: dict[str, list[float]] = {}
        for units, measured in zip(skipped, seconds):
            for key in units:
                if PARTIAL in key:
                    full, partial = key.split(PARTIAL)
                    samples.setdefault(partial, []).append(measured[full])
        return samples

    def work(self, skipped: set[str], partial: dict[str, float] | None = None) -> float:
        """The computed share of the block work of a call that stood in for ``skipped`` (cachelab's formula,
        ``cachelab.units.Costs.work``, with these costs): a unit stood in for saves its cost, a token policy's partial
        call of one (``full<partial``) its cost less the partial call's (``partial``: median CPU seconds per key)."""
        total = sum(self.costs[block] for block in self.blocks)
        saved = 0.0
        for key in skipped:
            if PARTIAL in key:
                full, part = key.split(PARTIAL)
                saved += self.costs[full] - partial[part]
            else:
                saved += self.costs[key]
        return max(0.0, 1.0 - saved / total)

    def shares(self) -> dict[str, float]:
        """Each unit's share of an uncached call's block work."""
        total = sum(self.costs[block] for block in self.blocks)
        return {key: cost / total for key, cost in self.costs.items()}


def psnr_at(curve: tuple[list[float], list[float]], x: float) -> float | None:
    """PSNR interpolated linearly along a curve (xs ascending, PSNRs) at ``x``; None outside the curve's range."""
    xs, ys = curve
    return float(np.interp(x, xs, ys)) if xs and xs[0] <= x <= xs[-1] else None
