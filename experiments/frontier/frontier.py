"""The quality-speed frontier of a small FluxPipeline: cachelab's policies against diffusers' and
cache-dit's caches, measured in one harness and one process.

    python experiments/frontier/frontier.py [--model digits|shapes] [--quick] [--out DIR]

``--model digits`` (the default) is the embedded digits model, with the calibration shipped beside it;
``--model shapes`` is the coloured-shapes model of experiments/train_shapes, which the policies were not
developed on: its learned plans, TeaCache coefficients and MagCache ratios are fitted first, in this run,
on generations seeded 1000, and written to calibration.json in --out.

Every row generates the model's prompts with seeds 0 and 1, one pipeline call per prompt (prompt i of
seed s uses ``torch.Generator("cpu").manual_seed(s + i)``, as ``python -m cachelab`` does), 28 steps,
and compares the images with the uncached ones (PSNR of the whole set, mean SSIM). Speed: paired,
alternating uncached and cached passes over the first prompts, speedup = median uncached pass / median
cached pass. Writes results.json, frontier.md and frontier.png to --out and prints the target verdicts.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared harness
os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read when cache_dit is imported

import cache_dit  # noqa: E402
import diffusers  # noqa: E402
import harness  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    FasterCacheConfig,
    FirstBlockCacheConfig,
    FluxPipeline,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)
from harness import (  # noqa: E402
    ENABLE,
    BlockWork,
    Enabled,
    Row,
    cache_dit_dbcache,
    cache_dit_dbprune,
    cache_dit_step_mask,
    psnr_at,
)

import cachelab  # noqa: E402
from cachelab import metrics, zoo  # noqa: E402
from cachelab.calibrate import (  # noqa: E402
    learned_plans,
    lemica_schedules,
    magcache_ratios,
    sencache_sensitivities,
    teacache_coefficients,
)
from cachelab.calibrate.learned_blocks import learned_block_plans  # noqa: E402
from cachelab.calibration import CALIBRATION_FILE, use_calibration_file  # noqa: E402
from cachelab.policies import (  # noqa: E402
    ClusCa,
    DBPrune,
    DualBlockCache,
    DuCa,
    EasyCache,
    FasterCache,
    FirstBlockCache,
    FixedInterval,
    Fora,
    Learned,
    LeMiCa,
    MagCache,
    Oracle,
    PyramidAttentionBroadcast,
    SenCache,
    StepMask,
    TaylorSeer,
    TeaCache,
    ToCa,
)
from cachelab.runner import Call, cpu_threads, first_sample  # noqa: E402

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
STEPS = 28
ARGUMENTS = dict(num_inference_steps=STEPS, output_type="np", **zoo.CALL_DEFAULTS)  # both models' sizes
SEEDS = (0, 1)
CALIBRATION_SEED = 1000  # models calibrated in the run are calibrated on this seed, disjoint from SEEDS
CALIBRATION_GENERATIONS = 2  # of every prompt, in batched calls, as experiments/train_digits/calibrate_digits.py does
THREADS = 1  # another process may share the machine; one thread each avoids oversubscription
FULL = dict(timing_prompts=1, rounds=3)
QUICK = dict(timing_prompts=1, rounds=3)
LIBRARIES = ("cachelab", "diffusers", "cache-dit")

# The targets
FAST, GOOD = 5.0, 35.0  # (a): >= 5x wall speedup at >= 35 dB
AT_SPEEDUP = 3.0  # (b): at 3x, cachelab >= 2 dB above the best reference
BUDGETS = (6, 8)  # (c): at these computed steps, cachelab >= 2 dB above cache-dit DBCache + TaylorSeer
MARGIN = 2.0
ORACLE = "cachelab oracle fitted history 2"  # (d): the oracle beside the policies at each of its budgets
CACHE_DIT_FORECAST = "cache-dit DBCache F1B0 W0 + TaylorSeer"
STEP_LEARNED, BLOCK_LEARNED = "cachelab learned", "cachelab learned per block"
BLOCK_BUDGETS, BLOCK_MARGIN = (4, 6, 8), 1.0  # (e): per-block learned >= +1 dB at step-level learned's block work
BETTER = 40.0  # (f): >= FAST x wall speedup at >= 40 dB
STACK_MARGIN = 1.0  # (g): a stack >= +1 dB over the best single policy at its block work; (i): a token row over non-token
LEMICA_BUDGETS = (3, 4, 5, 6, 8, 10)  # (h): lemica against learned and the oracle at these budgets

# The stand-ins on the step triggers: (name in the curve, forecaster, its order); foca and dmd are cache-dit's calibrators
STAND_INS = (("foca", "foca", 1), ("dmd", "dmd", 1), ("hermite order 2", "hermite", 2), ("taylor order 1", "taylor", 1))
CALIBRATED = ("foca", "dmd")
STEP_MASK_THRESHOLD = 0.24  # DBCache's threshold on the steps a step mask leaves to it (cache-dit's dynamic policy)


# -- the rows --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A cache with its knob still free: ``make(value)`` builds the cachelab policy or the library's config.
    ``unit``: what one decision covers, a whole step, a block or a module (attention, feed-forward)."""

    library: str
    name: str
    knob: str
    make: Callable
    bound: bool = False  # knows the uncached result (the oracle): not deployable
    unit: str = "step"

    @property
    def curve(self) -> str:
        return f"{self.library} {self.name}"


