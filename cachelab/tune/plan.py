"""What a tune covers: which policies, each one's config, the validation run and the disjoint tuning run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..config import ConfigError, RunConfig, config_dir
from .settings import TuneSettings
from .validation import setting_run


def deployable_policies() -> list[str]:
    """cachelab's own policies that cache and need no rehearsal of the very generation (not `none`, not bounds)."""
    from ..policies import registered_policies

    return [name for name, cls in registered_policies().items()
            if cls.__module__.startswith("cachelab.policies.") and cls.caches and not cls.bound and not cls.rehearses]


def chosen_policies(plain: dict, settings: TuneSettings) -> list[str]:
    from ..policies import registered_policies

    if settings.policies is not None and plain.get("policy") is not None:
        raise ConfigError("give policy=<name> or policies=[...], not both")
    names = settings.policies if settings.policies is not None else (
        [plain["policy"]["name"]] if plain.get("policy") is not None else deployable_policies())
    if not names:
        raise ConfigError("policies must name at least one policy")
    known = registered_policies()
    for name in names:
        if not isinstance(name, str) or name not in known:
            raise ConfigError(f"policies: {name!r} is not a registered policy; deployable ones: {', '.join(deployable_policies())}")
        if name == "none":
            raise ConfigError("policies: none always computes; there is no setting of it to tune")
    return list(dict.fromkeys(names))


def policy_config(name: str, plain: dict) -> dict:
    """The policy's config: policy=<name> with the user's policy.* overrides, else what policy=<name> composes
    from (its conf/policy/<name>.yaml, else the config generated from its dataclass)."""
    from ..policies import registered_policies
    from ..policies.configs import policy_config as composed_from

    chosen = plain.get("policy")
    if chosen is not None and chosen.get("name") == name:
        return dict(chosen)
    config = composed_from(name, config_dir(), registered_policies().get(name))
    if config is None:
        raise ConfigError(f"policy={name} has no config: neither {Path(config_dir()) / 'policy' / f'{name}.yaml'} "
                          "nor fields of a dataclass to generate one from")
    return config


def tuning_run(plain: dict, settings: TuneSettings, policy: dict) -> RunConfig:
    """The run the trials use: the tuning prompts (default: the run's) with seeds from tune.seed."""
    options = settings.tune
    changes = dict(seed=options.seed, num_prompts=options.num_prompts if options.num_prompts is not None else plain.get("num_prompts"))
    if options.prompts is not None:
        changes.update(prompts=list(options.prompts), prompt_file=None)
    return setting_run({**plain, **changes}, policy, {})


def check_disjoint(tuning: RunConfig, validation: RunConfig) -> None:
    """No (prompt, seed) pair of the tuning set is one of the validation set."""
    from ..runner import run_prompts

    def pairs(run):
        return {(prompt, run.seed + i) for i, prompt in enumerate(run_prompts(run))}

    shared = pairs(tuning) & pairs(validation)
    if shared:
        prompt, seed = sorted(shared)[0]
        raise ConfigError(f"tune.seed={tuning.seed} makes {len(shared)} tuning generations equal to validation ones "
                          f"(e.g. {prompt!r} with seed {seed}); choose a tune.seed apart from seed={validation.seed}")


def check_metric_target(settings: TuneSettings, run: RunConfig) -> None:
    if settings.target.metric is not None and run.model.metric is None:
        raise ConfigError(f"target.metric: model={run.model.name} has no metric of its own (model.metric); "
                          "use target.psnr or target.ssim")


def fitting(names: list[str], configs: dict[str, dict], plain: dict, explicit: bool) -> tuple[list[str], dict[str, str]]:
    """(the policies that run on the model, {policy: why not} for the others). A policy named on the command
    line that does not fit is an error; one of the default list is left out with its reason."""
    from ..policies import registered_policies
    from .knobs import Space, knob_for

    setting_run(plain, {"name": "none"}, {})  # the run keys themselves, apart from any policy
    fit, unfit = [], {}
    for name in names:
        try:
            knob = knob_for(registered_policies()[name], steps=28, blocks=1)
            if knob is None:
                raise ConfigError(f"policy={name} has no knob that cachelab.tune knows (a threshold, interval or budget)")
            if isinstance(knob, Space) and importlib.util.find_spec("optuna") is None:
                raise ConfigError(f"policy={name} has several knobs, searched with Optuna: pip install -e '.[tune]'")
            setting_run(plain, configs[name], {})
            fit.append(name)
        except ConfigError as error:
            if explicit:
                raise
            unfit[name] = f"does not fit: {error}"
    if not fit:
        raise ConfigError(f"no policy fits model={plain['model']['name']}: " + "; ".join(unfit.values()))
    return fit, unfit
