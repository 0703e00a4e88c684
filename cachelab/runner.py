"""One experiment: the uncached reference and the cached run of the same prompts and seeds, measured.

Speed is timed on the first `timing.prompts` prompts: untimed warm-up, then `timing.repeats` rounds
of one uncached and one cached pass, in alternating order so drift hits both alike. Reference
*images* may come from the on-disk store; reference *timings* never do.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import launch, metrics
from .calibration import use_calibration_file
from .config import ConfigError, RunConfig, make_run_policy, metric_function, metric_options, read_prompt_file
from .engine.attach import attach, detach
from .engine.compile import compile_blocks
from .engine.executor import synchronize_device
from .engine.state import merge_peaks
from .memory import peak_memory
from .models.loading import load_pipeline, locate

log = logging.getLogger(__name__)
REFERENCE_FORMAT = 1  # bump when the stored reference layout or its key changes
NOISY_SPREAD = 1.5  # slowest / fastest timed pass of one kind above which the speedup is flagged
BUSY_LOAD = 1.0  # runnable threads per core (1-minute load average) above which the timing shared its cores


@dataclass
class Call:
    """One pipeline call: a prompt, its seed and the sampling arguments."""

    prompt: str
    seed: int
    arguments: dict

    def kwargs(self) -> dict:
        return dict(prompt=self.prompt, generator=torch.Generator("cpu").manual_seed(self.seed), **self.arguments)


@dataclass
class Batch:
    """Several calls in one pipeline call: their prompts, each with its own seed's generator."""

    calls: list[Call]

    def kwargs(self) -> dict:
        return dict(prompt=[call.prompt for call in self.calls],
                    generator=[torch.Generator("cpu").manual_seed(call.seed) for call in self.calls], **self.calls[0].arguments)


@dataclass
class Passes:
    """Outputs of one pass over some calls."""

    images: np.ndarray
    seconds: list[float]
    traces: list[list] = field(default_factory=list)
    kept_peak: dict[str, int] = field(default_factory=dict)  # the most bytes the policy kept at once, per unit kind


@dataclass
class Outcome:
    result: dict
    reference: np.ndarray
    cached: np.ndarray
    traces: list[list]


def run_prompts(run: RunConfig) -> list[str]:
    """The run's prompts: `prompt_file`, else `prompts`, else the model's own; the first `num_prompts` of them."""
    if run.prompt_file is not None:
        prompts = read_prompt_file(Path(run.prompt_file).expanduser())
    else:
        prompts = list(run.prompts if run.prompts is not None else run.model.prompts)
    return prompts[: run.num_prompts]


def make_calls(run: RunConfig, prompts: list[str]) -> list[Call]:
    arguments = dict(num_inference_steps=run.steps, height=run.height, width=run.width, output_type="np")
    if run.guidance is not None:
        arguments[run.model.guidance_arg] = run.guidance
    if run.num_frames is not None:
        arguments["num_frames"] = run.num_frames
    arguments.update(run.model.call_kwargs)
    return [Call(prompt, run.seed + i, arguments) for i, prompt in enumerate(prompts)]


def run_experiment(run: RunConfig, cached: Passes | None = None) -> Outcome:
    """The uncached reference (from the store where it is), the cached pass (``cached``: already made, e.g. by
    cachelab.tune's validation check of the same run) and the paired timing."""
    with cpu_threads(run.threads):
        return _run_experiment(run, cached)