def methods(model: str, policies: dict, pipe) -> list[Method]:
    """Every method the harness knows. ``policies`` is the model's calibration (numbers by policy name):
    cachelab's calibrated policies find it on the transformer, diffusers' MagCache is handed its ratios."""
    orders = (1, 2)
    timestep = lambda: pipe.current_timestep  # noqa: E731  (diffusers' PAB and FasterCache read it)
    return [
        Method("cachelab", "first_block", "threshold", FirstBlockCache),
        Method("cachelab", "teacache", "threshold", TeaCache),
        Method("cachelab", "magcache", "threshold", MagCache),
        Method("cachelab", "fixed_interval", "interval", FixedInterval),
        Method("cachelab", "dbcache F1B0 W0", "threshold",
               functools.partial(DualBlockCache, compute_first=1, compute_last=0, warmup_steps=0)),
        *(Method("cachelab", f"taylorseer order {order}", "interval", functools.partial(TaylorSeer, order=order))
          for order in orders),
        *(Method("cachelab", f"first_block taylor_order {order}", "threshold",
                 functools.partial(FirstBlockCache, taylor_order=order)) for order in orders),
        Method("cachelab", "learned", "budget", Learned),
        Method("cachelab", "oracle fitted history 2", "budget",
               functools.partial(Oracle, forecast="fitted", history=2), bound=True),
        Method("cachelab", "oracle reuse", "budget", functools.partial(Oracle, forecast="reuse"), bound=True),
        Method("cachelab", "learned per block", "budget", functools.partial(Learned, unit="block"), unit="block"),
        Method("cachelab", "dbprune F1B0 W0", "threshold",
               functools.partial(DBPrune, compute_first=1, compute_last=0, warmup_steps=0), unit="block"),
        Method("cachelab", "pab", "spatial skip",
               lambda k: PyramidAttentionBroadcast(spatial_attention_block_skip_range=k), unit="module"),
        Method("cachelab", "faster_cache", "spatial skip",
               lambda k: FasterCache(spatial_attention_block_skip_range=k), unit="module"),
        Method("cachelab", "fora", "interval", Fora, unit="module"),
        # diffusers' TaylorSeer's defaults: order 1, the first 3 steps computed
        Method("cachelab", "taylorseer module W3", "interval",
               lambda i: TaylorSeer(i, order=1, warmup_steps=3, unit="module"), unit="module"),
        # the stand-in axis: the same triggers with another forecaster (cachelab.forecasters)
        *(Method("cachelab", f"first_block + {name}", "threshold",
                 functools.partial(FirstBlockCache, forecaster=forecaster, forecaster_order=order))
          for name, forecaster, order in STAND_INS),
        *(Method("cachelab", f"dbcache F1B0 W0 + {name}", "threshold", functools.partial(
            DualBlockCache, compute_first=1, compute_last=0, warmup_steps=0, forecaster=name)) for name in CALIBRATED),
        Method("cachelab", "dbprune F1B0 W0 + foca", "threshold", functools.partial(
            DBPrune, compute_first=1, compute_last=0, warmup_steps=0, forecaster="foca"), unit="block"),
        Method("cachelab", "taylorseer module W3 + hermite", "interval",
               lambda i: TaylorSeer(i, order=1, warmup_steps=3, unit="module", forecaster="hermite"), unit="module"),
        # the new triggers
        Method("cachelab", "easycache", "threshold", EasyCache),
        Method("cachelab", "lemica", "budget", LeMiCa),
        Method("cachelab", "lemica + taylor order 1", "budget", functools.partial(LeMiCa, forecaster="taylor")),
        Method("cachelab", "sencache", "threshold", SenCache),
        Method("cachelab", f"step_mask F1B0 {STEP_MASK_THRESHOLD}", "preset",
               lambda preset: StepMask(STEP_MASK_THRESHOLD, mask=preset)),
        # stacks (cachelab.attach(pipe, [step, block, module or token policy])): the knob of their first part varies
        Method("cachelab", "first_block + pab 3", "threshold",
               lambda t: [FirstBlockCache(t), PyramidAttentionBroadcast(spatial_attention_block_skip_range=3)], unit="stack"),
        Method("cachelab", "first_block + fora 2", "threshold", lambda t: [FirstBlockCache(t), Fora(2)], unit="stack"),
        Method("cachelab", "learned + fora 2", "budget", lambda b: [Learned(b), Fora(2)], unit="stack"),
        Method("cachelab", "learned + pab 2", "budget",
               lambda b: [Learned(b), PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)], unit="stack"),
        Method("cachelab", "fixed_interval + dbprune 0.1", "interval",
               lambda i: [FixedInterval(i), DBPrune(0.1, compute_first=1, compute_last=0, warmup_steps=0)], unit="stack"),
        *(Method("cachelab", f"learned + dbprune {t}", "budget",
                 lambda b, t=t: [Learned(b), DBPrune(t, compute_first=1, compute_last=0, warmup_steps=0)], unit="stack")
          for t in (0.1, 0.05)),
        # token policies (ToCa, DuCa, ClusCa at their published defaults but the knob), alone and under a step schedule
        Method("cachelab", "toca", "fresh ratio", lambda r: ToCa(fresh_ratio=r), unit="token"),
        Method("cachelab", "duca", "interval", lambda i: DuCa(interval=i), unit="token"),
        Method("cachelab", "clusca", "interval", lambda i: ClusCa(interval=i), unit="token"),
        Method("cachelab", "fixed_interval + toca", "interval", lambda i: [FixedInterval(i), ToCa()], unit="token stack"),
        Method("cachelab", "learned + toca", "budget", lambda b: [Learned(b), ToCa()], unit="token stack"),
        Method("cachelab", "learned + clusca", "budget", lambda b: [Learned(b), ClusCa()], unit="token stack"),
        Method("diffusers", "FirstBlockCache", "threshold", FirstBlockCacheConfig),
        Method("diffusers", f"MagCache ({model} ratios)", "threshold", lambda t: MagCacheConfig(
            threshold=t, mag_ratios=policies["magcache"]["mag_ratios"], num_inference_steps=STEPS)),
        Method("diffusers", "TaylorSeer", "interval", lambda i: TaylorSeerCacheConfig(
            cache_interval=i, taylor_factors_dtype=torch.float32), unit="module"),
        Method("diffusers", "PAB", "spatial skip", lambda k: PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=k, current_timestep_callback=timestep), unit="module"),
        Method("diffusers", "FasterCache", "spatial skip", lambda k: FasterCacheConfig(
            spatial_attention_block_skip_range=k, current_timestep_callback=timestep, is_guidance_distilled=True,
            attention_weight_callback=lambda _: 0.5), unit="module"),
        Method("cache-dit", "DBCache F1B0 W0", "threshold", cache_dit_dbcache),
        *(Method("cache-dit", f"DBCache F1B0 W0 + TaylorSeer order {order}", "threshold",
                 functools.partial(cache_dit_dbcache, order=order)) for order in orders),
        Method("cache-dit", "DBPrune F1B0 W0", "threshold", cache_dit_dbprune, unit="block"),
        *(Method("cache-dit", f"DBCache F1B0 W0 + {name}", "threshold",
                 functools.partial(cache_dit_dbcache, calibrator=name)) for name in CALIBRATED),
        Method("cache-dit", f"DBCache F1B0 {STEP_MASK_THRESHOLD} steps_mask", "preset",
               lambda preset: cache_dit_step_mask(preset, STEP_MASK_THRESHOLD, STEPS)),
    ]


@dataclass(frozen=True)
class Model:
    """A model the frontier runs on, and the settings it runs there."""

    name: str
    title: str  # in reports: "Digits model, 10 digits x seeds ..."
    noun: str
    path: Path  # the checkpoint, for zoo.load_pipeline
    prompts: Callable[[], list[str]]
    grid: dict[str, tuple]  # curve -> the settings of its knob, in running order
    quick: dict[str, float]  # curve -> the one setting --quick runs
    fits_calibration: bool  # fit the calibrated policies in the run (else: the calibration.json beside it)
    folder: str  # its outputs, below experiments/frontier and experiments/frontier/quick
    description: str

    def settings(self, curve: str, quick: bool) -> tuple:
        return tuple(v for v in self.grid.get(curve, ()) if not quick or self.quick.get(curve) == v)


def rows(model: Model, policies: dict, quick: bool, pipe, only: str | None = None) -> list[Row]:
    """A row per setting of the model's grid (its quick ones with ``quick``; of the curves matching the regular
    expression ``only``, if given, as "curve knob value"). cache-dit's rows come last: cache-dit leaves its patch of the transformer's
    forward in place after disable_cache."""
    known = {method.curve: method for method in methods(model.name, policies, pipe)}
    found = [Row(m.library, m.name, f"{m.knob} {value}", functools.partial(ENABLE[m.library], m.make(value)), m.bound,
                 m.unit)
             for curve in model.grid for m in [known[curve]] for value in model.settings(curve, quick)
             if only is None or re.search(only, f"{curve} {m.knob} {value}")]
    return sorted(found, key=lambda row: row.library == "cache-dit")


TRAIN_SHAPES = HERE.parent / "train_shapes"


def shapes_prompts() -> list[str]:
    sys.path.insert(0, str(TRAIN_SHAPES))
    import train_shapes

    return train_shapes.prompts()


# The rows whose decisions cover less than a step, on both models; each cachelab row beside its peer's
# (diffusers' TaylorSeer is the twin of cachelab's taylorseer with unit="module", order 1, warm-up 3).
DBPRUNE_THRESHOLDS = (0.05, 0.1, 0.2, 0.3)
SKIP_RANGES = (2, 3, 5)
FINER_UNITS = {
    BLOCK_LEARNED: (3, 4, 5, 6, 8, 10),
    "cachelab dbprune F1B0 W0": DBPRUNE_THRESHOLDS,
    "cachelab pab": SKIP_RANGES,
    "cachelab faster_cache": SKIP_RANGES,
    "cachelab fora": (2, 3, 4),
    "cachelab taylorseer module W3": (2, 3, 5),
}
FINER_PEERS = {"diffusers TaylorSeer": (2, 3, 5), "diffusers PAB": SKIP_RANGES, "diffusers FasterCache": SKIP_RANGES}
QUICK_FINER = {BLOCK_LEARNED: 6, "cachelab dbprune F1B0 W0": 0.1, "cache-dit DBPrune F1B0 W0": 0.1,
               "cachelab pab": 3, "diffusers PAB": 3, "cachelab fora": 3}
