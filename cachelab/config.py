"""Config schemas of `python -m cachelab` and the checks run right after Hydra composes a config.

Every mistake is reported as one `ConfigError` line, before any model loads.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .launch import ParallelConfig, problems

DTYPES = ("float32", "float16", "bfloat16")
LOGGERS = ("wandb", "none")
WANDB_MODES = (None, "online", "offline", "disabled")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
CFG_DECISIONS = ("separate", "shared")


class ConfigError(ValueError):
    """A config mistake, told in one line."""


@dataclass
class MetricConfig:
    """A model's own quality metric: ``function(images, prompts) -> float | None``, stored in results as ``name``."""

    name: str = MISSING
    function: str = MISSING  # "package.module:function"
    format: str = "{:.4g}"  # how tables print it


@dataclass
class ModelConfig:
    name: str = MISSING
    family: Optional[str] = None
    hub_id: Optional[str] = None
    path: Optional[str] = None
    revision: Optional[str] = None
    dtype: str = "float32"
    steps: int = 28
    height: int = 1024
    width: int = 1024
    guidance: Optional[float] = None
    guidance_arg: str = "guidance_scale"
    num_frames: Optional[int] = None
    size_multiple: int = 16
    frame_multiple: Optional[int] = None
    threads: Optional[int] = None
    prompts: Optional[List[str]] = None
    metric: Optional[MetricConfig] = None
    call_kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    name: str = "none"
    project: str = "cachelab"
    entity: Optional[str] = None
    mode: Optional[str] = None
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)


@dataclass
class TimingConfig:
    prompts: int = 2
    repeats: int = 5
    warmup: int = 1


@dataclass
class CalibrateConfig:
    budgets: List[int] = field(default_factory=lambda: [4, 5, 6, 8, 10])
    history: int = 2
    refine: bool = False
    generations: int = 2
    seed: int = 1000
    out: str = "calibration.json"


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    policy: Dict[str, Any] = MISSING
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    name: str = "default"
    threshold: Optional[float] = None
    prompts: Optional[List[str]] = None
    prompt_file: Optional[str] = None
    calibration_file: Optional[str] = None
    num_prompts: Optional[int] = None
    seed: int = 0
    steps: int = 28
    height: int = 1024
    width: int = 1024
    guidance: Optional[float] = None
    num_frames: Optional[int] = None
    device: str = "auto"
    threads: Optional[int] = None
    timing: TimingConfig = field(default_factory=TimingConfig)
    calibrate: CalibrateConfig = field(default_factory=CalibrateConfig)
    reference_cache: bool = True
    cache_dir: str = "~/.cache/cachelab"
    save_images: bool = True
    quiet: bool = False
    verbose: bool = False
    compile: bool = False
    cfg_decisions: str = "separate"
    stack: List[Any] = field(default_factory=list)
    metrics: List[str] = field(default_factory=list)  # perceptual metrics per run (cachelab.perceptual): lpips, clip_score, ...
    clip_model: Optional[str] = None  # the CLIP model of clip_score / fid_clip (a folder or a hub id in the local cache)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    resume: Optional[str] = None


def config_dir() -> str:
    """The repo's `conf/` in a source checkout, else the copy a wheel installs as `cachelab/conf/`."""
    package = Path(__file__).resolve().parent
    checkout = package.parent
    if (checkout / "conf" / "config.yaml").is_file() and (checkout / "pyproject.toml").is_file():
        return str(checkout / "conf")
    return str(package / "conf")