@contextlib.contextmanager
def cpu_threads(count: int | None):
    """torch's CPU threads for the run (1 avoids oversubscription when other processes share the cores)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count or previous)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _run_experiment(run: RunConfig, cached: Passes | None) -> Outcome:
    prompts = run_prompts(run)
    calls = make_calls(run, prompts)
    policy = make_run_policy(run)
    pipe = loaded_pipeline(run)
    check_attachable(pipe, policy, run)
    pipe.set_progress_bar_config(disable=True)  # one bar per phase (reference, cached, timing), not one per image
    reference, from_store = reference_images(pipe, run, calls)
    if cached is None:
        cached = generate(pipe, calls, policy, desc="cached", quiet=run.quiet, cfg_decisions=run.cfg_decisions)
    timing = time_alternating(pipe, policy, calls[: run.timing.prompts], run)
    drift = float(np.abs(timing.fresh - reference[: len(timing.fresh)]).max())
    if drift > 1e-3:
        log.warning("a fresh uncached output differs from the stored reference by %.3g: the reference store "
                    "may be stale (reference_cache=false recomputes it)", drift)
    result = dict(
        policy=getattr(policy, "label", run.policy["name"]),  # a stack's: first_block+pab
        model=run.model.name, threshold=run.threshold, policy_params=policy.params(),
        bound=policy.bound,
        steps=run.steps, num_prompts=len(calls), seed=run.seed, prompts=prompts,
        **speed_figures(timing, run), **decision_figures(cached.traces, run.steps), **kept_figures(cached.kept_peak),
        **quality_figures(reference, cached.images), **model_metric(run, reference, cached.images, prompts),
        **perceptual_figures(run, reference, cached.images, prompts),
        reference_from_store=from_store, reference_drift=drift,
    )
    return Outcome(result, reference, cached.images, cached.traces)


def check_attachable(pipe, policy, run: RunConfig) -> None:
    """The policy fits the loaded model's blocks (e.g. DBCache's head and tail blocks), else a ConfigError line."""
    try:
        attach(pipe, policy, cfg_decisions=run.cfg_decisions)
    except ValueError as error:
        raise ConfigError(f"policy={run.policy['name']} on model={run.model.name}: {error}") from None
    detach(pipe)


def speed_figures(timing: Timing, run: RunConfig) -> dict:
    trace = [record for generation in timing.traces for record in generation]
    full_call = statistics.median(timing.call_seconds)
    ideal, skip_cost = metrics.ideal_speedup(trace, full_call)
    spread = max(max(times) / min(times) for times in (timing.reference, timing.cached))
    load = machine_load()
    if spread > NOISY_SPREAD:
        log.warning("timed passes of the same kind differ by x%.1f: something else is using the machine and the "
                    "speedup is unreliable (more timing.repeats, or threads=1 on a shared CPU, help)", spread)
    return dict(
        speedup=metrics.speedup(timing.reference, timing.cached), ideal_speedup=ideal, skip_cost=skip_cost,
        executor_overhead=metrics.executor_overhead(trace, full_call),
        reference_seconds=statistics.median(timing.reference), cached_seconds=statistics.median(timing.cached),
        timed_prompts=len(timing.fresh), timing_repeats=run.timing.repeats, timing_spread=spread,
        torch_threads=torch.get_num_threads(), machine_load=load,
        timing_noisy=spread > NOISY_SPREAD or (load is not None and load > BUSY_LOAD),
        reference_peak_memory_mb=timing.peak_memory_mb["reference"], cached_peak_memory_mb=timing.peak_memory_mb["cached"],
        peak_memory_kind=timing.peak_memory_kind,
    )


def decision_figures(traces: list[list], steps: int) -> dict:
    """Computed share of the transformer calls, overall and per branch (computed_steps = overall share x steps),
    and of the block work (``computed_work``: each block and module weighted by its measured time)."""
    fractions = metrics.computed_fraction(record for generation in traces for record in generation)
    overall = fractions.pop("all")
    work = metrics.work_fraction([record for generation in traces for record in generation])
    return dict(computed_fraction=overall, computed_fraction_per_branch=fractions, computed_steps=overall * steps,
                computed_work=work)


def kept_figures(kept_peak: dict[str, int]) -> dict:
    """The most memory the policy's kept outputs held at once in a generation (MiB), in total and per unit kind."""
    mib = {kind: size / 2**20 for kind, size in kept_peak.items()}
    return dict(kept_mib=mib.pop("total", 0.0), kept_mib_per_unit=mib)


def quality_figures(reference: np.ndarray, cached: np.ndarray) -> dict:
    ssim = metrics.ssim(reference, cached)
    return dict(psnr=metrics.psnr(reference, cached), ssim=metrics.mean(ssim),
                psnr_per_prompt=metrics.psnr_per_sample(reference, cached), ssim_per_prompt=ssim)