# The rows of the three axes (issues 22-24), on both models: stand-ins on the step, block and module triggers (with
# cache-dit's FoCa / DMD and step-mask twins), the new triggers, stacks and token policies.
STAND_IN_THRESHOLDS = (0.24, 0.4)
AXES = {  # in the order they run: the rows the questions need first (README, "The three axes")
    "cachelab first_block + pab 3": (0.2,),
    "cachelab first_block + fora 2": (0.2,),
    "cachelab learned + fora 2": (6, 10),
    "cachelab learned + pab 2": (8,),
    "cachelab fixed_interval + dbprune 0.1": (2,),
    "cachelab learned + dbprune 0.1": (8,),
    "cachelab learned + dbprune 0.05": (8, 10),  # after the first run's rows showed 0.1 closest to the target (g)
    "cachelab lemica": LEMICA_BUDGETS,
    "cachelab lemica + taylor order 1": (4, 6, 8, 10),
    "cachelab easycache": (0.05, 0.1, 0.2, 0.4),
    "cachelab toca": (0.07,),
    "cachelab duca": (5,),
    "cachelab clusca": (5,),
    "cachelab fixed_interval + toca": (2,),
    "cachelab learned + toca": (10,),
    **{f"cachelab dbcache F1B0 W0 + {name}": (0.4,) for name in CALIBRATED},
    **{f"cachelab first_block + {name}": (0.4,) for name, _, _ in STAND_INS},
    "cachelab dbprune F1B0 W0 + foca": (0.1,),
    "cachelab taylorseer module W3 + hermite": (3,),
    "cachelab sencache": (0.4, 0.8),
    f"cachelab step_mask F1B0 {STEP_MASK_THRESHOLD}": ("fast", "ultra"),
}
AXES_PEERS = {**{f"cache-dit DBCache F1B0 W0 + {name}": (0.4,) for name in CALIBRATED},
              f"cache-dit DBCache F1B0 {STEP_MASK_THRESHOLD} steps_mask": ("fast", "ultra")}
QUICK_AXES = {"cachelab dbcache F1B0 W0 + foca": 0.4, "cache-dit DBCache F1B0 W0 + foca": 0.4, "cachelab easycache": 0.1,
              f"cachelab step_mask F1B0 {STEP_MASK_THRESHOLD}": "fast",
              f"cache-dit DBCache F1B0 {STEP_MASK_THRESHOLD} steps_mask": "fast", "cachelab first_block + pab 3": 0.2,
              "cachelab toca": 0.07, "cachelab learned + toca": 8}

DIGITS = Model(
    name="digits", title="Digits model", noun="digits", path=zoo.path(), prompts=lambda: zoo.prompts_for(range(10)),
    grid={
        "cachelab first_block": (0.1, 0.2, 0.3),
        "cachelab teacache": (0.03, 0.05, 0.1, 0.2),  # 0.03, 0.05: for (j), added 2026-12-06
        "cachelab magcache": (0.06, 0.24),
        "cachelab fixed_interval": (2, 4),
        "cachelab dbcache F1B0 W0": (0.12, 0.24),
        "cachelab taylorseer order 1": (3, 5, 7),
        "cachelab first_block taylor_order 2": (0.24, 0.4, 0.6),
        STEP_LEARNED: (3, 4, 5, 6, 8, 10),
        ORACLE: (4, 6, 8, 10),
        "cachelab oracle reuse": (4, 6, 8, 10),  # the best reuse schedule, a bound: beside lemica, for (h)
        **FINER_UNITS,
        **AXES,
        "diffusers FirstBlockCache": (0.1, 0.2, 0.3),
        "diffusers MagCache (digits ratios)": (0.06, 0.24),
        **FINER_PEERS,
        "cache-dit DBCache F1B0 W0": (0.08, 0.12, 0.24),
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": (0.24, 0.4, 0.6),
        "cache-dit DBPrune F1B0 W0": DBPRUNE_THRESHOLDS,
        **AXES_PEERS,
    },
    quick={"cachelab taylorseer order 1": 5, "cachelab first_block taylor_order 2": 0.4, STEP_LEARNED: 6,
           ORACLE: 6, "diffusers FirstBlockCache": 0.2, "diffusers TaylorSeer": 3,
           "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": 0.4, **QUICK_FINER, **QUICK_AXES, "cachelab lemica": 6},
    fits_calibration=False, folder="",
    description="cachelab digits (zoo.load_pipeline(), called as a plain FluxPipeline)",
)
# Thresholds for 4-10 computed steps on this model (its first block's residual changes more per step than the
# digits model's: first_block 0.3 computes 6 steps here, 8 on digits).
SHAPES_THRESHOLDS = (0.15, 0.2, 0.3, 0.4, 0.5)
SHAPES = Model(
    name="shapes", title="Shapes model (experiments/train_shapes)", noun="prompts", path=TRAIN_SHAPES / "shapes",
    prompts=shapes_prompts,
    grid={
        "cachelab first_block": (0.1, 0.2, 0.3),
        "cachelab teacache": (0.1, 0.2),
        "cachelab magcache": (0.06, 0.24),
        "cachelab fixed_interval": (2, 4),
        "cachelab taylorseer order 1": (3, 5, 7),
        "cachelab first_block taylor_order 2": SHAPES_THRESHOLDS,
        STEP_LEARNED: (3, 4, 5, 6, 8, 10),
        ORACLE: (4, 6, 8),
        **FINER_UNITS,
        **AXES,
        "diffusers FirstBlockCache": (0.1, 0.2, 0.3),
        "diffusers MagCache (shapes ratios)": (0.06, 0.24),
        **FINER_PEERS,
        "cache-dit DBCache F1B0 W0": (0.2, 0.3, 0.5),
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": SHAPES_THRESHOLDS,
        "cache-dit DBPrune F1B0 W0": DBPRUNE_THRESHOLDS,
        **AXES_PEERS,
    },
    quick={"cachelab taylorseer order 1": 5, "cachelab first_block taylor_order 2": 0.3, STEP_LEARNED: 6,
           ORACLE: 6, "diffusers FirstBlockCache": 0.2, "diffusers TaylorSeer": 3,
           "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": 0.3, **QUICK_FINER, **QUICK_AXES},
    fits_calibration=True, folder="shapes",
    description="train_shapes (zoo.load_pipeline(experiments/train_shapes/shapes), called as a plain FluxPipeline)",
)
MODELS = {model.name: model for model in (DIGITS, SHAPES)}


# -- the harness -----------------------------------------------------------------------------------

@dataclass
class Pass:
    images: np.ndarray
    seconds: list[float]
    computed: list[int]  # per call: transformer calls that skipped no block work
    work: list[float]  # per call: the computed share of the block work (harness.BlockWork)
    skipped: Counter  # unit -> transformer calls that stood in for it, over the pass
    own_work: list[float]  # per call, cachelab rows: the share cachelab's trace measured (its own unit timings)
    kept_peak: list[int]  # per call, cachelab rows: the most bytes the policy kept at once (executor.kept_peak["total"])
    partial_seconds: dict  # token policies: partial cost key -> median CPU seconds of its module calls


