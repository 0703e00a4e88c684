"""cachelab on a FLUX.1-dev-sized transformer with random weights: overhead, achieved/ideal speedup, diffusers FBC, memory.

    python experiments/benchmarks/gpu.py [--repeats 3] [--out gpu.json]   # one CUDA GPU: about 30 runs of the loop
    python experiments/benchmarks/gpu.py --tiny                           # a tiny model on the CPU, seconds (CI)

A ``FluxTransformer2DModel`` of FLUX.1-dev's configuration (random bfloat16 weights, no download) is driven
through a 28-step Euler loop with the inputs FluxPipeline gives it at 1024x1024, batch 1: 4096 image
tokens, 512 text tokens, guidance embeds. Rows:

(a) ``NoCache``: cachelab attached with a policy that always computes, against the plain transformer (goal <= 1.01).
(b) First Block Cache, TeaCache, MagCache, TaylorSeer: achieved speedup over the plain transformer, and
    achieved/ideal (goal >= 0.97), where ideal is the same loop with the skipped steps run by a copy of the
    transformer whose skipped blocks are pass-throughs: no executor, no signals, no residuals. FBC and
    TeaCache compute their signals and decide, but their answers are replayed from the fixed schedules
    below (their decisions on random weights would be arbitrary); MagCache (published FLUX ratios) and
    TaylorSeer decide by step alone, so they run as they are.
(c) cachelab's First Block Cache against diffusers' ``FirstBlockCacheConfig`` at the same decisions: diffusers
    runs at a threshold (the median step-to-step change of the head residual) and cachelab replays the
    decisions diffusers made (goal: cachelab / diffusers wall time <= 1.00). ``decisions_agree`` says whether
    cachelab's own First Block Cache at that threshold decides as diffusers did.
(d) peak GPU memory of every row (null on the CPU).

Timings: every pass is CUDA-synchronised before and after; the passes of a comparison are paired and their
order alternates from repeat to repeat; ratios are medians of per-pair ratios. Prints a markdown table and
writes it (``.md``) beside the JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import diffusers
import torch
from diffusers import FluxPipeline, FluxTransformer2DModel
from diffusers.hooks import FirstBlockCacheConfig

import cachelab
from cachelab import FirstBlockCache, MagCache, NoCache, TaylorSeer, TeaCache
from cachelab.models.specs import spec_for

sys.path.insert(0, str(Path(__file__).parent))
from replay import Replayed  # noqa: E402

STEPS = 28
STARTED = time.perf_counter()
FLUX_DEV = dict(in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
                joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
TINY = dict(in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=16, num_attention_heads=2,
            joint_attention_dim=32, pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 6, 6))
# Replayed schedules (1 = computed): what FirstBlockCache(0.2) and TeaCache(0.05) decided on the embedded digits
# model (a trained FLUX-architecture model; "a handwritten digit 3", seed 0, 28 steps).
SCHEDULES = {
    "FirstBlockCache": "1001001001000100100101010101",
    "TeaCache": "1011010010010010010010010111",
}


@dataclass(frozen=True)
class Setting:
    config: dict
    latent_side: int  # image tokens = latent_side ** 2 (64 at 1024x1024: VAE factor 8, 2x2 packing)
    text_tokens: int
    dtype: torch.dtype
    device: str


FULL = Setting(FLUX_DEV, 64, 512, torch.bfloat16, "cuda")
SMALL = Setting(TINY, 8, 16, torch.float32, "cpu")


def random_transformer(setting: Setting) -> FluxTransformer2DModel:
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(setting.dtype)  # created in its dtype on its device: no float32 copy of 12B weights
    try:
        with torch.device(setting.device):
            transformer = FluxTransformer2DModel(**setting.config)
    finally:
        torch.set_default_dtype(default)
    return transformer.eval().requires_grad_(False)


class StepLoop:
    """A 28-step Euler loop over the transformer with FluxPipeline's call arguments."""

    def __init__(self, setting: Setting):
        config, device, dtype = setting.config, setting.device, setting.dtype
        generator = torch.Generator().manual_seed(0)
        tokens = setting.latent_side**2

        def noise(*shape):
            return torch.randn(*shape, generator=generator).to(device, dtype)

        self.latents = noise(1, tokens, config["in_channels"])
        self.arguments = dict(
            encoder_hidden_states=noise(1, setting.text_tokens, config["joint_attention_dim"]),
            pooled_projections=noise(1, config["pooled_projection_dim"]),
            guidance=torch.full((1,), 3.5, device=device, dtype=torch.float32) if config["guidance_embeds"] else None,
            txt_ids=torch.zeros(setting.text_tokens, 3, device=device, dtype=dtype),
            img_ids=FluxPipeline._prepare_latent_image_ids(1, setting.latent_side, setting.latent_side, device, dtype),
            return_dict=False,
        )
        sigmas = torch.linspace(1.0, 0.0, STEPS + 1).tolist()
        self.timesteps = [torch.full((1,), sigma, device=device, dtype=dtype) for sigma in sigmas[:-1]]
        self.deltas = [after - before for before, after in zip(sigmas, sigmas[1:])]

    def run(self, transformer_at: Callable[[int], torch.nn.Module]) -> torch.Tensor:
        latents = self.latents
        for step, (timestep, delta) in enumerate(zip(self.timesteps, self.deltas)):
            transformer = transformer_at(step)
            with transformer.cache_context("cond"):
                velocity = transformer(hidden_states=latents, timestep=timestep, **self.arguments)[0]
            latents = latents + delta * velocity
        return latents