def perceptual_figures(run: RunConfig, reference: np.ndarray, cached: np.ndarray, prompts: list[str]) -> dict:
    """The perceptual metrics the run asked for (``metrics=[...]``), against the uncached images or the prompts;
    FID over the run's set of images (a sweep's jobs are sets of their own: ``python -m cachelab.perceptual``)."""
    if not run.metrics:
        return {}
    from .perceptual import evaluate, fid_of_sets

    options = metric_options(run)
    figures = evaluate(run.metrics, reference, cached, prompts, options)
    sets = [name for name in run.metrics if name in ("fid", "fid_clip")]
    return {**figures, **(fid_of_sets(sets, reference, {"run": cached}, options)["run"] if sets else {})}


def model_metric(run: RunConfig, reference: np.ndarray, cached: np.ndarray, prompts: list[str]) -> dict:
    """The model's own metric (`model.metric`) of the cached and the reference images, stored under its name."""
    metric = run.model.metric
    if metric is None:
        return {}
    function = metric_function(metric)
    return {"metric": dict(name=metric.name, format=metric.format), metric.name: function(cached, prompts),
            f"reference_{metric.name}": function(reference, prompts)}


_loaded: dict[str, object] = {}


def loaded_pipeline(run: RunConfig):
    """The run's pipeline, kept for the next job of a sweep that uses the same model (one at a time)."""
    key = json.dumps([asdict(run.model), run.device, run.calibration_file, run.compile, asdict(run.parallel)],
                     sort_keys=True, default=str)
    if key not in _loaded:
        _loaded.clear()
        pipe = load_pipeline(run.model, run.device)
        if run.calibration_file is not None:
            use_calibration_file(pipe.transformer, Path(run.calibration_file).expanduser())
        if run.parallel.degree > 1:
            for problem in launch.model_problems(pipe.transformer, run.parallel):
                raise ConfigError(f"model={run.model.name}: {problem}")
            launch.enable(pipe.transformer, run.parallel)
        if run.compile:
            compile_blocks(pipe.transformer)
        _loaded[key] = pipe
    return _loaded[key]


def generate(pipe, calls: list[Call | Batch], policy=None, *, desc: str, quiet: bool, cfg_decisions: str = "separate") -> Passes:
    """Run every call, cached with `policy` (attached for this pass only) or uncached: an image, a trace and the
    seconds per call (a batch: an image and a trace per prompt, the seconds of the whole call)."""
    executor = attach(pipe, policy, synchronize=True, cfg_decisions=cfg_decisions) if policy is not None else None
    images, seconds, traces, kept_peak = [], [], [], {}
    try:
        for call in tqdm(calls, desc=desc, disable=quiet, leave=False):
            if executor is not None and executor.policy.rehearses:  # the oracle plans from this very call, untimed
                executor.rehearse(lambda: pipe(**call.kwargs()))
            start = time.perf_counter()
            output = pipe(**call.kwargs())
            synchronize_device(pipe.transformer)
            seconds.append(time.perf_counter() - start)
            count = len(call.calls) if isinstance(call, Batch) else 1
            images.extend(samples(output)[:count])
            traces.extend([list(executor.trace) if executor else []] * count)
            merge_peaks(kept_peak, executor.kept_peak if executor else {})
    finally:
        if executor is not None:
            detach(pipe)
    return Passes(np.stack(images), seconds, traces, kept_peak)


def first_sample(output) -> np.ndarray:
    return samples(output)[0]


def samples(output) -> np.ndarray:
    """A pipeline output's images (or videos' frames) as one float32 array, whatever its output_type."""
    frames = getattr(output, "frames", None)
    return np.asarray(frames if frames is not None else output.images, dtype=np.float32)