def counted(meter: BlockWork, row: Row, cache: Enabled, calls: list[set[str]]) -> list[set[str]]:
    """The units each transformer call of one pipeline call stood in for: by the hooks, or by cachelab's trace
    (checked against the hooks on every unit they can see); the library's own count of partial calls must agree."""
    skipped = [meter.skipped(ran) for ran in calls]
    own = cache.own_skipped()
    if own is not None:
        if [meter.visible(s) for s in own] != [meter.visible(s) for s in skipped]:
            raise RuntimeError(f"{row.curve} {row.setting}: cachelab's trace and the hooks disagree on the skipped units")
        skipped = own
    partial, own_partial = sum(map(bool, skipped)), cache.own_partial_calls()
    if own_partial is not None and own_partial != partial:
        raise RuntimeError(f"{row.curve} {row.setting}: the library counts {own_partial} calls with skipped blocks, "
                           f"the hooks {partial}")
    return skipped


def run_pass(pipe, meter: BlockWork, calls: list[Call], row: Row | None = None, count: bool = False) -> Pass:
    """Run ``calls`` uncached (``row=None``) or with the row's cache on, timing each call alone; with ``count``
    (untimed passes only: the hooks cost time), also which blocks and modules each transformer call ran."""
    done = Pass([], [], [], [], Counter(), [], [], {})
    per_call, seconds = [], []  # with count: per pipeline call, per transformer call: units stood in for, module seconds
    with row.enable(pipe) if row else contextlib.nullcontext(Enabled()) as cache:
        with meter.counting() if count else contextlib.nullcontext():
            for call in calls:
                cache.prepare(lambda: pipe(**call.kwargs()))
                before = len(meter.calls)
                start = time.perf_counter()
                output = pipe(**call.kwargs())
                done.seconds.append(time.perf_counter() - start)
                done.images.append(first_sample(output))
                if count and row:
                    per_call.append(skipped := counted(meter, row, cache, meter.calls[before:]))
                    seconds.extend(meter.module_seconds[before:])
                    done.computed.append(sum(not s for s in skipped))
                    done.skipped.update(unit for s in skipped for unit in s)
                    if isinstance(cache, harness.CachelabEnabled):
                        done.own_work.append(metrics.work_fraction(cache.executor.trace))
                        done.kept_peak.append(cache.kept_peak().get("total", 0))
    if per_call:  # a token policy's partial calls cost what their modules' calls measured here (median per key)
        flat = [s for skipped in per_call for s in skipped]
        samples = meter.partial_samples(flat, seconds)
        done.partial_seconds = {key: statistics.median(seconds) for key, seconds in samples.items()}
        done.work = [metrics.mean([meter.work(s, done.partial_seconds) for s in skipped]) for skipped in per_call]
    done.images = np.stack(done.images)
    return done


def paired_timing(pipe, meter, calls, row: Row, rounds: int, reference: np.ndarray) -> dict:
    """Alternating uncached and cached passes (uncached first in even rounds); also checks that the
    uncached output after the cache was disabled is the reference, bit for bit."""
    uncached, cached, drift = [], [], 0.0
    for round_ in range(rounds):
        for cache in (None, row) if round_ % 2 == 0 else (row, None):
            passed = run_pass(pipe, meter, calls, cache)
            (cached if cache else uncached).append(sum(passed.seconds))
            if not cache:
                drift = max(drift, float(np.abs(passed.images - reference).max()))
    if drift:
        print(f"  WARNING: uncached output changed after {row.curve} {row.setting}: max |diff| {drift:.3g}")
    return dict(speedup=metrics.speedup(uncached, cached), uncached_seconds=statistics.median(uncached),
                cached_seconds=statistics.median(cached), speedup_of_fastest=min(uncached) / min(cached),
                uncached_drift=drift, timing_spread=max(max(t) / min(t) for t in (uncached, cached)))


def evaluate(pipe, meter, row: Row, calls, reference, settings) -> dict:
    timed = settings["timing_prompts"]
    cached = run_pass(pipe, meter, calls, row, count=True)
    work = metrics.mean(cached.work)
    return dict(
        library=row.library, method=row.method, curve=row.curve, setting=row.setting, kind=row.kind, unit=row.unit,
        computed_steps=metrics.mean(cached.computed), block_work=work, block_work_steps=work * STEPS,
        cachelab_computed_work=metrics.mean(cached.own_work) if cached.own_work else None,
        kept_peak_mib=max(cached.kept_peak) / 2**20 if cached.kept_peak else None,
        partial_keys=len(cached.partial_seconds) or None, skipped_calls=dict(sorted(cached.skipped.items())),
        psnr=metrics.psnr(reference, cached.images), ssim=metrics.mean(metrics.ssim(reference, cached.images)),
        **paired_timing(pipe, meter, calls[:timed], row, settings["rounds"], reference[:timed]),
    )


def plain_pipeline(model: Model):
    """The model as a plain FluxPipeline (cache-dit recognises pipelines by class name; the calls pass
    the model's sizes themselves, ARGUMENTS), with the calibration beside it unless the run fits one."""
    pipe = FluxPipeline(**zoo.load_pipeline(model.path, calibrated=not model.fits_calibration).components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def make_calls(prompts: list[str]) -> list[Call]:
    return [Call(prompt, seed + i, ARGUMENTS) for seed in SEEDS for i, prompt in enumerate(prompts)]


# -- calibration -----------------------------------------------------------------------------------

def fit_calibration(pipe, prompts: list[str], budgets: tuple[int, ...], block_budgets: tuple[int, ...],
                    command: str) -> dict:
    """The learned plans (refined), per-block learned plans, TeaCache coefficients and MagCache ratios of this
    pipeline, each fitted
    by cachelab.calibrate on CALIBRATION_GENERATIONS batched calls of all prompts from one generator seeded
    CALIBRATION_SEED, and timed: a calibration.json record."""
    batches, seconds = [prompts] * CALIBRATION_GENERATIONS, {}

    def fit(name, function, *args, **kwargs):
        start = time.perf_counter()
        generator = torch.Generator().manual_seed(CALIBRATION_SEED)
        found = function(pipe, batches, *args, generator=generator, **kwargs, **ARGUMENTS)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"calibrated {name} in {seconds[name]} s", flush=True)
        return found

    plans = fit("learned", learned_plans, budgets, refine=True)
    block_plans = fit("learned per block", learned_block_plans, block_budgets, step_plans=plans)
    policies = {"learned": {"plans": {str(budget): plan.to_json() for budget, plan in plans.items()},
                            "block_plans": {str(budget): {unit: plan.to_json() for unit, plan in units.items()}
                                            for budget, units in block_plans.items()}},
                "teacache": {"coefficients": fit("teacache", teacache_coefficients)},
                "magcache": {"mag_ratios": fit("magcache", magcache_ratios)},
                **fit_axes(pipe, prompts, seconds)}
    data = (f"{len(prompts)} prompts x {CALIBRATION_GENERATIONS} generations ({CALIBRATION_GENERATIONS} batched calls "
            f"of all prompts, one generator seeded {CALIBRATION_SEED}), {STEPS} steps, uncached; learned plans "
            f"(budgets {', '.join(map(str, budgets))}) refined on those generations' cached images, per-block plans "
            f"(budgets {', '.join(map(str, block_budgets))}) started from the step plans")
    return dict(command=command, data=data, seconds=seconds, policies=policies)


