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
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")  # read when cache_dit is imported

import cache_dit  # noqa: E402
import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from cache_dit import DBCacheConfig, TaylorSeerCalibratorConfig  # noqa: E402
from diffusers import FirstBlockCacheConfig, FluxPipeline, MagCacheConfig, TaylorSeerCacheConfig  # noqa: E402

import cachelab  # noqa: E402
from cachelab import metrics, zoo  # noqa: E402
from cachelab.calibrate import learned_plans, magcache_ratios, teacache_coefficients  # noqa: E402
from cachelab.calibration import CALIBRATION_FILE, use_calibration_file  # noqa: E402
from cachelab.policies import (  # noqa: E402
    DualBlockCache,
    FirstBlockCache,
    FixedInterval,
    Learned,
    MagCache,
    Oracle,
    TaylorSeer,
    TeaCache,
)
from cachelab.runner import Call, cpu_threads, first_sample  # noqa: E402

HERE = Path(__file__).parent
STEPS = 28
ARGUMENTS = dict(num_inference_steps=STEPS, output_type="np", **zoo.CALL_DEFAULTS)  # both models' sizes
SEEDS = (0, 1)
CALIBRATION_SEED = 1000  # models calibrated in the run are calibrated on this seed, disjoint from SEEDS
CALIBRATION_GENERATIONS = 2  # of every prompt, in batched calls, as experiments/train_digits/calibrate_digits.py does
THREADS = 1  # another process may share the machine; one thread each avoids oversubscription
FULL = dict(timing_prompts=2, rounds=5)  # 5: a burst of load over two adjacent passes leaves the median
QUICK = dict(timing_prompts=1, rounds=3)
LIBRARIES = ("cachelab", "diffusers", "cache-dit")

# The targets
FAST, GOOD = 5.0, 35.0  # (a): >= 5x wall speedup at >= 35 dB
AT_SPEEDUP = 3.0  # (b): at 3x, cachelab >= 2 dB above the best reference
BUDGETS = (6, 8)  # (c): at these computed steps, cachelab >= 2 dB above cache-dit DBCache + TaylorSeer
MARGIN = 2.0
ORACLE = "cachelab oracle fitted history 2"  # (d): the oracle beside the policies at each of its budgets
CACHE_DIT_FORECAST = "cache-dit DBCache F1B0 W0 + TaylorSeer"


# -- caches: how each library enables and disables one --------------------------------------------

class Enabled:
    """A cache while it is on: untimed preparation before each call, and the library's own count of
    the steps the last call computed (None where it keeps none)."""

    def prepare(self, call: Call) -> None:
        pass

    def own_count(self) -> int | None:
        return None


class CachelabEnabled(Enabled):
    def __init__(self, pipe, executor):
        self.pipe, self.executor = pipe, executor

    def prepare(self, call):
        if self.executor.policy.rehearses:  # the oracle plans from an uncached rehearsal of this very call
            self.executor.rehearse(lambda: self.pipe(**call.kwargs()))

    def own_count(self):
        return sum(record.computed for record in self.executor.trace)


class CacheDitEnabled(Enabled):
    def __init__(self, pipe):
        self.pipe = pipe

    def own_count(self):
        return STEPS - len(cache_dit.summary(self.pipe, logging=False)[-1].cached_steps)


@contextlib.contextmanager
def with_cachelab(policy, pipe):
    executor = cachelab.attach(pipe, policy)
    try:
        yield CachelabEnabled(pipe, executor)
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


# -- the rows --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """A cache with its knob still free: ``make(value)`` builds the cachelab policy or the library's config."""

    library: str
    name: str
    knob: str
    make: Callable
    bound: bool = False  # knows the uncached result (the oracle): not deployable

    @property
    def curve(self) -> str:
        return f"{self.library} {self.name}"


@dataclass(frozen=True)
class Row:
    library: str
    method: str
    setting: str
    enable: Callable  # pipe -> context manager yielding an Enabled
    bound: bool = False

    @property
    def curve(self) -> str:
        return f"{self.library} {self.method}"

    @property
    def kind(self) -> str:
        return "bound" if self.bound else "cachelab" if self.library == "cachelab" else "reference"


