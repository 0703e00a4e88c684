"""One policy's tune: search its knob on the tuning set, then validate the chosen setting on the held-out
set, walking to safer settings while the validated one misses the target."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import ConfigError
from . import targets
from .knobs import Knob, knob_for
from .search import bisect_knob, optuna_search
from .settings import TuneSettings
from .trials import TrialBench
from .validation import setting_name, setting_run, validated

FIGURES = ("psnr", "ssim", "computed_fraction", "computed_steps", "speedup", "ideal_speedup", "timing_noisy")


def tune_policy(name: str, policy_config: dict, plain: dict, settings: TuneSettings, bench: TrialBench,
                bars: dict[str, float], folder: Path, say: Callable[[str], None]) -> dict:
    """The policy's record for tune.json: its trials, the validated settings in order, and the one to use."""
    from ..policies import registered_policies

    cls = registered_policies()[name]
    knob = knob_for(name, cls.uses_threshold, bench.run.steps, bench.blocks)
    if knob is None:
        raise ConfigError(f"policies: {name} has no knob that cachelab.tune knows (threshold, interval, budget)")
    trials = []

    def evaluate(setting: dict) -> dict:
        figures = bench.evaluate(name, setting, policy_config)
        figures["shortfall"] = targets.shortfall(figures, bars)
        if setting not in [trial["setting"] for trial in trials]:
            trials.append({"setting": setting, **figures, "meets": figures["shortfall"] <= 0})
            say(f"  {name} {setting_name(setting)}: {summary(figures, bars)} on the tuning set")
        return figures

    def passes(figures: dict) -> bool:
        return figures["shortfall"] <= 0

    if isinstance(knob, Knob):
        knob = Knob(knob.key, tuple(v for v in knob.values if accepted(plain, policy_config, {knob.key: v})))
        candidates = bisect_knob(knob, evaluate, passes, settings.tune.fallbacks)
    else:
        candidates = optuna_search(knob, evaluate, passes, settings.tune.trials, settings.tune.fallbacks)
    record = dict(policy=name, bound=cls.bound, knob=knob.key if isinstance(knob, Knob) else "compute_first, compute_last, "
                  "warmup_steps, threshold", trials=trials, validated=[], use=None)
    if not candidates:
        say(f"  {name}: no setting met {targets.describe(bars)} on the tuning set")
        return record
    for setting in candidates:
        run = setting_run(plain, policy_config, setting)
        result = validated(run, folder / name / setting_name(setting))
        row = dict(setting=setting, **{key: result.get(key) for key in FIGURES}, folder=str(folder / name / setting_name(setting)))
        for metric in bars.keys() - {"psnr", "ssim"}:
            row[metric] = result.get(metric)
        if result.get("metric"):
            row["metric"] = result["metric"]
            row[result["metric"]["name"]] = result.get(result["metric"]["name"])
        row["meets"] = targets.meets(result, bars)
        record["validated"].append(row)
        record["use"] = len(record["validated"]) - 1
        say(f"  {name} {setting_name(setting)}: {summary(result, bars)}, {result['speedup']:.2f}x on the validation set")
        if row["meets"]:
            break
    return record


def accepted(plain: dict, policy_config: dict, setting: dict) -> bool:
    """Whether `python -m cachelab` takes the setting on this model (e.g. a learned budget with a calibrated plan)."""
    try:
        setting_run(plain, policy_config, setting)
    except ConfigError:
        return False
    return True


def summary(figures: dict, bars: dict[str, float]) -> str:
    shown = [f"{figures['psnr']:.1f} dB", f"SSIM {figures['ssim']:.4f}"]
    shown += [f"{name} {figures.get(name)}" for name in bars if name not in ("psnr", "ssim")]
    verdict = "meets" if targets.meets(figures, bars) else "misses"
    return f"{', '.join(shown)}, {figures['computed_fraction']:.0%} computed, {verdict}"