def fit_axes(pipe, prompts: list[str], seconds: dict) -> dict:
    """LeMiCa's schedules (budgets LEMICA_BUDGETS) and SenCache's sensitivities of this pipeline, from uncached
    generations seeded CALIBRATION_SEED (as experiments/lemica/calibrate_lemica.py fits the digits model's): policy
    name -> its calibration.json numbers."""
    found = {}
    for name, fit in (("lemica", lambda generator: {"schedules": {str(b): s for b, s in lemica_schedules(
                          pipe, [prompts] * CALIBRATION_GENERATIONS, LEMICA_BUDGETS, generator=generator, **ARGUMENTS).items()}}),
                      ("sencache", lambda generator: {"sensitivities": sencache_sensitivities(
                          pipe, [prompts], generator=generator, **ARGUMENTS)})):
        start = time.perf_counter()
        found[name] = fit(torch.Generator().manual_seed(CALIBRATION_SEED))
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"calibrated {name} in {seconds[name]} s", flush=True)
    found["lemica"]["data"] = (f"{len(prompts)} prompts x {CALIBRATION_GENERATIONS} uncached generations (batched calls of all "
                               f"prompts, one generator seeded {CALIBRATION_SEED}), {STEPS} steps")
    found["sencache"]["data"] = f"{len(prompts)} prompts, one uncached batched call seeded {CALIBRATION_SEED}, {STEPS} steps"
    return found


def calibrate(pipe, model: Model, prompts: list[str], quick: bool, out: Path, reuse: bool = False) -> dict:
    """The model's calibration record ({"command", "data", ..., "policies"}), in use on ``pipe``'s
    transformer: the one beside the model (which load_pipeline applied), or one fitted now and written to
    ``out``/calibration.json (``reuse``: the one an earlier run wrote there)."""
    if not model.fits_calibration:
        return json.loads((model.path / CALIBRATION_FILE).read_text())
    if reuse:
        record = json.loads((out / CALIBRATION_FILE).read_text())
        if not {"lemica", "sencache"} <= set(record["policies"]):  # fitted before these policies existed: add them
            record["policies"] |= fit_axes(pipe, prompts, record.setdefault("seconds", {}))
            (out / CALIBRATION_FILE).write_text(json.dumps(record, indent=1) + "\n")
        use_calibration_file(pipe.transformer, out)
        return record
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    record = fit_calibration(pipe, prompts, model.settings(STEP_LEARNED, quick), model.settings(BLOCK_LEARNED, quick),
                             command)
    out.mkdir(parents=True, exist_ok=True)
    (out / CALIBRATION_FILE).write_text(json.dumps(record, indent=1) + "\n")
    use_calibration_file(pipe.transformer, out)
    return record


# -- analysis --------------------------------------------------------------------------------------

def curves(results: list[dict], kind: str, x: str, by: str | None = None, unit: str | None = None
           ) -> dict[str, tuple[list, list]]:
    """Per method of ``kind`` (and ``unit``, if given), its rows as (x, PSNR) points, sorted by x (or by ``by``)."""
    found = {}
    for curve in dict.fromkeys(r["curve"] for r in results if r["kind"] == kind and unit in (None, r["unit"])):
        runs = [r for r in results if r["curve"] == curve and math.isfinite(r["psnr"])]
        runs.sort(key=lambda r: r[by or x])
        found[curve] = ([r[x] for r in runs], [r["psnr"] for r in runs])
    return found


def best_at(found: dict, x: float) -> tuple[float | None, str | None]:
    """The highest interpolated PSNR at ``x`` among the curves, and whose."""
    values = [(value, name) for name, curve in found.items() if (value := psnr_at(curve, x)) is not None]
    return max(values) if values else (None, None)


def compare(ours: dict, theirs: dict, x: float) -> dict:
    """The best cachelab curve and the best reference curve at ``x``, and the margin between them."""
    (value, method), (reference, reference_method) = best_at(ours, x), best_at(theirs, x)
    margin = None if value is None or reference is None else value - reference
    return dict(cachelab=value, cachelab_method=method, reference=reference, reference_method=reference_method,
                margin=margin)


def margin_verdict(comparison: dict) -> str:
    return "PASS" if comparison["margin"] is not None and comparison["margin"] >= MARGIN else "MISS"


def fastest_target(results: list[dict], target: str, quality: float) -> dict:
    """(a), (f): the fastest deployable cachelab row at >= ``quality`` dB."""
    good = [r for r in results if r["kind"] == "cachelab" and r["psnr"] >= quality]
    fastest = max(good, key=lambda r: r["speedup"], default=None)
    return dict(target=target, where=f">= {FAST:g}x at >= {quality:g} dB",
                verdict="PASS" if fastest and fastest["speedup"] >= FAST else "MISS",
                fastest=fastest and {k: fastest[k] for k in ("curve", "setting", "speedup", "psnr", "computed_steps",
                                                             "block_work_steps")})


def block_target(results: list[dict], budget: int) -> dict:
    """(e): per-block learned at the block work that step-level learned of ``budget`` measured, >= +1 dB."""
    step = next((r for r in results if r["curve"] == STEP_LEARNED and r["setting"] == f"budget {budget}"), None)
    blocks = curves(results, "cachelab", "block_work_steps", unit="block").get(BLOCK_LEARNED)
    work = None if step is None else step["block_work_steps"]
    value = None if work is None or blocks is None else psnr_at(blocks, work)
    margin = None if value is None else value - step["psnr"]
    return dict(target="e", where=f"the block work of learned budget {budget}", block_work_steps=work,
                step_level=None if step is None else step["psnr"], per_block=value, margin=margin,
                verdict="PASS" if margin is not None and margin >= BLOCK_MARGIN else "MISS")


#: each stack's parts, as curves of their own (for (g): the parts at the stack's block work)
STACK_PARTS = {
    "cachelab first_block + pab 3": ("cachelab first_block", "cachelab pab"),
    "cachelab first_block + fora 2": ("cachelab first_block", "cachelab fora"),
    "cachelab learned + fora 2": (STEP_LEARNED, "cachelab fora"),
    "cachelab learned + pab 2": (STEP_LEARNED, "cachelab pab"),
    "cachelab fixed_interval + dbprune 0.1": ("cachelab fixed_interval", "cachelab dbprune F1B0 W0"),
    "cachelab learned + dbprune 0.1": (STEP_LEARNED, "cachelab dbprune F1B0 W0"),
    "cachelab learned + dbprune 0.05": (STEP_LEARNED, "cachelab dbprune F1B0 W0"),
    "cachelab fixed_interval + toca": ("cachelab fixed_interval", "cachelab toca"),
    "cachelab learned + toca": (STEP_LEARNED, "cachelab toca"),
    "cachelab learned + clusca": (STEP_LEARNED, "cachelab clusca"),
}
SINGLE, STACKS, TOKENS = ("step", "block", "module", "token"), ("stack", "token stack"), ("token", "token stack")


def work_curves(results: list[dict], units: tuple[str, ...]) -> dict[str, tuple[list, list]]:
    """The deployable cachelab curves of these units as (block work in steps, PSNR), by block work."""
    found = {}
    for unit in units:
        found |= curves(results, "cachelab", "block_work_steps", unit=unit)
    return found


def against_work(results: list[dict], rows: list[dict], others: dict, target: str, where: str) -> dict:
    """Each of ``rows`` against the best of the curves ``others`` at its own block work (and its parts, for a
    stack): the margins, and PASS if the best one is >= STACK_MARGIN."""
    compared = []
    for r in rows:
        best, best_name = best_at(others, r["block_work_steps"])
        parts = {name: psnr_at(curve, r["block_work_steps"]) for name in STACK_PARTS.get(r["curve"], ())
                 if (curve := work_curves(results, SINGLE).get(name))}
        compared.append(dict(curve=r["curve"], setting=r["setting"], block_work_steps=r["block_work_steps"], psnr=r["psnr"],
                             best_single=best, best_single_method=best_name, parts=parts,
                             margin=None if best is None else r["psnr"] - best))
    scored = [c for c in compared if c["margin"] is not None]
    top = max(scored, key=lambda c: c["margin"], default=None)
    return dict(target=target, where=where, rows=compared, best=top,
                verdict="PASS" if top and top["margin"] >= STACK_MARGIN else "MISS" if rows else "no rows")