class PassThrough(torch.nn.Module):
    """Stands in for a skipped block: returns its streams unchanged, in the block's output layout."""

    def __init__(self, output):
        super().__init__()
        self.output = output

    def forward(self, hidden_states, encoder_hidden_states=None, **_):
        return self.output.pack(hidden_states, encoder_hidden_states)


def skeleton(transformer: torch.nn.Module, head: int, tail: int) -> torch.nn.Module:
    """A copy sharing every weight whose blocks between the first ``head`` and the last ``tail`` pass through:
    what an ideal cache runs on a skipped step."""
    spec = spec_for(transformer)
    copied = copy.copy(transformer)
    copied._modules = dict(transformer._modules)
    total = sum(len(getattr(transformer, name)) for name in spec.block_lists)
    index = 0
    for name in spec.block_lists:
        blocks = []
        for block in getattr(transformer, name):
            skipped = head <= index < total - tail
            blocks.append(PassThrough(spec.block_outputs[type(block).__name__]) if skipped else block)
            index += 1
        copied._modules[name] = torch.nn.ModuleList(blocks)
    return copied


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class Pass:
    """One kind of generation: ``setup`` and ``teardown`` run outside the timed region."""

    run: Callable[[], object]
    setup: Callable[[], object] = lambda: None
    teardown: Callable[[], object] = lambda: None


class Bench:
    def __init__(self, setting: Setting, repeats: int):
        self.setting, self.repeats = setting, repeats
        self.transformer = random_transformer(setting)
        self.loop = StepLoop(setting)
        self.peaks: dict[str, int | None] = {}

    def timed(self, name: str, run: Pass) -> float:
        cuda = self.setting.device == "cuda"
        run.setup()
        synchronize(self.setting.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        run.run()
        synchronize(self.setting.device)
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() if cuda else None
        self.peaks[name] = None if peak is None else max(peak, self.peaks.get(name) or 0)
        run.teardown()
        return seconds

    def paired(self, first: tuple[str, Pass], second: tuple[str, Pass], warm_up: bool = False) -> tuple[list[float], list[float]]:
        """Seconds of both passes per repeat, the order alternating (after an untimed round if ``warm_up``)."""
        times = {first[0]: [], second[0]: []}
        for name, run in (first, second) if warm_up else ():
            self.timed(name, run)
        for repeat in range(self.repeats):
            for name, run in (first, second) if repeat % 2 == 0 else (second, first):
                times[name].append(self.timed(name, run))
        log(f"{first[0]}: {statistics.median(times[first[0]]):.3f} s, {second[0]}: {statistics.median(times[second[0]]):.3f} s")
        return times[first[0]], times[second[0]]

    def plain(self) -> Pass:
        return Pass(lambda: self.loop.run(lambda step: self.transformer))

    def cached(self, policy, traces: list) -> Pass:
        executors = []

        def teardown():
            traces.append([record.computed for record in executors.pop().trace])
            cachelab.detach(self.transformer)

        return Pass(lambda: self.loop.run(lambda step: self.transformer),
                    lambda: executors.append(cachelab.attach(self.transformer, policy, num_steps=STEPS)), teardown)

    def ideal(self, policy, computed: list[bool]) -> Pass:
        stand_in = skeleton(self.transformer, policy.head_blocks, policy.tail_blocks)
        return Pass(lambda: self.loop.run(lambda step: self.transformer if computed[step] else stand_in))

    def diffusers_fbc(self, threshold: float, decisions: list) -> Pass:
        """diffusers' First Block Cache; a call computed iff a layer of the last block ran."""
        last_block = self.transformer.single_transformer_blocks[-1]
        hooks = []

        def setup():
            decisions.append([])
            hooks.append(self.transformer.register_forward_pre_hook(lambda *_: decisions[-1].append(False)))
            hooks.append(last_block.norm.register_forward_pre_hook(lambda *_: decisions[-1].__setitem__(-1, True)))
            self.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))

        def teardown():
            self.transformer.disable_cache()
            while hooks:
                hooks.pop().remove()

        return Pass(lambda: self.loop.run(lambda step: self.transformer), setup, teardown)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:6.1f} s] {message}", file=sys.stderr, flush=True)


