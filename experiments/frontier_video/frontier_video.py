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
from harness import ENABLE, Enabled, Row, cache_dit_dbcache, psnr_at  # noqa: E402

from cachelab import metrics, zoo  # noqa: E402
from cachelab.calibration import CALIBRATION_FILE  # noqa: E402
from cachelab.policies import (  # noqa: E402
    DualBlockCache,
    FirstBlockCache,
    FixedInterval,
    Learned,
    MagCache,
    Oracle,
    SeaCache,
    TaylorSeer,
    TeaCache,
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


def grid(pipe, ratios: list[float], quick: bool) -> list[Row]:
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
    ]
    rows = []
    for library, method, knob, make, values in methods:
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


def run_pass(pipe, counter, todo: list[dict], row: Row | None = None):
    """(frames, seconds per call, computed steps per call: attention runs / 2 CFG branches)."""
    frames, seconds, computed = [], [], []
    with row.enable(pipe) if row else contextlib.nullcontext(Enabled()) as cache:
        for call in todo:
            cache.prepare(lambda: pipe(**call_kwargs(call)))
            counter.count = 0
            start = time.perf_counter()
            frames.append(pipe(**call_kwargs(call)).frames[0])
            seconds.append(time.perf_counter() - start)
            computed.append(counter.count / 2)
    return np.stack(frames), seconds, computed


def evaluate(pipe, counter, row: Row, reference: np.ndarray) -> dict:
    todo = calls()
    frames, _, computed = run_pass(pipe, counter, todo, row)
    uncached, cached = [], []
    for round_ in range(ROUNDS):
        for cache in (None, row) if round_ % 2 == 0 else (row, None):
            (cached if cache else uncached).append(sum(run_pass(pipe, counter, todo[:TIMED], cache)[1]))
    return dict(library=row.library, method=row.method, setting=row.setting, bound=row.bound,
                computed_steps=metrics.mean(computed), psnr=metrics.psnr(reference, frames),
                ssim=metrics.mean(metrics.ssim(reference.reshape(-1, *reference.shape[2:]),
                                               frames.reshape(-1, *frames.shape[2:]))),
                speedup=metrics.speedup(uncached, cached), timing_spread=max(max(t) / min(t) for t in (uncached, cached)))


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
                margins=margins)


def table(results: list[dict]) -> str:
    lines = ["| library | method | setting | computed /30 | speedup | PSNR dB | SSIM |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['library']} | {r['method']} | {r['setting']} | fails: {r['error']} | | | |")
            continue
        name = f"{r['method']} (bound)" if r["bound"] else r["method"]
        lines.append(f"| {r['library']} | {name} | {r['setting']} | {r['computed_steps']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['psnr']:.1f} | {r['ssim']:.4f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one setting per method")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--model-dir", type=Path, default=zoo.path("video_digits"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    loaded = zoo.load_pipeline(args.model_dir)
    pipe = WanPipeline(**loaded.components)  # cache-dit recognises pipelines by class name
    pipe.set_progress_bar_config(disable=True)
    calibration = json.loads((args.model_dir / CALIBRATION_FILE).read_text())["policies"]
    counter = StepCounter(pipe.transformer)
    reference, _, _ = run_pass(pipe, counter, calls())
    results = []
    for row in grid(pipe, calibration["magcache"]["mag_ratios"], args.quick):
        try:
            results.append(evaluate(pipe, counter, row, reference))
        except Exception as error:  # a peer that does not run on this model is a finding, not a crash
            traceback.print_exc()
            results.append(dict(library=row.library, method=row.method, setting=row.setting, bound=row.bound,
                                error=f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    found = verdicts(results)
    args.out.mkdir(parents=True, exist_ok=True)
    record = dict(steps=STEPS, prompts=PROMPTS, seeds=list(SEEDS), arguments={k: str(v) for k, v in ARGUMENTS.items()},
                  rounds=ROUNDS, timed_calls=TIMED, results=results, verdicts=found)
    (args.out / "results.json").write_text(json.dumps(metrics_safe(record), indent=1) + "\n")
    (args.out / "frontier.md").write_text(table(results) + "\n\n" + json.dumps(metrics_safe(found), indent=1) + "\n")
    print(table(results))
    print(json.dumps(metrics_safe(found), indent=1))


def metrics_safe(value):
    """JSON without infinities (an identical output's PSNR is null)."""
    from cachelab.tracking.results import finite

    return finite(value)


if __name__ == "__main__":
    main()
