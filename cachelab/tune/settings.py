"""The tune's own config keys (`target.*`, `policies`, `tune.*`), apart from the run keys of `python -m cachelab`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config import ConfigError

TUNE_KEYS = ("target", "policies", "tune")


@dataclass
class Target:
    psnr: Optional[float] = None    # dB, at least
    ssim: Optional[float] = None    # at least
    metric: Optional[float] = None  # the model's own metric (model.metric), at least
    kept_mib: Optional[float] = None  # the memory the policy's kept outputs may hold at once (MiB), at most
    lpips: Optional[float] = None  # LPIPS against the uncached images (cachelab.perceptual), at most
    clip_score: Optional[float] = None  # CLIP score against the prompt, at least


@dataclass
class TuneOptions:
    prompts: Optional[List[str]] = None  # null: the run's prompts
    num_prompts: Optional[int] = None
    seed: int = 2000                     # tuning prompt i uses seed + i; must not meet a validation (prompt, seed)
    trials: int = 12                     # trials for a policy with several knobs (Optuna)
    batch: Optional[int] = None          # tuning prompts per call, policies reading no signal; null: all on a CPU, else 1
    fallbacks: int = 2                   # safer settings validated at most when the chosen one misses on held-out data


@dataclass
class TuneSettings:
    target: Target = field(default_factory=Target)
    policies: Optional[List[str]] = None
    tune: TuneOptions = field(default_factory=TuneOptions)


def split(cfg: DictConfig) -> tuple[dict, TuneSettings]:
    """(the run keys as a plain dict, the tune's settings checked for types)."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    own = {key: plain.pop(key) for key in TUNE_KEYS if key in plain}
    try:
        settings: TuneSettings = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TuneSettings), own))
    except OmegaConfBaseException as error:
        key = f"{error.full_key}: " if getattr(error, "full_key", None) else ""
        raise ConfigError(f"invalid config value: {key}{str(error.msg).splitlines()[0]}") from None
    check(settings)
    return plain, settings


def check(settings: TuneSettings) -> None:
    target, options = settings.target, settings.tune
    if all(value is None for value in (target.psnr, target.ssim, target.metric, target.lpips, target.clip_score)):
        raise ConfigError("give a quality target: target.psnr=<dB>, target.ssim=<0..1>, target.metric=<value>, "
                          "target.lpips=<at most> or target.clip_score=<at least> (several: all must hold)")
    if target.ssim is not None and not 0 < target.ssim <= 1:
        raise ConfigError(f"target.ssim must be in (0, 1], got {target.ssim}")
    if target.psnr is not None and target.psnr <= 0:
        raise ConfigError(f"target.psnr must be a number of dB > 0, got {target.psnr}")
    if options.trials < 1 or options.fallbacks < 0:
        raise ConfigError(f"tune.trials must be >= 1 and tune.fallbacks >= 0, got {options.trials} and {options.fallbacks}")
    if options.batch is not None and options.batch < 1:
        raise ConfigError(f"tune.batch must be >= 1 (null: every tuning prompt in one call on a CPU), got {options.batch}")
    if options.num_prompts is not None and options.num_prompts < 1:
        raise ConfigError(f"tune.num_prompts must be >= 1, got {options.num_prompts}")
    if options.prompts is not None and not options.prompts:
        raise ConfigError("tune.prompts must not be empty (null: the run's prompts)")
