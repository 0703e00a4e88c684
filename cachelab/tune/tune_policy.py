"""One policy's tune: search its knob on the tuning set, then check the chosen setting on the held-out
validation set, walking to safer settings while it misses the target there; the setting kept (the first
that meets, else the safest tried) gets the full timed run of `python -m cachelab`."""

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

TIMED = ("psnr", "ssim", "computed_fraction", "computed_steps", "speedup", "ideal_speedup", "timing_noisy")


def tune_policy(name: str, policy_config: dict, plain: dict, settings: TuneSettings, tuning: TrialBench,
                validation: TrialBench, bars: dict[str, float], folder: Path, say: Callable[[str], None]) -> dict:
    """The policy's record for tune.json: its trials, the settings checked on the validation set in order,
    and `use`, the index of the one kept."""
    from ..policies import registered_policies

    cls = registered_policies()[name]
    knob = knob_for(cls, tuning.run.steps, tuning.blocks)
    if knob is None:
        raise ConfigError(f"policies: {name} has no knob that cachelab.tune knows (threshold, interval, budget)")
    record = dict(policy=name, bound=cls.bound, knob=knob.key if isinstance(knob, Knob) else list(knob.keys),
                  trials=[], validated=[], use=None, skipped=None)

    def evaluate(setting: dict) -> dict:
        figures = tuning.evaluate(name, setting, policy_config)
        figures["shortfall"] = targets.shortfall(figures, bars)
        if setting not in [trial["setting"] for trial in record["trials"]]:
            record["trials"].append({"setting": setting, **figures, "meets": figures["shortfall"] <= 0})
            stopped = "" if figures["prompts_done"] == len(tuning.calls) else f" (stopped after {figures['prompts_done']} prompts)"
            say(f"  {name} {setting_name(setting)}: {summary(figures, bars)} on the tuning set{stopped}")
        return figures

    def passes(figures: dict) -> bool:
        return figures["shortfall"] <= 0

    try:
        if isinstance(knob, Knob):
            knob = Knob(knob.key, tuple(v for v in knob.values if accepted(plain, policy_config, {knob.key: v})))
            candidates = bisect_knob(knob, evaluate, passes, settings.tune.fallbacks)
        else:
            candidates = optuna_search(knob, evaluate, passes, settings.tune.trials, settings.tune.fallbacks)
    except ValueError as error:  # it cannot run on this model (e.g. a signal of video latents only)
        record["skipped"] = f"does not run on model={tuning.run.model.name}: {error}"
        say(f"  {name}: skipped, it {record['skipped']}")
        return record
    if not candidates:
        say(f"  {name}: no setting met {targets.describe(bars)} on the tuning set")
        return record
    for index, setting in enumerate(candidates):
        quality = validation.evaluate(name, setting, policy_config)
        keep = targets.meets(quality, bars) or index == len(candidates) - 1
        row = dict(setting=setting, **{key: quality.get(key) for key in TIMED}, meets=targets.meets(quality, bars))
        shown = [*bars, *([metric.name] if (metric := tuning.run.model.metric) else [])]  # the model's metric too
        row.update({key: quality.get(key) for key in shown if key not in row})
        if keep:
            job = folder / name / setting_name(setting)
            checked = validation.passes_of(name, setting, policy_config)  # its cached pass, made by the check above
            result = validated(setting_run(plain, policy_config, setting), job, checked)
            row.update({key: result.get(key) for key in TIMED}, folder=str(job), meets=targets.meets(result, bars))
            row.update({key: result.get(key) for key in shown if key not in ("psnr", "ssim")})
        record["validated"].append(row)
        speed = f", {row['speedup']:.2f}x" if row["speedup"] is not None else ""
        say(f"  {name} {setting_name(setting)}: {summary(row, bars)}{speed} on the validation set")
        if keep:
            record["use"] = index
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