def lemica_target(results: list[dict]) -> dict:
    """(h): LeMiCa's minimax path against the learned plan and the oracle at equal budgets (computed steps)."""
    def psnr(curve, budget):
        row = next((r for r in results if r["curve"] == curve and r["setting"] == f"budget {budget}"), None)
        return None if row is None else row["psnr"]

    budgets = [dict(budget=b, lemica=psnr("cachelab lemica", b), lemica_taylor=psnr("cachelab lemica + taylor order 1", b),
                    learned=psnr(STEP_LEARNED, b), oracle=psnr(ORACLE, b), oracle_reuse=psnr("cachelab oracle reuse", b))
               for b in LEMICA_BUDGETS]
    return dict(target="h", where="budgets " + ", ".join(map(str, LEMICA_BUDGETS)), verdict="shown", budgets=budgets)


def inverse_at(curve: tuple[list, list], psnr: float) -> float | None:
    """The x at which a curve (x, PSNR) reaches ``psnr`` (linear between its rows, along ascending PSNR)."""
    points = sorted(zip(curve[1], curve[0]))
    return psnr_at(([p for p, _ in points], [x for _, x in points]), psnr)


EASYCACHE_PEERS = ("cachelab first_block", "cachelab teacache")


def easycache_target(results: list[dict]) -> dict:
    """(j): EasyCache against first_block and teacache at its computed steps (their PSNR there) and at its PSNR
    (their computed steps there)."""
    steps = curves(results, "cachelab", "computed_steps", unit="step")
    compared = []
    for r in (r for r in results if r["curve"] == "cachelab easycache"):
        compared.append(dict(setting=r["setting"], computed_steps=r["computed_steps"], psnr=r["psnr"], speedup=r["speedup"],
                             at_steps={name: psnr_at(steps[name], r["computed_steps"]) for name in EASYCACHE_PEERS if name in steps},
                             at_psnr={name: inverse_at(steps[name], r["psnr"]) for name in EASYCACHE_PEERS if name in steps}))
    return dict(target="j", where="easycache's computed steps and PSNR", verdict="shown", rows=compared)


def targets(results: list[dict], oracle_budgets: tuple[int, ...]) -> list[dict]:
    """The verdicts. Computed steps ((c), (d)) measure the work of step-level rows only: their curves leave the
    block and module rows out, which (e) compares at equal block work."""
    speed = {kind: curves(results, kind, "speedup") for kind in ("cachelab", "reference")}
    steps = {kind: curves(results, kind, "computed_steps", unit="step") for kind in ("cachelab", "reference", "bound")}
    forecaster = {name: curve for name, curve in steps["reference"].items() if name.startswith(CACHE_DIT_FORECAST)}
    found = [fastest_target(results, "a", GOOD)]
    at_speed = compare(speed["cachelab"], speed["reference"], AT_SPEEDUP)
    found.append(dict(target="b", where=f"{AT_SPEEDUP:g}x wall speedup", verdict=margin_verdict(at_speed), **at_speed))
    for budget in BUDGETS:
        at_budget = compare(steps["cachelab"], forecaster, budget)
        found.append(dict(target="c", where=f"{budget} computed steps", verdict=margin_verdict(at_budget), **at_budget))
    for budget in oracle_budgets:
        oracle = {name: psnr_at(curve, budget) for name, curve in steps["bound"].items()}
        found.append(dict(target="d", where=f"{budget} computed steps", verdict="shown", oracle=oracle,
                          **compare(steps["cachelab"], forecaster, budget)))
    found += [block_target(results, budget) for budget in BLOCK_BUDGETS]
    found.append(fastest_target(results, "f", BETTER))
    stacks = [r for r in results if r["kind"] == "cachelab" and r["unit"] in STACKS]
    found.append(against_work(results, stacks, work_curves(results, SINGLE), "g",
                              "each stack against the best single policy at its block work"))
    found.append(lemica_target(results))
    tokens = [r for r in results if r["kind"] == "cachelab" and r["unit"] in TOKENS]
    found.append(against_work(results, tokens, work_curves(results, ("step", "block", "module", "stack")), "i",
                              "each token row against the best non-token row at its block work"))
    found.append(easycache_target(results))
    return found


def db(value) -> str:
    return "-" if value is None else f"{value:.1f} dB"


def side(value, method) -> str:
    return "no curve spans it" if value is None else f"{value:.1f} dB ({method})"


def describe(target: dict) -> str:
    """One line per target, with its numbers (several for (g)-(j))."""
    name, where = target["target"], target["where"]
    if name in ("g", "i"):
        goal = "a stack" if name == "g" else "a token row"
        best = target["best"]
        head = (f"({name}) {target['verdict']} {goal} >= +{STACK_MARGIN:g} dB over the best "
                f"{'single policy' if name == 'g' else 'non-token row'} at equal block work" + (
                    "" if best is None else f": best margin {best['margin']:+.1f} dB, {best['curve']} {best['setting']}"))
        lines = [head]
        for c in target["rows"]:
            parts = "".join(f"; {part.removeprefix('cachelab ')} {db(v)}" for part, v in c["parts"].items())
            lines.append(f"  - {c['curve']} {c['setting']}: block work {c['block_work_steps']:.1f}, {c['psnr']:.1f} dB; best other "
                         f"{side(c['best_single'], c['best_single_method'])}"
                         + ("" if c["margin"] is None else f", margin {c['margin']:+.1f} dB") + parts)
        return "\n".join(lines)
    if name == "h":
        lines = ["(h) LeMiCa's minimax path (reuse; and with taylor order 1) against the learned plan and the oracles (bounds: "
                 "fitted history 2, and reuse) at equal budgets"]
        lines += [f"  - budget {b['budget']}: lemica {db(b['lemica'])}, lemica + taylor order 1 {db(b.get('lemica_taylor'))}, "
                  f"learned {db(b['learned'])}, oracle fitted history 2 {db(b['oracle'])}, oracle reuse {db(b.get('oracle_reuse'))}"
                  for b in target["budgets"]]
        return "\n".join(lines)
    if name == "j":
        lines = ["(j) EasyCache against first_block and teacache: their PSNR at its computed steps, their computed steps at its PSNR"]
        for c in target["rows"]:
            at_steps = ", ".join(f"{n.removeprefix('cachelab ')} {db(v)}" for n, v in c["at_steps"].items())
            at_psnr = ", ".join(f"{n.removeprefix('cachelab ')} {'-' if v is None else f'{v:.1f}'}" for n, v in c["at_psnr"].items())
            lines.append(f"  - easycache {c['setting']}: {c['computed_steps']:.1f} steps, {c['psnr']:.1f} dB, {c['speedup']:.2f}x; "
                         f"at {c['computed_steps']:.1f} steps: {at_steps}; steps for {c['psnr']:.1f} dB: {at_psnr}")
        return "\n".join(lines)
    if name in ("a", "f"):
        f = target["fastest"]
        fastest = "no deployable cachelab row reaches it" if f is None else (
            f"the fastest deployable cachelab row there is {f['curve']} {f['setting']}: {f['speedup']:.2f}x, "
            f"{f['psnr']:.1f} dB, {f['computed_steps']:.1f} computed steps, block work {f['block_work_steps']:.1f}/{STEPS}")
        return f"({name}) {target['verdict']} {where}: {fastest}"
    if name == "e":
        if target["step_level"] is None:
            return f"(e) {target['verdict']} at {where}: no such row"
        margin = "" if target["margin"] is None else f", margin {target['margin']:+.1f} dB (target +{BLOCK_MARGIN:g})"
        return (f"(e) {target['verdict']} at {where} ({target['block_work_steps']:.2f}/{STEPS}): learned per block "
                f"{db(target['per_block'])} vs learned {db(target['step_level'])}{margin}")
    ours = f"cachelab {side(target['cachelab'], target['cachelab_method'])}"
    theirs = side(target["reference"], target["reference_method"])
    if name == "d":
        oracle = ", ".join(f"{curve.removeprefix('cachelab ')} {db(v)}" for curve, v in target["oracle"].items())
        return f"(d) at {where}: {oracle}; best deployable {ours}; cache-dit DBCache + TaylorSeer {theirs}"
    margin = "" if target["margin"] is None else f", margin {target['margin']:+.1f} dB (target +{MARGIN:g})"
    versus = "best reference" if name == "b" else "cache-dit DBCache + TaylorSeer"
    return f"({name}) {target['verdict']} at {where}: {ours} vs {versus} {theirs}{margin}"


