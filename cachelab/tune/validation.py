"""Validation: the full `python -m cachelab` run (held-out prompts/seeds, timed) of a chosen setting.

Each validated setting is a job folder ``<tune folder>/validation/<policy>/<setting>/`` with its result.json;
a resumed tune reads a finished one of the identical config back.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from ..config import RunConfig, validate
from ..tracking.provenance import provenance
from ..tracking.results import RESULT_FILE, differing_keys, finished_config, read_result, save_job


def setting_run(plain: dict, policy_config: dict, setting: dict) -> RunConfig:
    """The run of `python -m cachelab` with the policy's config and `setting` on top (checked like the CLI's)."""
    policy = {**policy_config, **setting}
    return validate(OmegaConf.create({**plain, "policy": policy, "threshold": policy.get("threshold")}), check_weights=False)


def run_config(run: RunConfig) -> dict:
    config = OmegaConf.to_container(OmegaConf.structured(run))
    config.pop("resume")
    return config


def validated(run: RunConfig, folder: Path, cached=None) -> dict:
    """The result of running `run` (a finished one in `folder` of the same config is read back); ``cached``: the
    run's cached passes, already made by the validation check of the same setting."""
    from ..runner import run_experiment

    config = run_config(run)
    before = finished_config(folder)
    if before is not None and not differing_keys(config, before):
        return read_result(folder / RESULT_FILE)
    outcome = run_experiment(run, cached)
    result = {**outcome.result, "status": "done", "config": config, **provenance()}
    save_job(folder, result, outcome, save_images=False)
    return read_result(folder / RESULT_FILE)


def setting_name(setting: dict) -> str:
    """'threshold=0.2' or 'compute_first=1,compute_last=0,threshold=0.12,warmup_steps=0'."""
    return ",".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in sorted(setting.items()))