def median_ratio(numerators, denominators) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def schedule(name: str) -> list[bool]:
    return [c == "1" for c in SCHEDULES[name]]


def policies() -> dict:
    return {
        "FirstBlockCache": Replayed(FirstBlockCache(0.2), schedule("FirstBlockCache")),
        "TeaCache": Replayed(TeaCache(0.05), schedule("TeaCache")),
        "MagCache": MagCache(),
        "TaylorSeer": TaylorSeer(interval=4, order=1),
    }


def measure(bench: Bench) -> dict:
    rows, goals = {}, {}
    traces = []
    plain, no_cache = bench.paired(("plain", bench.plain()), ("NoCache", bench.cached(NoCache(), traces)), warm_up=True)
    plain_s = statistics.median(plain)
    rows["plain"] = {"seconds": plain_s, "computed": STEPS}
    rows["NoCache"] = {"seconds": statistics.median(no_cache), "computed": sum(traces[-1]), "speedup": median_ratio(plain, no_cache)}
    overhead = median_ratio(no_cache, plain)
    goals["NoCache / plain"] = {"value": overhead, "goal": "<= 1.01", "met": overhead <= 1.01}

    for name, policy in policies().items():
        traces = []
        bench.timed(name, bench.cached(policy, traces))  # untimed: its decisions, and a warm-up
        computed = traces[-1]
        ideal, cached = bench.paired((f"{name} ideal", bench.ideal(policy, computed)), (name, bench.cached(policy, traces)))
        assert all(trace == computed for trace in traces), f"{name} decided differently from one pass to the next"
        rows[name] = {
            "seconds": statistics.median(cached), "computed": sum(computed), "decisions": "".join("01"[c] for c in computed),
            "speedup": plain_s / statistics.median(cached), "ideal_speedup": plain_s / statistics.median(ideal),
            "achieved_over_ideal": median_ratio(ideal, cached),
        }
        goals[f"{name} achieved / ideal"] = {"value": rows[name]["achieved_over_ideal"], "goal": ">= 0.97",
                                             "met": rows[name]["achieved_over_ideal"] >= 0.97}

    threshold = fbc_threshold(bench)
    diffusers_decisions, own, replayed_traces = [], [], []
    bench.timed("diffusers FirstBlockCache", bench.diffusers_fbc(threshold, diffusers_decisions))  # untimed: its decisions
    decided = diffusers_decisions[-1]
    bench.timed("cachelab FirstBlockCache (own decisions)", bench.cached(FirstBlockCache(threshold), own))
    replay = Replayed(FirstBlockCache(threshold), decided)
    diffusers_s, cachelab_s = bench.paired(("diffusers FirstBlockCache", bench.diffusers_fbc(threshold, diffusers_decisions)),
                                           ("cachelab FirstBlockCache", bench.cached(replay, replayed_traces)))
    same = all(d == decided for d in diffusers_decisions) and all(t == decided for t in replayed_traces)
    for name, seconds in (("diffusers FirstBlockCache", diffusers_s), ("cachelab FirstBlockCache", cachelab_s)):
        rows[name] = {"seconds": statistics.median(seconds), "computed": sum(decided), "decisions": "".join("01"[c] for c in decided),
                      "speedup": plain_s / statistics.median(seconds), "threshold": threshold}
    rows["cachelab FirstBlockCache"].update(same_decisions_in_every_pass=same, decisions_agree=own[-1] == decided)
    ratio = median_ratio(cachelab_s, diffusers_s)
    goals["cachelab / diffusers FirstBlockCache"] = {"value": ratio, "goal": "<= 1.00", "met": ratio <= 1.0}
    for name, row in rows.items():
        peak = bench.peaks.get(name)
        row["peak_mib"] = None if peak is None else peak / 2**20
    return {"rows": rows, "goals": goals}