#: cachelab methods that make the same decisions as a reference at the same setting (tested in tests/);
#: a reference curve's name without its parenthesised note
TWINS = {
    "cachelab first_block": "diffusers FirstBlockCache",
    "cachelab magcache": "diffusers MagCache",
    "cachelab dbcache F1B0 W0": "cache-dit DBCache F1B0 W0",
    "cachelab first_block taylor_order 1": "cache-dit DBCache F1B0 W0 + TaylorSeer order 1",
    "cachelab first_block taylor_order 2": "cache-dit DBCache F1B0 W0 + TaylorSeer order 2",
    "cachelab taylorseer module W3": "diffusers TaylorSeer",
    "cachelab pab": "diffusers PAB",
    "cachelab faster_cache": "diffusers FasterCache",
    "cachelab dbprune F1B0 W0": "cache-dit DBPrune F1B0 W0",
    **{f"cachelab dbcache F1B0 W0 + {name}": f"cache-dit DBCache F1B0 W0 + {name}" for name in CALIBRATED},
    f"cachelab step_mask F1B0 {STEP_MASK_THRESHOLD}": f"cache-dit DBCache F1B0 {STEP_MASK_THRESHOLD} steps_mask",
}


def parity(results: list[dict]) -> list[str]:
    """cachelab against its reference twin at each shared setting: computed steps, PSNR, speed ratio."""
    by_setting = {(r["curve"].split(" (")[0], r["setting"]): r for r in results}
    lines = []
    for (curve, setting), ours in by_setting.items():
        theirs = by_setting.get((TWINS.get(curve), setting))
        if theirs:
            lines.append(f"{curve} {setting} vs {theirs['curve']}: computed {ours['computed_steps']:.2f} / "
                         f"{theirs['computed_steps']:.2f}, block work {ours['block_work_steps']:.2f} / "
                         f"{theirs['block_work_steps']:.2f}, PSNR {ours['psnr']:.2f} / {theirs['psnr']:.2f} dB, "
                         f"speedup {ours['speedup']:.2f}x / {theirs['speedup']:.2f}x")
    return lines


# -- output ----------------------------------------------------------------------------------------