def validate(cfg: DictConfig, *, check_weights: bool = True) -> RunConfig:
    """Types, ranges, the policy's knobs, the prompt file and (optionally) the model's weights."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
        run: RunConfig = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RunConfig), plain))
    except OmegaConfBaseException as error:
        key = f"{error.full_key}: " if getattr(error, "full_key", None) else ""
        raise ConfigError(f"invalid config value: {key}{str(error.msg).splitlines()[0]}") from None
    check_ranges(run)
    _settle_threshold(run)
    check_policy_fits_model(run, make_run_policy(run))
    check_metrics(run)
    if check_weights:
        from .models.loading import WeightsNotFound, locate

        try:
            locate(run.model)
        except WeightsNotFound as error:
            raise ConfigError(str(error)) from None
    return run


def metric_options(run: RunConfig):
    from .perceptual import Options

    return Options() if run.clip_model is None else Options(clip_model=run.clip_model)


def check_metrics(run: RunConfig) -> None:
    """The perceptual metrics a run asks for can be computed here (package, local weights), before any generation."""
    if not run.metrics:
        return
    from .perceptual import MetricUnavailable, check

    try:
        check(list(run.metrics), metric_options(run))
    except MetricUnavailable as error:
        raise ConfigError(f"metrics={list(run.metrics)}: {error}") from None


def check_ranges(run: RunConfig) -> None:
    model = run.model
    _require(run.threshold is None or run.threshold >= 0, f"threshold must be a number >= 0, got {run.threshold}")
    _require(run.steps >= 2, f"steps must be an integer >= 2, got {run.steps}")
    for side in ("height", "width"):
        value = getattr(run, side)
        _require(value > 0 and value % model.size_multiple == 0,
                 f"{side}={value} does not fit model={model.name}: it must be a positive multiple of "
                 f"{model.size_multiple} (VAE scale x patch size)")
    if run.num_frames is not None:
        step = model.frame_multiple or 1
        _require(run.num_frames >= 1 and (run.num_frames - 1) % step == 0,
                 f"num_frames={run.num_frames} does not fit model={model.name}: num_frames - 1 must be a multiple of {step}")
    _require(run.guidance is None or run.guidance >= 0, f"guidance must be >= 0 or null, got {run.guidance}")
    _require(run.threads is None or run.threads >= 1, f"threads must be >= 1 or null, got {run.threads}")
    _require(run.num_prompts is None or run.num_prompts >= 1, f"num_prompts must be >= 1, got {run.num_prompts}")
    _require(run.timing.prompts >= 1, f"timing.prompts must be >= 1, got {run.timing.prompts}")
    _require(run.timing.repeats >= 1, f"timing.repeats must be >= 1, got {run.timing.repeats}")
    _require(run.timing.warmup >= 0, f"timing.warmup must be >= 0, got {run.timing.warmup}")

    _require(model.dtype in DTYPES, f"model.dtype must be one of {', '.join(DTYPES)}, got {model.dtype!r}")
    check_device(run.device)
    for problem in problems(run.parallel, run.device):
        raise ConfigError(problem)
    _require(run.logger.name in LOGGERS, f"logger.name must be one of {', '.join(LOGGERS)}, got {run.logger.name!r}")
    _require(run.logger.mode in WANDB_MODES, f"logger.mode must be online, offline, disabled or null, got {run.logger.mode!r}")
    _require(run.calibration_file is None or Path(run.calibration_file).expanduser().is_file(),
             f"calibration_file={run.calibration_file}: no such file (python -m cachelab.calibrate writes one)")
    _require(run.prompts is None or len(run.prompts) > 0, "prompts must not be empty (null: the model's default prompts)")
    if run.prompt_file is not None:
        path = Path(run.prompt_file).expanduser()
        _require(path.is_file(), f"prompt_file={run.prompt_file}: no such file")
        _require(bool(read_prompt_file(path)), f"prompt_file={run.prompt_file}: no prompts in it (one prompt a line)")
    _require(run.prompts is not None or run.prompt_file is not None or model.prompts,
             f"model={model.name} has no default prompts: set prompts=[...] or prompt_file=...")
    _require(run.cfg_decisions in CFG_DECISIONS,
             f"cfg_decisions must be {' or '.join(CFG_DECISIONS)}, got {run.cfg_decisions!r}")
    _require(run.resume is None or Path(run.resume).expanduser().is_dir(),
             f"resume={run.resume}: no such sweep folder (give the folder of the sweep to finish, e.g. multirun/<name>/<time>)")
    if model.metric is not None:
        metric_function(model.metric)


def metric_function(metric: MetricConfig):
    """The callable `metric.function` names ("package.module:function")."""
    module, _, name = metric.function.partition(":")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"model.metric.function={metric.function}: cannot import it ({error}); "
                          "give it as package.module:function") from None
    _require(callable(function), f"model.metric.function={metric.function} is not callable")
    return function


def check_device(device: str) -> None:
    """`device` names a device this machine has (torch is imported only for cuda, mps and mistakes)."""
    if device in ("auto", "cpu"):
        return
    if DEVICE.fullmatch(device) is None:
        raise ConfigError(f"device={device} is not a device (auto, cpu, mps, cuda or cuda:N); "
                          f"{_working_devices()} here")
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            why = "" if torch.backends.mps.is_built() else " (this torch build has no MPS support)"
            raise ConfigError(f"device=mps: no MPS device is available{why}; {_working_devices()} here")
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        why = " (this torch build has no CUDA support)" if torch.version.cuda is None else ""
        raise ConfigError(f"device={device}: no CUDA device is available{why}; {_working_devices()} here")
    index = int(device.partition(":")[2] or 0)
    if index >= count:
        raise ConfigError(f"device={device}: there {'is' if count == 1 else 'are'} only {count} CUDA "
                          f"device{'' if count == 1 else 's'}; {_working_devices()} here")


def _working_devices() -> str:
    """'device=auto or device=cpu works', with the CUDA and MPS devices this machine has."""
    import torch

    devices = ["auto", "cpu"]
    if torch.cuda.is_available():
        devices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    names = [f"device={d}" for d in devices]
    return f"{', '.join(names[:-1])} or {names[-1]} works"


def check_calibrate(run: RunConfig) -> None:
    """The `calibrate` settings of `python -m cachelab.calibrate`."""
    calibrate = run.calibrate
    _require(all(1 <= b <= run.steps for b in calibrate.budgets) and calibrate.budgets,
             f"calibrate.budgets must be computed-step counts in 1..steps={run.steps}, got {calibrate.budgets}")
    _require(calibrate.history >= 1, f"calibrate.history must be >= 1, got {calibrate.history}")
    _require(calibrate.generations >= 1, f"calibrate.generations must be >= 1, got {calibrate.generations}")


def read_prompt_file(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _settle_threshold(run: RunConfig) -> None:
    """The top-level threshold replaces the policy's own; `run.threshold` ends as the one in effect
    (None for policies without a threshold)."""
    from .policies import registered_policies
    from .policies.configs import recorded_config

    _import_policy_module(run)
    name = run.policy.get("name")
    policies = registered_policies()
    _require(name in policies, f"policy.name={name!r} is not a registered policy; registered: {', '.join(sorted(policies))}")
    run.policy = recorded_config(policies[name], run.policy)
    if not policies[name].uses_threshold:
        run.threshold = None
    elif run.threshold is not None:
        run.policy["threshold"] = run.threshold
    else:
        run.threshold = run.policy.get("threshold")


def _import_policy_module(run: RunConfig) -> None:
    """`policy.module`: a module to import first, where a user's own policy registers itself."""
    module = run.policy.get("module")
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ConfigError(f"policy.module={module}: cannot import it ({error})") from None