ENABLE = {"cachelab": with_cachelab, "diffusers": with_diffusers, "cache-dit": with_cache_dit}


def dbcache(threshold, order=None):
    """cache-dit's DBCache F1B0 W0 (and its TaylorSeer calibrator of ``order``)."""
    config = DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0,
                           residual_diff_threshold=threshold)
    return config, order and TaylorSeerCalibratorConfig(taylorseer_order=order)


def methods(model: str, policies: dict) -> list[Method]:
    """Every method the harness knows. ``policies`` is the model's calibration (numbers by policy name):
    cachelab's calibrated policies find it on the transformer, diffusers' MagCache is handed its ratios."""
    orders = (1, 2)
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
        Method("diffusers", "FirstBlockCache", "threshold", FirstBlockCacheConfig),
        Method("diffusers", f"MagCache ({model} ratios)", "threshold", lambda t: MagCacheConfig(
            threshold=t, mag_ratios=policies["magcache"]["mag_ratios"], num_inference_steps=STEPS)),
        Method("diffusers", "TaylorSeer", "interval", lambda i: TaylorSeerCacheConfig(cache_interval=i)),
        Method("cache-dit", "DBCache F1B0 W0", "threshold", dbcache),
        *(Method("cache-dit", f"DBCache F1B0 W0 + TaylorSeer order {order}", "threshold",
                 functools.partial(dbcache, order=order)) for order in orders),
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


def rows(model: Model, policies: dict, quick: bool) -> list[Row]:
    """A row per setting of the model's grid (its quick ones with ``quick``). cache-dit's rows come last:
    cache-dit leaves its patch of the transformer's forward in place after disable_cache."""
    known = {method.curve: method for method in methods(model.name, policies)}
    found = [Row(m.library, m.name, f"{m.knob} {value}", functools.partial(ENABLE[m.library], m.make(value)), m.bound)
             for curve in model.grid for m in [known[curve]] for value in model.settings(curve, quick)]
    return sorted(found, key=lambda row: row.library == "cache-dit")


TRAIN_SHAPES = HERE.parent / "train_shapes"


def shapes_prompts() -> list[str]:
    sys.path.insert(0, str(TRAIN_SHAPES))
    import train_shapes

    return train_shapes.prompts()


DIGITS = Model(
    name="digits", title="Digits model", noun="digits", path=zoo.path(), prompts=lambda: zoo.prompts_for(range(10)),
    grid={
        "cachelab first_block": (0.1, 0.2, 0.3, 0.5),
        "cachelab teacache": (0.1, 0.2, 0.4),
        "cachelab magcache": (0.06, 0.12, 0.24),
        "cachelab fixed_interval": (2, 3, 4),
        "cachelab dbcache F1B0 W0": (0.12, 0.24),
        "cachelab taylorseer order 1": (3, 4, 5, 6, 7),
        "cachelab taylorseer order 2": (3, 4, 5, 6, 7),
        "cachelab first_block taylor_order 1": (0.24, 0.4),
        "cachelab first_block taylor_order 2": (0.24, 0.4, 0.6),
        "cachelab learned": (3, 4, 5, 6, 7, 8, 10),
        ORACLE: (4, 6, 8, 10),
        "cachelab oracle reuse": (4, 6, 8, 10),
        "diffusers FirstBlockCache": (0.1, 0.2, 0.3, 0.5),
        "diffusers MagCache (digits ratios)": (0.06, 0.12, 0.24),
        "diffusers TaylorSeer": (2, 3, 5),
        "cache-dit DBCache F1B0 W0": (0.08, 0.12, 0.24),
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 1": (0.24, 0.4),
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": (0.24, 0.4, 0.6),
    },
    quick={"cachelab taylorseer order 2": 5, "cachelab first_block taylor_order 2": 0.4, "cachelab learned": 6,
           ORACLE: 6, "diffusers FirstBlockCache": 0.2, "diffusers TaylorSeer": 3,
           "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": 0.4},
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
        "cachelab teacache": (0.1, 0.2, 0.4),
        "cachelab magcache": (0.06, 0.12, 0.24),
        "cachelab fixed_interval": (2, 3, 4),
        "cachelab taylorseer order 1": (3, 4, 5, 6, 7),
        "cachelab taylorseer order 2": (3, 4, 5, 6, 7),
        "cachelab first_block taylor_order 2": SHAPES_THRESHOLDS,
        "cachelab learned": (3, 4, 5, 6, 8, 10),
        ORACLE: (4, 6, 8),
        "cachelab oracle reuse": (4, 6, 8),
        "diffusers FirstBlockCache": (0.1, 0.2, 0.3),
        "diffusers MagCache (shapes ratios)": (0.06, 0.12, 0.24),
        "diffusers TaylorSeer": (2, 3, 5),
        "cache-dit DBCache F1B0 W0": (0.2, 0.3, 0.5),
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 1": SHAPES_THRESHOLDS,
        "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": SHAPES_THRESHOLDS,
    },
    quick={"cachelab taylorseer order 2": 5, "cachelab first_block taylor_order 2": 0.3, "cachelab learned": 6,
           ORACLE: 6, "diffusers FirstBlockCache": 0.2, "diffusers TaylorSeer": 3,
           "cache-dit DBCache F1B0 W0 + TaylorSeer order 2": 0.3},
    fits_calibration=True, folder="shapes",
    description="train_shapes (zoo.load_pipeline(experiments/train_shapes/shapes), called as a plain FluxPipeline)",
)
MODELS = {model.name: model for model in (DIGITS, SHAPES)}