def table(results: list[dict]) -> str:
    lines = ["| method | setting | computed /28 | block work /28 | speedup | PSNR dB | SSIM | kept peak MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    order = {library: i for i, library in enumerate(LIBRARIES)}
    for r in sorted(results, key=lambda r: (order[r["library"]], r["curve"])):  # stable: settings keep their order
        name = r["curve"] + (" (bound, not deployable)" if r["kind"] == "bound" else "")
        lines.append(f"| {name} | {r['setting']} | {r['computed_steps']:.1f} | {r['block_work_steps']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['psnr']:.1f} | {r['ssim']:.4f} | {mib(r.get('kept_peak_mib'))} |")
    return "\n".join(lines)


def mib(value) -> str:
    return "" if value is None else f"{value:.2f}"


def plot(results: list[dict], title: str, path: Path) -> None:
    """PSNR against wall speedup and against block work, a line per method joining its settings."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"cachelab": "o-", "reference": "s--", "bound": "^:"}
    colors = plt.get_cmap("tab20")
    lines = [(name, kind) for kind in style for name in curves(results, kind, "speedup")]
    columns = 1 + len(lines) // 45  # the legend beside the panels, in as many columns as fit the figure's height
    figure, panels = plt.subplots(1, 2, figsize=(16 + 4.5 * (columns - 1), 7), sharey=True)
    for axes, x in zip(panels, ("speedup", "block_work_steps")):
        for index, (name, kind) in enumerate(lines):
            xs, psnrs = curves(results, kind, x, by="block_work_steps")[name]
            color = colors((2 * index + 2 * index // 20) % 20)  # the dark shades of tab20 first, then the light
            axes.plot(xs, psnrs, style[kind], color=color, ms=4, lw=1.2, label=name + (" (bound)" if kind == "bound" else ""))
        axes.axhline(GOOD, color="0.6", lw=0.8)
        axes.axhline(BETTER, color="0.8", lw=0.8)
        axes.grid(alpha=0.3)
    for speed in (AT_SPEEDUP, FAST):
        panels[0].axvline(speed, color="0.6", lw=0.8)
    panels[0].set_xlabel("wall speedup (median uncached / median cached pipeline call)")
    panels[1].set_xlabel(f"block work computed, in uncached steps of {STEPS} (each block and module weighted by its time)")
    panels[1].invert_xaxis()  # less work to the right, as higher speedups are
    panels[0].set_ylabel("PSNR vs uncached (dB)")
    figure.suptitle(title)
    panels[1].legend(fontsize=6 if columns > 1 else 7, loc="center left", bbox_to_anchor=(1.01, 0.5), ncol=columns)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def report(results: list[dict], found: list[dict], setup: dict) -> str:
    """frontier.md: the setup, the table, the target verdicts and the parity of cachelab with its twins."""
    calibration = setup["calibration"]
    took = "".join(f", {name} {seconds:g} s" for name, seconds in calibration.get("seconds", {}).items())
    data = "; ".join([calibration["data"], *(f"{name}: {data}" for name, data in calibration["by policy"].items())])
    header = (f"{setup['subject']}, one call per prompt, {setup['threads']} CPU thread; speedup = median of "
              f"{setup['rounds']} paired alternating uncached/cached passes over {setup['timing_prompts']} prompt(s). "
              f"PSNR of all images vs uncached. Block work: the computed share of the transformer blocks' work, "
              f"each block and module weighted by its median uncached time, from forward hooks (cachelab rows: "
              f"from cachelab's trace, checked against the hooks), in uncached steps of {STEPS}; computed: "
              f"transformer calls that skipped no block work.\n\n"
              f"Calibration (`{calibration['command']}`{took}): {data}. Per-block plans: "
              f"`cachelab/calibrate/learned_blocks.py` at {setup['learned_blocks']}.")
    verdicts = "\n".join(f"- {describe(t)}" for t in found)
    twins = "\n".join(f"- {line}" for line in parity(results)) or "- (no twin rows in this run)"
    return (f"{header}\n\n{table(results)}\n\n## Targets\n\n{verdicts}\n\n"
            f"## Parity (cachelab / its reference twin, same setting)\n\n{twins}\n")


def write(results: list[dict], found: list[dict], setup: dict, out: Path, figure: bool = True) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dict(setup=setup, rows=results, targets=found), indent=1) + "\n")
    text = report(results, found, setup)
    (out / "frontier.md").write_text(text)
    if figure:
        plot(results, setup["subject"], out / "frontier.png")
    return text


def measure(model: Model, prompts: list[str], quick: bool, settings: dict, out: Path, reuse: bool, only: str | None = None,
            save: Callable | None = None) -> tuple[list[dict], dict, dict, list[str]]:
    """Every row's results, the model's calibration record, each unit's share of the block work and the rows that
    failed (a row that raises is printed and left out, the others run). ``save(results, calibration, shares, failed)``
    runs after every row (a run stopped early keeps the rows it measured)."""
    with cpu_threads(THREADS):
        pipe = plain_pipeline(model)
        calibration = calibrate(pipe, model, prompts, quick, out, reuse)
        meter = BlockWork(pipe.transformer)
        calls = make_calls(prompts)
        with meter.timing():
            reference = run_pass(pipe, meter, calls).images
        results, failed = [], []
        for row in rows(model, calibration["policies"], quick, pipe, only):
            try:
                results.append(r := evaluate(pipe, meter, row, calls, reference, settings))
            except Exception as error:
                traceback.print_exc()
                failed.append(f"{row.curve} {row.setting}: {type(error).__name__}: {str(error).splitlines()[0][:160]}")
                print(f"FAILED {failed[-1]}", flush=True)
                continue
            print(f"{row.curve:48s} {row.setting:15s} {r['computed_steps']:5.1f} steps {r['block_work_steps']:5.1f} "
                  f"work {r['speedup']:5.2f}x {r['psnr']:5.1f} dB (timing spread {r['timing_spread']:.2f})", flush=True)
            if save:
                save(results, calibration, {key: round(share, 5) for key, share in meter.shares().items()}, failed)
    return results, calibration, {key: round(share, 5) for key, share in meter.shares().items()}, failed


def commit_of(module) -> str:
    """The commit that made ``module``'s file what it is, found by its content (the file may be a copy)."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    path = Path(module.__file__)
    blob = git("hash-object", str(path))
    found = git("log", "-1", "--format=%h %cs", f"--find-object={blob}", "--",
                str(path.relative_to(Path(cachelab.__file__).parents[1])))
    return found or f"uncommitted (blob {blob[:10]})"


def summary(calibration: dict) -> dict:
    """A calibration record without its numbers: how they were measured (per policy where it says)."""
    by_policy = {name: numbers["data"] for name, numbers in calibration["policies"].items() if "data" in numbers}
    return {**{key: value for key, value in calibration.items() if key != "policies"}, "by policy": by_policy}


def fill_kept_peak(model: Model, out: Path) -> None:
    """The kept peak of the cachelab rows of ``out``/results.json measured before the column existed: each such row's
    cache on for the first call only (the most bytes kept depend on the shapes kept, the same in every call of a row),
    ``kept_peak_mib`` and ``kept_peak_from`` added; the report and figure rewritten."""
    record = json.loads((out / "results.json").read_text())
    with cpu_threads(THREADS):
        pipe = plain_pipeline(model)
        if model.fits_calibration:
            use_calibration_file(pipe.transformer, out)
        calibration = json.loads(((out if model.fits_calibration else model.path) / CALIBRATION_FILE).read_text())
        known = {(row.curve, row.setting): row for row in rows(model, calibration["policies"], False, pipe)}
        call = make_calls(model.prompts())[0]
        for r in record["rows"]:
            row = known.get((r["curve"], r["setting"]))
            if r["library"] != "cachelab" or r.get("kept_peak_mib") is not None or row is None:
                continue
            with row.enable(pipe) as cache:
                cache.prepare(lambda: pipe(**call.kwargs()))
                pipe(**call.kwargs())
                r["kept_peak_mib"], r["kept_peak_from"] = cache.kept_peak().get("total", 0) / 2**20, "the first call"
            print(f"{r['curve']:48s} {r['setting']:15s} kept peak {r['kept_peak_mib']:.2f} MiB", flush=True)
    record = json.loads((out / "results.json").read_text()) | {"rows": merge_kept(record["rows"], out)}
    print(write(record["rows"], targets(record["rows"], model.settings(ORACLE, False)), record["setup"], out))


def merge_kept(filled: list[dict], out: Path) -> list[dict]:
    """The rows of ``out``/results.json as they are now (another run may have merged rows meanwhile), with the kept
    peaks of ``filled`` where they have none."""
    peaks = {(r["curve"], r["setting"]): r for r in filled if r.get("kept_peak_from")}
    now = json.loads((out / "results.json").read_text())["rows"]
    for r in now:
        if r.get("kept_peak_mib") is None and (r["curve"], r["setting"]) in peaks:
            r["kept_peak_mib"] = peaks[r["curve"], r["setting"]]["kept_peak_mib"]
            r["kept_peak_from"] = "the first call"
    return now


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="digits", help="digits (default) or shapes "
                        "(experiments/train_shapes, calibrated in the run)")
    parser.add_argument("--quick", action="store_true", help="a few rows, one timed prompt (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: experiments/frontier, "
                        "experiments/frontier/shapes for shapes; below experiments/frontier/quick with --quick)")
    parser.add_argument("--reuse-calibration", action="store_true", help="shapes: the calibration.json an earlier "
                        "run fitted and wrote to the output folder, instead of fitting again")
    parser.add_argument("--curves", default=None, help="only the curves matching this regular expression")
    parser.add_argument("--merge", action="store_true", help="fold this run's rows into the results.json in the output "
                        "folder (a row of the same curve and setting is replaced), and report and plot them all")
    parser.add_argument("--fill-kept-peak", action="store_true", help="only add the kept peak to the cachelab rows of "
                        "the results.json in the output folder that have none (one call each), and rewrite the report")
    args = parser.parse_args()
    model = MODELS[args.model]
    out = args.out or HERE / ("quick" if args.quick else "") / model.folder
    if args.fill_kept_peak:
        return fill_kept_peak(model, out)
    settings = QUICK if args.quick else FULL
    prompts = model.prompts()
    started = time.perf_counter()
    learned_blocks = commit_of(cachelab.calibrate.learned_blocks)
    earlier = json.loads((out / "results.json").read_text()) if args.merge and (out / "results.json").exists() else None

    def save(measured, calibration, shares, failed, figure=False, done=False):
        results, runs = list(measured), []
        if earlier:  # the earlier run's rows and setup, this run's beside them
            new = {(r["curve"], r["setting"]) for r in results}
            kept = {(r["curve"], r["setting"]): r for r in json.loads((out / "results.json").read_text())["rows"]}
            results = [kept.get((r["curve"], r["setting"]), r) for r in earlier["rows"]  # kept peaks filled meanwhile
                       if (r["curve"], r["setting"]) not in new] + results
            runs = earlier["setup"].get("runs") or [{k: v for k, v in earlier["setup"].items() if k != "prompts"}]
        setup = dict(model=model.description,
                     subject=f"{model.title}, {len(prompts)} {model.noun} x seeds {', '.join(map(str, SEEDS))}, {STEPS} steps",
                     prompts=prompts, seeds=list(SEEDS), steps=STEPS,
                     calls="one per prompt; prompt i of seed s seeded s + i", threads=THREADS, **settings, quick=args.quick,
                     calibration=summary(calibration), learned_blocks=learned_blocks, block_work_shares=shares,
                     seconds=round(time.perf_counter() - started), curves=args.curves, failed=failed, complete=done,
                     versions={m.__name__: m.__version__ for m in (torch, diffusers, cache_dit, cachelab)})
        if runs:  # merged: every run's setup (the block-work shares of each run's rows are that run's)
            setup["runs"] = [*runs, {k: v for k, v in setup.items() if k != "prompts"}]
        return write(results, targets(results, model.settings(ORACLE, args.quick)), setup, out, figure), setup

    measured, calibration, shares, failed = measure(model, prompts, args.quick, settings, out, args.reuse_calibration,
                                                    args.curves, save)
    text, setup = save(measured, calibration, shares, failed, figure=True, done=True)
    print("\n" + text)
    print(f"wrote results.json, frontier.md, frontier.png to {out} ({setup['seconds']} s)")


if __name__ == "__main__":
    main()