def check_policy_fits_model(run: RunConfig, policy) -> None:
    """The numbers a calibrated policy needs (TeaCache's coefficients, a learned schedule) exist for the
    model (published for its family, shipped beside its weights, or in `calibration_file`), and the
    policy can run the run's number of steps."""
    if run.model.family is None:
        return
    from .calibration import numbers_for

    numbers = numbers_for(policy, run.model.family, shipped_calibration(run))
    try:
        policy.for_model(numbers, run.model.family).check_steps(run.steps)
    except ValueError as error:
        raise ConfigError(f"policy={run.policy['name']} on model={run.model.name}: {error}") from None


def shipped_calibration(run: RunConfig) -> dict:
    """Numbers measured on the run's model: `calibration.json` beside its weights, then `calibration_file`."""
    from .calibration import read_calibration
    from .models.loading import WeightsNotFound, locate

    try:
        numbers = read_calibration(locate(run.model))
    except WeightsNotFound:
        numbers = {}
    if run.calibration_file is not None:
        numbers = {**numbers, **read_calibration(Path(run.calibration_file).expanduser())}
    return numbers


def make_run_policy(run: RunConfig):
    """The policy the config describes (knob errors become one line)."""
    from .policies import Stack, make_policy

    knobs = {key: value for key, value in run.policy.items() if key not in ("name", "module") and value is not None}
    try:
        policy = make_policy(run.policy["name"], **knobs)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"policy={run.policy['name']}: {error}") from None
    if not run.stack:
        return policy
    try:
        return Stack([policy, *run.stack])
    except (TypeError, ValueError) as error:
        raise ConfigError(f"stack={list(run.stack)}: {error}") from None


def _require(condition: Any, message: str) -> None:
    if not condition:
        raise ConfigError(message)