def fbc_threshold(bench: Bench) -> float:
    """The median step-to-step change of the head residual: First Block Cache then skips some steps."""
    executor = cachelab.attach(bench.transformer, FirstBlockCache(0.0), num_steps=STEPS)
    try:
        bench.loop.run(lambda step: bench.transformer)
    finally:
        cachelab.detach(bench.transformer)
    return statistics.median(record.signal for record in executor.trace if record.signal is not None)


def markdown(result: dict) -> str:
    setting = result["setting"]
    lines = [f"{setting['model']}, {setting['tokens']} image + {setting['text_tokens']} text tokens, {STEPS} steps, batch 1, "
             f"{setting['dtype']} on {setting['device_name']}; medians of {setting['repeats']} alternating pairs", "",
             "| row | computed | seconds | speedup | ideal | achieved/ideal | peak MiB |", "|---|---|---|---|---|---|---|"]

    def number(value, pattern):
        return "" if value is None else pattern.format(value)

    for name, row in result["rows"].items():
        lines.append(f"| {name} | {row['computed']}/{STEPS} | {row['seconds']:.3f} | {number(row.get('speedup'), '{:.2f}x')} "
                     f"| {number(row.get('ideal_speedup'), '{:.2f}x')} | {number(row.get('achieved_over_ideal'), '{:.3f}')} "
                     f"| {number(row['peak_mib'], '{:.0f}')} |")
    lines += ["", "| goal | value | target | met |", "|---|---|---|---|"]
    for name, goal in result["goals"].items():
        lines.append(f"| {name} | {goal['value']:.3f} | {goal['goal']} | {'yes' if goal['met'] else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny float32 model on the CPU (seconds)")
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs per comparison (default 3)")
    parser.add_argument("--out", type=Path, default=Path("gpu_benchmark.json"), help="the JSON result; the table goes beside it (.md)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    setting = SMALL if args.tiny else FULL
    if args.tiny:
        torch.set_num_threads(1)  # a tiny model gains nothing from more, and loses much when the cores are shared
    if setting.device == "cuda" and not torch.cuda.is_available():
        parser.error("the FLUX.1-dev-sized run needs a CUDA GPU; --tiny runs a tiny model on the CPU")
    start = time.perf_counter()
    bench = Bench(setting, args.repeats)
    log(f"built {sum(p.numel() for p in bench.transformer.parameters()):,} parameters on {setting.device}")
    result = {
        "setting": {
            "model": "tiny Flux" if args.tiny else "FLUX.1-dev-sized FluxTransformer2DModel (random weights)",
            "tokens": setting.latent_side**2, "text_tokens": setting.text_tokens, "steps": STEPS, "dtype": str(setting.dtype),
            "device_name": torch.cuda.get_device_name() if setting.device == "cuda" else platform.processor() or "CPU",
            "repeats": args.repeats, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "parameters": sum(p.numel() for p in bench.transformer.parameters()),
        },
        **measure(bench),
    }
    result["setting"]["wall_seconds"] = time.perf_counter() - start
    table = markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"\n{result['setting']['wall_seconds']:.0f} s; wrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
