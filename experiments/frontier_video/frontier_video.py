"""The quality-speed frontier of the video digits model: every cachelab policy and the peers that run on Wan
(diffusers FBC, MagCache, PAB, FasterCache, SeaCache, TaylorSeer; cache-dit DBCache with and without TaylorSeer),
in one harness and one process.

    python experiments/frontier_video/frontier_video.py [--quick] [--out DIR] [--model-dir DIR]

Writes results.json and frontier.md (the table and the verdicts) into --out (default: beside this file).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import re
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: the shared harness

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import WanPipeline  # noqa: E402
from diffusers.hooks import (  # noqa: E402
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    SeaCacheConfig,
    TaylorSeerCacheConfig,
)
from harness import ENABLE, CachelabEnabled, Enabled, Row, cache_dit_dbcache, cache_dit_step_mask, psnr_at  # noqa: E402

from cachelab import metrics, zoo  # noqa: E402
from cachelab.calibrate import lemica_schedules, sencache_sensitivities  # noqa: E402
from cachelab.calibration import CALIBRATION_FILE, use_calibration  # noqa: E402
from cachelab.policies import (  # noqa: E402
    ClusCa,
    DBPrune,
    DualBlockCache,
    DuCa,
    EasyCache,
    FirstBlockCache,
    FixedInterval,
    Fora,
    Learned,
    LeMiCa,
    MagCache,
    Oracle,
    PyramidAttentionBroadcast,
    SeaCache,
    SenCache,
    StepMask,
    TaylorSeer,
    TeaCache,
    ToCa,
    make_policy,
)
from cachelab.zoo.video_data import CALL_DEFAULTS, all_video_prompts  # noqa: E402

HERE = Path(__file__).parent
STEPS = 30
PROMPTS = all_video_prompts()[::5]  # 8 prompts: digits 0-8, every direction twice
SEEDS = (0,)
ARGUMENTS = dict(num_inference_steps=STEPS, output_type="np", guidance_scale=5.0, **CALL_DEFAULTS)
ROUNDS, TIMED = 3, 1  # paired timing: rounds x (uncached, cached) passes over the first TIMED calls
SAFE_PSNR = 35.0
BUDGETS = (6, 8)
LEMICA_BUDGETS = (4, 6, 8, 10)  # LeMiCa against learned and the oracle at these budgets
CALIBRATION_SEED = 1000  # LeMiCa and SenCache, fitted in the run where the model's calibration lacks them
STACK_MARGIN = 1.0
STEP_MASK_THRESHOLD = 0.12
DBPRUNE = dict(compute_first=1, compute_last=0, warmup_steps=0)
#: each stack's parts, as curves of their own
STACK_PARTS = {
    "first_block + pab 2": ("cachelab first_block", "cachelab pab"),
    "learned + fora 2": ("cachelab learned", "cachelab fora"),
    "learned + pab 2": ("cachelab learned", "cachelab pab"),
    "fixed_interval + dbprune 0.08": ("cachelab fixed_interval", "cachelab dbprune F1B0 W0"),
    "fixed_interval + toca": ("cachelab fixed_interval", "cachelab toca"),
    "learned + toca": ("cachelab learned", "cachelab toca"),
}


def grid(pipe, ratios: list[float], quick: bool, only: str | None = None) -> list[Row]:
    """Every method x setting; cache-dit last (it keeps its patched forward after disable_cache)."""
    timestep = lambda: pipe.current_timestep  # noqa: E731
    methods = [
        ("cachelab", "first_block", "threshold", FirstBlockCache, (0.05, 0.1, 0.2)),
        ("cachelab", "teacache", "threshold", TeaCache, (0.1, 0.3)),
        ("cachelab", "magcache", "threshold", MagCache, (0.06, 0.24)),
        ("cachelab", "fixed_interval", "interval", FixedInterval, (2, 3, 5)),
        ("cachelab", "dbcache F1B0 W0", "threshold",
         functools.partial(DualBlockCache, compute_first=1, compute_last=0, warmup_steps=0), (0.05, 0.12)),
        ("cachelab", "taylorseer order 1", "interval", TaylorSeer, (3, 5)),
        ("cachelab", "seacache", "threshold", SeaCache, (0.2, 0.5)),
        ("cachelab", "learned", "budget", Learned, (4, 6, 8, 10)),
        ("cachelab", "pab", "spatial skip", lambda k: make_policy("pab", spatial_attention_block_skip_range=k), (2,)),
        ("cachelab", "faster_cache (attention part)", "spatial skip",  # its CFG part: README, "FasterCache's CFG part"
         lambda k: make_policy("faster_cache", spatial_attention_block_skip_range=k, is_guidance_distilled=True), (2,)),
        ("cachelab", "fora", "interval", lambda i: make_policy("fora", interval=i), (2, 3)),
        ("cachelab", "dbprune F1B0 W0", "threshold",
         lambda t: make_policy("dbprune", threshold=t, compute_first=1, compute_last=0, warmup_steps=0), (0.08,)),
        ("cachelab", "oracle fitted history 2", "budget", functools.partial(Oracle, forecast="fitted", history=2),
         (6, 8)),
        # the three axes, in the order they run (the rows the questions need first): the new triggers, stacks
        # (cachelab.attach(pipe, [step, block, module or token policy]); the first part's knob varies), token policies
        # alone and under a step schedule, the stand-ins (cachelab.forecasters) on the step, block and module triggers
        ("cachelab", "easycache", "threshold", EasyCache, (0.05, 0.1, 0.2, 0.4)),
        ("cachelab", "first_block + pab 2", "threshold",
         lambda t: [FirstBlockCache(t), PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)], (0.05,)),
        ("cachelab", "learned + fora 2", "budget", lambda b: [Learned(b), Fora(2)], (10,)),
        ("cachelab", "learned + pab 2", "budget",
         lambda b: [Learned(b), PyramidAttentionBroadcast(spatial_attention_block_skip_range=2)], (10,)),
        ("cachelab", "fixed_interval + dbprune 0.08", "interval", lambda i: [FixedInterval(i), DBPrune(0.08, **DBPRUNE)], (2,)),
        ("cachelab", "toca", "fresh ratio", lambda r: ToCa(fresh_ratio=r), (0.07,)),
        ("cachelab", "duca", "interval", lambda i: DuCa(interval=i), (3,)),
        ("cachelab", "clusca", "interval", lambda i: ClusCa(interval=i), (3,)),
        ("cachelab", "fixed_interval + toca", "interval", lambda i: [FixedInterval(i), ToCa()], (2,)),
        ("cachelab", "learned + toca", "budget", lambda b: [Learned(b), ToCa()], (10,)),
        ("cachelab", "lemica", "budget", LeMiCa, LEMICA_BUDGETS),
        ("cachelab", "oracle fitted history 2", "budget", functools.partial(Oracle, forecast="fitted", history=2),
         (4, 10)),
        *(("cachelab", f"dbcache F1B0 W0 + {name}", "threshold", functools.partial(
            DualBlockCache, compute_first=1, compute_last=0, warmup_steps=0, forecaster=name), (0.12,))
          for name in ("foca", "dmd")),
        *(("cachelab", f"first_block + {name}", "threshold",
           functools.partial(FirstBlockCache, forecaster=forecaster, forecaster_order=order), (0.1,))
          for name, forecaster, order in (("foca", "foca", 1), ("dmd", "dmd", 1), ("hermite order 2", "hermite", 2),
                                          ("taylor order 1", "taylor", 1))),
        ("cachelab", "dbprune F1B0 W0 + foca", "threshold", lambda t: DBPrune(t, **DBPRUNE, forecaster="foca"), (0.08,)),
        ("cachelab", "taylorseer module W3", "interval", lambda i: TaylorSeer(i, order=1, warmup_steps=3, unit="module"), (3,)),
        ("cachelab", "taylorseer module W3 + hermite", "interval",
         lambda i: TaylorSeer(i, order=1, warmup_steps=3, unit="module", forecaster="hermite"), (3,)),
        ("cachelab", "sencache", "threshold", SenCache, (0.4, 0.8)),
        ("cachelab", f"step_mask F1B0 {STEP_MASK_THRESHOLD}", "preset",
         lambda preset: StepMask(STEP_MASK_THRESHOLD, mask=preset), ("fast",)),
        ("diffusers", "FirstBlockCache", "threshold", FirstBlockCacheConfig, (0.05, 0.1, 0.2)),
        ("diffusers", "MagCache (calibrated ratios)", "threshold",
         lambda t: MagCacheConfig(threshold=t, mag_ratios=ratios, num_inference_steps=STEPS), (0.06, 0.24)),
        ("diffusers", "PAB", "spatial skip", lambda k: PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=k, current_timestep_callback=timestep), (2,)),
        ("diffusers", "FasterCache", "spatial skip", lambda k: FasterCacheConfig(
            spatial_attention_block_skip_range=k, current_timestep_callback=timestep, tensor_format="BCFHW",
            attention_weight_callback=lambda _: 0.3), (2,)),
        ("diffusers", "SeaCache", "threshold", lambda t: SeaCacheConfig(threshold=t), (0.2, 0.5)),
        ("diffusers", "TaylorSeer", "interval", lambda i: TaylorSeerCacheConfig(cache_interval=i), (3,)),
        ("cache-dit", "DBCache F1B0 W0", "threshold", cache_dit_dbcache, (0.05, 0.12)),
        ("cache-dit", "DBCache F1B0 W0 + TaylorSeer order 1", "threshold",
         functools.partial(cache_dit_dbcache, order=1), (0.12, 0.4)),
        *(("cache-dit", f"DBCache F1B0 W0 + {name}", "threshold", functools.partial(cache_dit_dbcache, calibrator=name),
           (0.12,)) for name in ("foca", "dmd")),
        ("cache-dit", f"DBCache F1B0 {STEP_MASK_THRESHOLD} steps_mask", "preset",
         lambda preset: cache_dit_step_mask(preset, STEP_MASK_THRESHOLD, STEPS), ("fast",)),
    ]
    rows = []
    for library, method, knob, make, values in methods:
        values = [v for v in values if not only or re.search(only, f"{library} {method} {knob} {v}")]
        for value in values[len(values) // 2:][:1] if quick else values:
            rows.append(Row(library, method, f"{knob} {value}", functools.partial(ENABLE[library], make(value)),
                            bound=method.startswith("oracle")))
    return rows


class StepCounter:
    """Runs of a middle block's self-attention query projection: the calls whose blocks a cache computed (for
    PAB, FasterCache and diffusers' TaylorSeer, which stand in for attention only: the calls whose attention ran)."""

    def __init__(self, transformer):
        blocks = transformer.blocks
        blocks[len(blocks) // 2].attn1.to_q.register_forward_pre_hook(self._ran)
        self.count = 0

    def _ran(self, *_):
        self.count += 1


def calls() -> list[dict]:
    return [dict(prompt=prompt, generator=seed + i) for seed in SEEDS for i, prompt in enumerate(PROMPTS)]


def call_kwargs(call: dict) -> dict:
    return dict(ARGUMENTS, prompt=call["prompt"], generator=torch.Generator().manual_seed(call["generator"]))


def run_pass(pipe, counter, todo: list[dict], row: Row | None = None, own: dict | None = None):
    """(frames, seconds per call, computed steps per call: attention runs / 2 CFG branches). ``own``, for cachelab
    rows: gets cachelab's own account per call, "work" (the computed share of the block work, cachelab's unit timings)
    and "kept_peak" (the most bytes the policy kept at once)."""
    frames, seconds, computed = [], [], []
    with row.enable(pipe) if row else contextlib.nullcontext(Enabled()) as cache:
        for call in todo:
            cache.prepare(lambda: pipe(**call_kwargs(call)))
            counter.count = 0
            start = time.perf_counter()
            frames.append(pipe(**call_kwargs(call)).frames[0])
            seconds.append(time.perf_counter() - start)
            computed.append(counter.count / 2)
            if own is not None and isinstance(cache, CachelabEnabled):
                own.setdefault("work", []).append(metrics.work_fraction(cache.executor.trace))
                own.setdefault("kept_peak", []).append(cache.kept_peak().get("total", 0))
    return np.stack(frames), seconds, computed


def evaluate(pipe, counter, row: Row, reference: np.ndarray) -> dict:
    todo = calls()
    own = {}
    frames, _, computed = run_pass(pipe, counter, todo, row, own)
    uncached, cached = [], []
    for round_ in range(ROUNDS):
        for cache in (None, row) if round_ % 2 == 0 else (row, None):
            (cached if cache else uncached).append(sum(run_pass(pipe, counter, todo[:TIMED], cache)[1]))
    return dict(library=row.library, method=row.method, setting=row.setting, bound=row.bound,
                computed_steps=metrics.mean(computed), psnr=metrics.psnr(reference, frames),
                ssim=metrics.mean(metrics.ssim(reference.reshape(-1, *reference.shape[2:]),
                                               frames.reshape(-1, *frames.shape[2:]))),
                speedup=metrics.speedup(uncached, cached), timing_spread=max(max(t) / min(t) for t in (uncached, cached)),
                cachelab_work_steps=metrics.mean(own["work"]) * STEPS if own else None,
                kept_peak_mib=max(own["kept_peak"]) / 2**20 if own else None)


def along(points: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    """(steps, PSNR) points as a curve for harness.psnr_at, by computed steps."""
    points = sorted(points)
    return [x for x, _ in points], [y for _, y in points]


def verdicts(results: list[dict]) -> dict:
    deployable = [r for r in results if "psnr" in r and not r["bound"] and r["psnr"] >= SAFE_PSNR]
    best = max(deployable, key=lambda r: r["speedup"], default=None)
    curves: dict[str, list] = {}
    for r in results:
        if "psnr" in r and not r["bound"]:
            curves.setdefault(f"{r['library']} {r['method']}", []).append((r["computed_steps"], r["psnr"]))
    margins = {}
    for budget in BUDGETS:
        learned = psnr_at(along(curves.get("cachelab learned", [])), budget)
        peers = {name: psnr_at(along(points), budget) for name, points in curves.items() if not name.startswith("cachelab")}
        peers = {name: value for name, value in peers.items() if value is not None}
        peer = max(peers, key=peers.get, default=None)
        margins[budget] = dict(learned=learned, best_peer=peer, peer_psnr=peer and peers[peer],
                               margin=None if learned is None or peer is None else learned - peers[peer])
    return dict(best_deployable=best and {k: best[k] for k in ("library", "method", "setting", "speedup", "psnr")},
                margins=margins, stacks=against_work(results, STACK_PARTS, tokens=False),
                tokens=against_work(results, STACK_PARTS, tokens=True), lemica=lemica(results), easycache=easycache(results))


TOKEN_METHODS = ("toca", "duca", "clusca")


def is_stack(method: str) -> bool:
    return " + " in method and method.split(" + ")[1].split()[0] not in ("foca", "dmd", "hermite", "taylor", "TaylorSeer")


def is_token(method: str) -> bool:
    return any(name in method.split() for name in TOKEN_METHODS)


def work_curves(results: list[dict], keep) -> dict[str, tuple[list, list]]:
    """The deployable cachelab curves whose method ``keep`` accepts, as (cachelab's block work in steps, PSNR)."""
    found: dict[str, list] = {}
    for r in results:
        if r["library"] == "cachelab" and "psnr" in r and not r["bound"] and r.get("cachelab_work_steps") is not None \
                and keep(r["method"]):
            found.setdefault(f"cachelab {r['method']}", []).append((r["cachelab_work_steps"], r["psnr"]))
    return {name: along(points) for name, points in found.items()}


def against_work(results: list[dict], parts: dict, tokens: bool) -> dict:
    """Stacks (``tokens``: token rows) against the best single policy (non-token row) at their block work, as cachelab
    measures it (its unit timings: this harness has no hooks of its own on the video model)."""
    chosen = [r for r in results if r["library"] == "cachelab" and "psnr" in r
              and (is_token(r["method"]) if tokens else is_stack(r["method"]))]
    others = work_curves(results, (lambda m: not is_token(m)) if tokens else (lambda m: not is_stack(m)))
    compared = []
    for r in chosen:
        work = r["cachelab_work_steps"]
        values = {name: value for name, curve in others.items() if (value := psnr_at(curve, work)) is not None}
        best = max(values, key=values.get, default=None)
        compared.append(dict(method=r["method"], setting=r["setting"], work_steps=work, psnr=r["psnr"], best_other=best,
                             best_other_psnr=best and values[best], margin=best and r["psnr"] - values[best],
                             parts={part: values.get(part) for part in parts.get(r["method"], ())}))
    scored = [c for c in compared if c["margin"] is not None]
    top = max(scored, key=lambda c: c["margin"], default=None)
    return dict(rows=compared, best=top, verdict="PASS" if top and top["margin"] >= STACK_MARGIN else "MISS")


def lemica(results: list[dict]) -> list[dict]:
    """LeMiCa's minimax path against the learned plan and the oracle at equal budgets."""
    def psnr(method, budget):
        row = next((r for r in results if r["library"] == "cachelab" and r["method"] == method
                    and r["setting"] == f"budget {budget}" and "psnr" in r), None)
        return row and row["psnr"]

    return [dict(budget=b, lemica=psnr("lemica", b), learned=psnr("learned", b), oracle=psnr("oracle fitted history 2", b))
            for b in LEMICA_BUDGETS]


EASYCACHE_PEERS = ("cachelab first_block", "cachelab teacache", "cachelab seacache", "diffusers SeaCache")


def easycache(results: list[dict]) -> list[dict]:
    """EasyCache against first_block, teacache and SeaCache: their PSNR at its computed steps, their computed steps at
    its PSNR (linear between their rows)."""
    curves: dict[str, list] = {}
    for r in results:
        if "psnr" in r and f"{r['library']} {r['method']}" in EASYCACHE_PEERS:
            curves.setdefault(f"{r['library']} {r['method']}", []).append((r["computed_steps"], r["psnr"]))
    found = []
    for r in (r for r in results if r["library"] == "cachelab" and r["method"] == "easycache" and "psnr" in r):
        found.append(dict(setting=r["setting"], computed_steps=r["computed_steps"], psnr=r["psnr"], speedup=r["speedup"],
                          at_steps={n: psnr_at(along(p), r["computed_steps"]) for n, p in curves.items()},
                          at_psnr={n: psnr_at(along([(y, x) for x, y in p]), r["psnr"]) for n, p in curves.items()}))
    return found


def table(results: list[dict]) -> str:
    lines = ["| library | method | setting | computed /30 | cachelab work /30 | speedup | PSNR dB | SSIM | kept peak MiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['method']} | {r['setting']} | fails: {r['error']} | | | | | |")
            continue
        name = f"{r['method']} (bound)" if r["bound"] else r["method"]
        work, kept = r.get("cachelab_work_steps"), r.get("kept_peak_mib")
        lines.append(f"| {r['library']} | {name} | {r['setting']} | {r['computed_steps']:.1f} | "
                     f"{'' if work is None else f'{work:.1f}'} | {r['speedup']:.2f}x | {r['psnr']:.1f} | {r['ssim']:.4f} | "
                     f"{'' if kept is None else f'{kept:.2f}'} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one setting per method")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--model-dir", type=Path, default=zoo.path("video_digits"))
    parser.add_argument("--curves", default=None, help="only the rows ('library method knob value') matching this regular "
                        "expression")
    parser.add_argument("--merge", action="store_true", help="fold this run's rows into the results.json in --out (a row "
                        "of the same library, method and setting is replaced)")
    parser.add_argument("--fill-kept-peak", action="store_true", help="only add the kept peak and cachelab's work to the "
                        "cachelab rows of the results.json in --out that have none (their calls again), and rewrite frontier.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    loaded = zoo.load_pipeline(args.model_dir)
    pipe = WanPipeline(**loaded.components)  # cache-dit recognises pipelines by class name
    pipe.set_progress_bar_config(disable=True)
    calibration = json.loads((args.model_dir / CALIBRATION_FILE).read_text())["policies"]
    fitted = fit_missing(pipe, calibration, args.out)
    earlier = json.loads((args.out / "results.json").read_text()) if args.merge and (args.out / "results.json").exists() else None
    for r in earlier["results"] if earlier else ():
        if "psnr" in r and r["psnr"] is None:  # written as null: an identical output's PSNR
            r["psnr"] = float("inf")
    counter = StepCounter(pipe.transformer)
    if args.fill_kept_peak:
        return fill_kept_peak(pipe, counter, calibration, args)
    reference, _, _ = run_pass(pipe, counter, calls())
    results = []
    for row in grid(pipe, calibration["magcache"]["mag_ratios"], args.quick, args.curves):
        try:
            results.append(evaluate(pipe, counter, row, reference))
        except Exception as error:  # a peer that does not run on this model is a finding, not a crash
            traceback.print_exc()
            results.append(dict(library=row.library, method=row.method, setting=row.setting, bound=row.bound,
                                error=f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"))
        print(table(results[-1:]).splitlines()[-1], flush=True)
        save(args, earlier, results, started, fitted, done=False)
    results, found = save(args, earlier, results, started, fitted, done=True)
    print(table(results))
    print(describe(metrics_safe(found)))


def save(args, earlier, measured, started, fitted, done):
    """results.json and frontier.md in --out, the earlier run's rows beside this run's with --merge; after every row."""
    results = list(measured)
    runs = [dict(seconds=round(time.perf_counter() - started), curves=args.curves, fitted=fitted, complete=done)]
    if earlier:
        new = {(r["library"], r["method"], r["setting"]) for r in results}
        results = [r for r in earlier["results"] if (r["library"], r["method"], r["setting"]) not in new] + results
        runs = earlier.get("runs", [dict(note="the run before these (all rows then)")]) + runs
    found = verdicts(results)
    args.out.mkdir(parents=True, exist_ok=True)
    record = dict(steps=STEPS, prompts=PROMPTS, seeds=list(SEEDS), arguments={k: str(v) for k, v in ARGUMENTS.items()},
                  rounds=ROUNDS, timed_calls=TIMED, runs=runs, results=results, verdicts=found)
    (args.out / "results.json").write_text(json.dumps(metrics_safe(record), indent=1) + "\n")
    (args.out / "frontier.md").write_text(table(results) + "\n\n## Verdicts\n\n" + describe(metrics_safe(found)) + "\n")
    return results, found


def fill_kept_peak(pipe, counter, calibration: dict, args) -> None:
    """The kept peak and cachelab's own block work of the cachelab rows measured before those columns existed: each
    row's cache on for the quality pass's calls again (untimed; the decisions, hence the images, are the recorded ones)."""
    record = json.loads((args.out / "results.json").read_text())
    known = {(row.method, row.setting): row for row in grid(pipe, calibration["magcache"]["mag_ratios"], False)}
    for r in record["results"]:
        row = known.get((r["method"], r["setting"]))
        if r["library"] != "cachelab" or r.get("kept_peak_mib") is not None or row is None or "error" in r:
            continue
        own = {}
        _, _, computed = run_pass(pipe, counter, calls(), row, own)
        if abs(metrics.mean(computed) - r["computed_steps"]) > 1e-9:
            raise RuntimeError(f"{r['method']} {r['setting']}: {metrics.mean(computed)} computed steps, "
                               f"recorded {r['computed_steps']}")
        r["kept_peak_mib"], r["cachelab_work_steps"] = max(own["kept_peak"]) / 2**20, metrics.mean(own["work"]) * STEPS
        r["filled_later"] = "kept_peak_mib and cachelab_work_steps: the quality pass again, untimed (--fill-kept-peak)"
        print(f"{r['method']} {r['setting']}: kept peak {r['kept_peak_mib']:.2f} MiB, work {r['cachelab_work_steps']:.1f}", flush=True)
        (args.out / "results.json").write_text(json.dumps(metrics_safe(record), indent=1) + "\n")
    for r in record["results"]:
        if "psnr" in r and r["psnr"] is None:
            r["psnr"] = float("inf")
    record["verdicts"] = found = verdicts(record["results"])
    (args.out / "results.json").write_text(json.dumps(metrics_safe(record), indent=1) + "\n")
    (args.out / "frontier.md").write_text(table(record["results"]) + "\n\n## Verdicts\n\n" + describe(metrics_safe(found)) + "\n")


def fit_missing(pipe, calibration: dict, out: Path) -> dict:
    """LeMiCa's schedules and SenCache's sensitivities where the model's calibration has none: fitted now on one
    uncached generation of each prompt from a generator seeded CALIBRATION_SEED (disjoint from the evaluation seeds),
    applied to the transformer and written to ``out``/calibration_fitted.json. Returns what was fitted."""
    fitted = {}
    if (out / "calibration_fitted.json").exists():  # an earlier run's, on the same data
        for name, numbers in json.loads((out / "calibration_fitted.json").read_text())["policies"].items():
            if name not in calibration:
                use_calibration(pipe.transformer, name, **{k: v for k, v in numbers.items() if k != "data"})
                calibration[name] = fitted[name] = numbers
        print(f"using the fitted {', '.join(fitted)} of {out / 'calibration_fitted.json'}", flush=True)
    for name, fit in (("lemica", lambda g: {"schedules": {str(b): s for b, s in lemica_schedules(
                          pipe, PROMPTS, LEMICA_BUDGETS, generator=g, **ARGUMENTS).items()}}),
                      ("sencache", lambda g: {"sensitivities": sencache_sensitivities(pipe, PROMPTS, generator=g, **ARGUMENTS)})):
        if name in calibration:
            continue
        start = time.perf_counter()
        fitted[name] = fit(torch.Generator().manual_seed(CALIBRATION_SEED))
        use_calibration(pipe.transformer, name, **fitted[name])
        fitted[name]["data"] = (f"{len(PROMPTS)} prompts, one uncached generation each from one generator seeded "
                                f"{CALIBRATION_SEED}, {STEPS} steps ({time.perf_counter() - start:.0f} s, in this run)")
        print(f"fitted {name}: {fitted[name]['data']}", flush=True)
    if fitted and not (out / "calibration_fitted.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        (out / "calibration_fitted.json").write_text(json.dumps(dict(policies=fitted), indent=1) + "\n")
    return {name: numbers["data"] for name, numbers in fitted.items()}


def db(value) -> str:
    return "-" if value is None else f"{value:.1f} dB"


def describe(found: dict) -> str:
    """The verdicts as lines."""
    lines = []
    best = found["best_deployable"]
    lines.append(f"- best deployable at >= {SAFE_PSNR:g} dB: " + ("none" if best is None else
                 f"{best['library']} {best['method']} {best['setting']}, {best['speedup']:.2f}x at {best['psnr']:.1f} dB"))
    for budget, m in found["margins"].items():
        lines.append(f"- learned at {budget} computed steps: {db(m['learned'])}; best peer {m['best_peer']} {db(m['peer_psnr'])}")
    for key, goal in (("stacks", "a stack >= +1 dB over the best single policy"), ("tokens", "a token row >= +1 dB over the "
                                                                                            "best non-token row")):
        part = found[key]
        top = part["best"]
        lines.append(f"- {part['verdict']} {goal} at equal block work (cachelab's own work figure)" + (
            "" if top is None else f": best margin {top['margin']:+.1f} dB, {top['method']} {top['setting']}"))
        for c in part["rows"]:
            parts = "".join(f"; {p.removeprefix('cachelab ')} {db(v)}" for p, v in c["parts"].items())
            lines.append(f"  - {c['method']} {c['setting']}: work {c['work_steps']:.1f}, {c['psnr']:.1f} dB; best other "
                         f"{c['best_other']} {db(c['best_other_psnr'])}" + parts)
    lines.append("- LeMiCa against learned and the oracle (fitted history 2, a bound) at equal budgets:")
    lines += [f"  - budget {b['budget']}: lemica {db(b['lemica'])}, learned {db(b['learned'])}, oracle {db(b['oracle'])}"
              for b in found["lemica"]]
    lines.append("- EasyCache against first_block, teacache, SeaCache (their PSNR at its computed steps; their steps at its PSNR):")
    for c in found["easycache"]:
        at_steps = ", ".join(f"{n} {db(v)}" for n, v in c["at_steps"].items())
        at_psnr = ", ".join(f"{n} {'-' if v is None else f'{v:.1f}'}" for n, v in c["at_psnr"].items())
        lines.append(f"  - easycache {c['setting']}: {c['computed_steps']:.1f} steps, {c['psnr']:.1f} dB, {c['speedup']:.2f}x; "
                     f"at its steps: {at_steps}; steps for its PSNR: {at_psnr}")
    return "\n".join(lines)


def metrics_safe(value):
    """JSON without infinities (an identical output's PSNR is null)."""
    from cachelab.tracking.results import finite

    return finite(value)


if __name__ == "__main__":
    main()