def machine_load() -> float | None:
    """The 1-minute load average per core, this job included (None where the OS does not say)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return None


@dataclass
class Timing:
    """Timed rounds: seconds of each uncached and cached pass, of each uncached transformer call,
    the cached passes' traces, and the first uncached outputs (to check the stored reference)."""

    reference: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    call_seconds: list[float] = field(default_factory=list)
    traces: list[list] = field(default_factory=list)
    fresh: np.ndarray | None = None
    peak_memory_mb: dict[str, float] = field(default_factory=lambda: {"reference": 0.0, "cached": 0.0})
    peak_memory_kind: str | None = None


def time_alternating(pipe, policy, calls: list[Call], run: RunConfig) -> Timing:
    timing = Timing()
    pipe.set_progress_bar_config(disable=True)
    for round_ in tqdm(range(run.timing.warmup + run.timing.repeats), desc="timing", disable=run.quiet, leave=False):
        timed = round_ >= run.timing.warmup
        for use_cache in ((False, True) if round_ % 2 == 0 else (True, False)):
            kind = "cached" if use_cache else "reference"
            timer = contextlib.nullcontext([]) if use_cache else call_timer(pipe.transformer)  # uncached call times only
            with peak_memory(pipe.device) as peak, timer as seconds:
                passes = generate(pipe, calls, policy if use_cache else None, desc=kind, quiet=True, cfg_decisions=run.cfg_decisions)
            timing.peak_memory_mb[kind] = max(timing.peak_memory_mb[kind], peak.megabytes)
            timing.peak_memory_kind = peak.kind
            if use_cache:
                if timed:
                    timing.cached.append(sum(passes.seconds))
                    timing.traces.extend(passes.traces)
                continue
            timing.fresh = passes.images if timing.fresh is None else timing.fresh
            if timed:
                timing.reference.append(sum(passes.seconds))
                timing.call_seconds.extend(seconds)
    return timing


@contextlib.contextmanager
def call_timer(module: torch.nn.Module):
    """Collect the wall seconds of every call of `module` (forward hooks; the module is unchanged)."""
    seconds: list[float] = []
    starts: list[float] = []

    def before(*_):
        synchronize_device(module)
        starts.append(time.perf_counter())

    def after(*_):
        synchronize_device(module)
        seconds.append(time.perf_counter() - starts.pop())

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield seconds
    finally:
        for handle in handles:
            handle.remove()


def reference_images(pipe, run: RunConfig, calls: list[Call]) -> tuple[np.ndarray, bool]:
    """Uncached outputs of `calls`, from the store when `reference_cache` and present; (images, from_store)."""
    path = Path(run.cache_dir).expanduser() / "references" / f"{reference_key(run, calls, pipe.device.type)}.npz"
    if launch.all_ranks(run.reference_cache and path.is_file()):  # ranks that generate together decide together
        log.info("uncached reference images from %s", path)
        with np.load(path) as stored:
            return stored["images"], True
    images = generate(pipe, calls, desc="reference", quiet=run.quiet).images
    if run.reference_cache and launch.is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.npz")
        np.savez_compressed(partial, images=images)
        os.replace(partial, path)
    return images, False


def reference_key(run: RunConfig, calls: list[Call], device: str) -> str:
    """Hash of everything the uncached images depend on: the model files, prompts, seeds, sampling."""
    import diffusers

    model = run.model
    directory = locate(model)
    identity = dict(
        format=REFERENCE_FORMAT, model=model.name, files=_fingerprint(directory), dtype=model.dtype,
        device=device, calls=[(c.prompt, c.seed, sorted(c.arguments.items())) for c in calls],
        threads=torch.get_num_threads(),  # a CPU's reductions round differently with another thread count (1e-7)
        torch=torch.__version__, diffusers=diffusers.__version__,
    )
    if run.compile:  # compiled blocks round differently (about 1e-6): their references are kept apart
        identity["compiled"] = True
    if run.parallel.degree > 1:  # so do the ranks of context parallelism (about 1e-7)
        identity["parallel"] = asdict(run.parallel)
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _fingerprint(directory: Path) -> list:
    return sorted((str(f.relative_to(directory)), f.stat().st_size, f.stat().st_mtime_ns)
                  for f in directory.rglob("*") if f.is_file())