# -- the harness -----------------------------------------------------------------------------------

class StepCounter:
    """Counts the runs of one module inside a middle block, the attention's query projection: it runs
    only on the steps a cache computes (diffusers' TaylorSeer forecasts attention outputs, so for it
    this counts the steps whose attention ran)."""

    def __init__(self, transformer):
        blocks = transformer.single_transformer_blocks
        blocks[len(blocks) // 2].attn.to_q.register_forward_pre_hook(self._ran)
        self.count = 0

    def _ran(self, *_):
        self.count += 1


@dataclass
class Pass:
    images: np.ndarray
    seconds: list[float]
    computed: list[int]


def run_pass(pipe, counter: StepCounter, calls: list[Call], row: Row | None = None) -> Pass:
    """Run ``calls`` uncached (``row=None``) or with the row's cache on, timing each call alone."""
    images, seconds, computed = [], [], []
    with row.enable(pipe) if row else contextlib.nullcontext(Enabled()) as cache:
        for call in calls:
            cache.prepare(call)
            counter.count = 0
            start = time.perf_counter()
            output = pipe(**call.kwargs())
            seconds.append(time.perf_counter() - start)
            own = cache.own_count()
            if own is not None and own != counter.count:
                raise RuntimeError(f"{row.curve} {row.setting}: the library counts {own} computed steps, "
                                   f"the middle block ran {counter.count} times")
            computed.append(counter.count)
            images.append(first_sample(output))
    return Pass(np.stack(images), seconds, computed)


def paired_timing(pipe, counter, calls, row: Row, rounds: int, reference: np.ndarray) -> dict:
    """Alternating uncached and cached passes (uncached first in even rounds); also checks that the
    uncached output after the cache was disabled is the reference, bit for bit."""
    uncached, cached, computed, drift = [], [], [], 0.0
    for round_ in range(rounds):
        for cache in (None, row) if round_ % 2 == 0 else (row, None):
            passed = run_pass(pipe, counter, calls, cache)
            (cached if cache else uncached).append(sum(passed.seconds))
            if cache:
                computed.extend(passed.computed)
            else:
                drift = max(drift, float(np.abs(passed.images - reference).max()))
    if drift:
        print(f"  WARNING: uncached output changed after {row.curve} {row.setting}: max |diff| {drift:.3g}")
    return dict(speedup=metrics.speedup(uncached, cached), uncached_seconds=statistics.median(uncached),
                cached_seconds=statistics.median(cached), timed_computed_steps=metrics.mean(computed),
                speedup_of_fastest=min(uncached) / min(cached), uncached_drift=drift,
                timing_spread=max(max(t) / min(t) for t in (uncached, cached)))


def evaluate(pipe, counter, row: Row, calls, reference, settings) -> dict:
    timed = settings["timing_prompts"]
    cached = run_pass(pipe, counter, calls, row)
    return dict(
        library=row.library, method=row.method, curve=row.curve, setting=row.setting, kind=row.kind,
        computed_steps=metrics.mean(cached.computed), psnr=metrics.psnr(reference, cached.images),
        ssim=metrics.mean(metrics.ssim(reference, cached.images)),
        **paired_timing(pipe, counter, calls[:timed], row, settings["rounds"], reference[:timed]),
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

def fit_calibration(pipe, prompts: list[str], budgets: tuple[int, ...], command: str) -> dict:
    """The learned plans (refined), TeaCache coefficients and MagCache ratios of this pipeline, each fitted
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
    policies = {"learned": {"plans": {str(budget): plan.to_json() for budget, plan in plans.items()}},
                "teacache": {"coefficients": fit("teacache", teacache_coefficients)},
                "magcache": {"mag_ratios": fit("magcache", magcache_ratios)}}
    data = (f"{len(prompts)} prompts x {CALIBRATION_GENERATIONS} generations ({CALIBRATION_GENERATIONS} batched calls "
            f"of all prompts, one generator seeded {CALIBRATION_SEED}), {STEPS} steps, uncached; learned plans "
            f"(budgets {', '.join(map(str, budgets))}) refined on those generations' cached images")
    return dict(command=command, data=data, seconds=seconds, policies=policies)


def calibrate(pipe, model: Model, prompts: list[str], quick: bool, out: Path) -> dict:
    """The model's calibration record ({"command", "data", ..., "policies"}), in use on ``pipe``'s
    transformer: the one beside the model (which load_pipeline applied), or one fitted now and written to
    ``out``/calibration.json."""
    if not model.fits_calibration:
        return json.loads((model.path / CALIBRATION_FILE).read_text())
    command = " ".join(["python", os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    record = fit_calibration(pipe, prompts, model.settings("cachelab learned", quick), command)
    out.mkdir(parents=True, exist_ok=True)
    (out / CALIBRATION_FILE).write_text(json.dumps(record, indent=1) + "\n")
    use_calibration_file(pipe.transformer, out)
    return record


# -- analysis --------------------------------------------------------------------------------------

def curves(results: list[dict], kind: str, x: str, by: str | None = None) -> dict[str, tuple[list, list]]:
    """Per method of ``kind``, its rows as (x, PSNR) points, sorted by x (or by ``by``)."""
    found = {}
    for curve in dict.fromkeys(r["curve"] for r in results if r["kind"] == kind):
        runs = [r for r in results if r["curve"] == curve and math.isfinite(r["psnr"])]
        runs.sort(key=lambda r: r[by or x])
        found[curve] = ([r[x] for r in runs], [r["psnr"] for r in runs])
    return found


def psnr_at(curve: tuple[list[float], list[float]], x: float) -> float | None:
    """PSNR interpolated linearly along a curve at ``x``; None outside the curve's range."""
    xs, ys = curve
    return float(np.interp(x, xs, ys)) if xs and xs[0] <= x <= xs[-1] else None


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


def fastest_target(results: list[dict]) -> dict:
    """(a): the fastest deployable cachelab row at >= GOOD dB."""
    good = [r for r in results if r["kind"] == "cachelab" and r["psnr"] >= GOOD]
    fastest = max(good, key=lambda r: r["speedup"], default=None)
    return dict(target="a", where=f">= {FAST:g}x at >= {GOOD:g} dB",
                verdict="PASS" if fastest and fastest["speedup"] >= FAST else "MISS",
                fastest=fastest and {k: fastest[k] for k in ("curve", "setting", "speedup", "psnr", "computed_steps")})


def targets(results: list[dict], oracle_budgets: tuple[int, ...]) -> list[dict]:
    speed = {kind: curves(results, kind, "speedup") for kind in ("cachelab", "reference")}
    steps = {kind: curves(results, kind, "computed_steps") for kind in ("cachelab", "reference", "bound")}
    forecaster = {name: curve for name, curve in steps["reference"].items() if name.startswith(CACHE_DIT_FORECAST)}
    found = [fastest_target(results)]
    at_speed = compare(speed["cachelab"], speed["reference"], AT_SPEEDUP)
    found.append(dict(target="b", where=f"{AT_SPEEDUP:g}x wall speedup", verdict=margin_verdict(at_speed), **at_speed))
    for budget in BUDGETS:
        at_budget = compare(steps["cachelab"], forecaster, budget)
        found.append(dict(target="c", where=f"{budget} computed steps", verdict=margin_verdict(at_budget), **at_budget))
    for budget in oracle_budgets:
        oracle = {name: psnr_at(curve, budget) for name, curve in steps["bound"].items()}
        found.append(dict(target="d", where=f"{budget} computed steps", verdict="shown", oracle=oracle,
                          **compare(steps["cachelab"], forecaster, budget)))
    return found


def db(value) -> str:
    return "-" if value is None else f"{value:.1f} dB"


def side(value, method) -> str:
    return "no curve spans it" if value is None else f"{value:.1f} dB ({method})"


def describe(target: dict) -> str:
    """One line per target, with its numbers."""
    name, where = target["target"], target["where"]
    if name == "a":
        f = target["fastest"]
        fastest = "no deployable cachelab row reaches it" if f is None else (
            f"the fastest deployable cachelab row there is {f['curve']} {f['setting']}: {f['speedup']:.2f}x, "
            f"{f['psnr']:.1f} dB, {f['computed_steps']:.1f} computed steps")
        return f"(a) {target['verdict']} {where}: {fastest}"
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
}


def parity(results: list[dict]) -> list[str]:
    """cachelab against its reference twin at each shared setting: computed steps, PSNR, speed ratio."""
    by_setting = {(r["curve"].split(" (")[0], r["setting"]): r for r in results}
    lines = []
    for (curve, setting), ours in by_setting.items():
        theirs = by_setting.get((TWINS.get(curve), setting))
        if theirs:
            lines.append(f"{curve} {setting} vs {theirs['curve']}: computed {ours['computed_steps']:.2f} / "
                         f"{theirs['computed_steps']:.2f}, PSNR {ours['psnr']:.2f} / {theirs['psnr']:.2f} dB, "
                         f"speedup {ours['speedup']:.2f}x / {theirs['speedup']:.2f}x")
    return lines


# -- output ----------------------------------------------------------------------------------------

def table(results: list[dict]) -> str:
    lines = ["| method | setting | computed /28 | speedup | PSNR dB | SSIM |", "|---|---|---:|---:|---:|---:|"]
    order = {library: i for i, library in enumerate(LIBRARIES)}
    for r in sorted(results, key=lambda r: (order[r["library"]], r["curve"])):  # stable: settings keep their order
        name = r["curve"] + (" (bound, not deployable)" if r["kind"] == "bound" else "")
        lines.append(f"| {name} | {r['setting']} | {r['computed_steps']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['psnr']:.1f} | {r['ssim']:.4f} |")
    return "\n".join(lines)


def plot(results: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    style = {"cachelab": "o-", "reference": "s--", "bound": "^:"}
    colors = plt.get_cmap("tab20")
    figure, axes = plt.subplots(figsize=(11, 6.5))
    lines = [(name, kind, curve) for kind in style
             for name, curve in curves(results, kind, "speedup", by="computed_steps").items()]
    for index, (name, kind, (speedups, psnrs)) in enumerate(lines):
        color = colors((2 * index + 2 * index // 20) % 20)  # the dark shades of tab20 first, then the light
        axes.plot(speedups, psnrs, style[kind], color=color, ms=4, lw=1.2,
                  label=name + (" (bound)" if kind == "bound" else ""))
    axes.axhline(GOOD, color="0.6", lw=0.8)
    for speed in (AT_SPEEDUP, FAST):
        axes.axvline(speed, color="0.6", lw=0.8)
    axes.set_xlabel("wall speedup (median uncached / median cached); each line joins its settings by computed steps")
    axes.set_ylabel("PSNR vs uncached (dB)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=130)
    plt.close(figure)


def report(results: list[dict], found: list[dict], setup: dict) -> str:
    """frontier.md: the setup, the table, the target verdicts and the parity of cachelab with its twins."""
    calibration = setup["calibration"]
    took = "".join(f", {name} {seconds:g} s" for name, seconds in calibration.get("seconds", {}).items())
    data = "; ".join([calibration["data"], *(f"{name}: {data}" for name, data in calibration["by policy"].items())])
    header = (f"{setup['subject']}, one call per prompt, {setup['threads']} CPU thread; speedup = median of "
              f"{setup['rounds']} paired alternating uncached/cached passes over {setup['timing_prompts']} prompt(s). "
              f"PSNR of all images vs uncached.\n\n"
              f"Calibration (`{calibration['command']}`{took}): {data}.")
    verdicts = "\n".join(f"- {describe(t)}" for t in found)
    twins = "\n".join(f"- {line}" for line in parity(results)) or "- (no twin rows in this run)"
    return (f"{header}\n\n{table(results)}\n\n## Targets\n\n{verdicts}\n\n"
            f"## Parity (cachelab / its reference twin, same setting)\n\n{twins}\n")


def write(results: list[dict], found: list[dict], setup: dict, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(dict(setup=setup, rows=results, targets=found), indent=1) + "\n")
    text = report(results, found, setup)
    (out / "frontier.md").write_text(text)
    plot(results, setup["subject"], out / "frontier.png")
    return text


def measure(model: Model, prompts: list[str], quick: bool, settings: dict, out: Path) -> tuple[list[dict], dict]:
    """Every row's results, and the model's calibration record."""
    with cpu_threads(THREADS):
        pipe = plain_pipeline(model)
        calibration = calibrate(pipe, model, prompts, quick, out)
        counter = StepCounter(pipe.transformer)
        calls = make_calls(prompts)
        reference = run_pass(pipe, counter, calls).images
        results = []
        for row in rows(model, calibration["policies"], quick):
            results.append(r := evaluate(pipe, counter, row, calls, reference, settings))
            print(f"{row.curve:48s} {row.setting:15s} {r['computed_steps']:5.1f} steps {r['speedup']:5.2f}x "
                  f"{r['psnr']:5.1f} dB (timing spread {r['timing_spread']:.2f})", flush=True)
    return results, calibration


def summary(calibration: dict) -> dict:
    """A calibration record without its numbers: how they were measured (per policy where it says)."""
    by_policy = {name: numbers["data"] for name, numbers in calibration["policies"].items() if "data" in numbers}
    return {**{key: value for key, value in calibration.items() if key != "policies"}, "by policy": by_policy}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="digits", help="digits (default) or shapes "
                        "(experiments/train_shapes, calibrated in the run)")
    parser.add_argument("--quick", action="store_true", help="a few rows, one timed prompt (about 2 minutes)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: experiments/frontier, "
                        "experiments/frontier/shapes for shapes; below experiments/frontier/quick with --quick)")
    args = parser.parse_args()
    model = MODELS[args.model]
    out = args.out or HERE / ("quick" if args.quick else "") / model.folder
    settings = QUICK if args.quick else FULL
    prompts = model.prompts()
    started = time.perf_counter()
    results, calibration = measure(model, prompts, args.quick, settings, out)
    setup = dict(model=model.description,
                 subject=f"{model.title}, {len(prompts)} {model.noun} x seeds {', '.join(map(str, SEEDS))}, {STEPS} steps",
                 prompts=prompts, seeds=list(SEEDS), steps=STEPS,
                 calls="one per prompt; prompt i of seed s seeded s + i", threads=THREADS, **settings, quick=args.quick,
                 calibration=summary(calibration),
                 seconds=round(time.perf_counter() - started),
                 versions={m.__name__: m.__version__ for m in (torch, diffusers, cache_dit, cachelab)})
    found = targets(results, model.settings(ORACLE, args.quick))
    print("\n" + write(results, found, setup, out))
    print(f"wrote results.json, frontier.md, frontier.png to {out} ({setup['seconds']} s)")


if __name__ == "__main__":
    main()
