"""`python -m cachelab [-m] [overrides]`: each job runs the uncached reference and the cached run.

Configs live in the repo's conf/ (see `python -m cachelab --help` and docs/).
"""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from . import launch
from .config import ConfigError, config_dir, validate
from .config_argument import expand_config_argument
from .config_choices import check_group_choices
from .notices import silence_notices
from .tracking.provenance import provenance
from .tracking.results import differing_keys, finished_config, save_job
from .tracking.sweep import write_summary
from .tracking.tables import reference_row, results_table
from .tracking.wandb_run import log_outcome, wandb_run

#: How long a rank other than 0 that found a config error waits before it exits (torchrun ends it sooner, when
#: rank 0 has printed the error and exited).
OTHER_RANKS_ERROR_WAIT_S = 10


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run = validate(cfg)
    except ConfigError as error:
        if launch.is_writer():  # every rank finds the same error: one line
            print(f"cachelab: error: {error}", file=sys.stderr)
        else:  # let the writer print it: torchrun stops the other ranks as soon as one of them exits
            time.sleep(OTHER_RANKS_ERROR_WAIT_S)
        sys.exit(2)
    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    sweep = hydra_config.mode == RunMode.MULTIRUN
    config = OmegaConf.to_container(OmegaConf.structured(run))
    config.pop("resume")  # a resumed job is the same job
    launch.start(run.parallel, run.device)
    if not launch.is_writer():
        return _follow_rank_zero(run, sweep)
    before = finished_config(output_dir) if sweep else None
    if launch.rank_zero(before is not None):
        if differing := differing_keys(config, before):
            print(f"cachelab: error: {output_dir} holds the finished result of another config ({', '.join(differing)} "
                  "differ); give the sweep a new folder (hydra.sweep.dir=...) instead of overwriting it", file=sys.stderr)
            sys.exit(2)
        print(f"{output_dir.name}: finished before (same config), skipped", flush=True)
        write_summary(output_dir.parent)
        return
    if not run.verbose:
        silence_notices()
    from .runner import run_experiment  # after validation: imports torch and diffusers

    job = dict(policy=run.policy["name"], model=run.model.name, threshold=run.threshold, steps=run.steps)
    try:
        with wandb_run(run.logger, config=config, name=output_dir.name if sweep else f"{run.name}-{job['policy']}",
                       group=f"{run.name}-{output_dir.parent.name}" if sweep else None,
                       directory=output_dir, quiet=run.quiet, verbose=run.verbose) as tracker:
            outcome = run_experiment(run)
            result = {**outcome.result, "status": "done", "config": config, **provenance()}
            save_job(output_dir, result, outcome, run.save_images)
            if tracker is not None:
                log_outcome(tracker, outcome.result, outcome)
    except ConfigError as error:  # found once the model is loaded (a policy that does not fit its blocks)
        save_job(output_dir, {**job, "status": "failed", "error": str(error), "config": config})
        print(f"cachelab: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:
        save_job(output_dir, {**job, "status": "failed", "error": f"{type(error).__name__}: {error}", "config": config})
        raise
    finally:
        if sweep:
            write_summary(output_dir.parent)
    if not sweep:
        print(f"\n{results_table([reference_row(result), result])}\n\nresults: {output_dir}", flush=True)


def _follow_rank_zero(run, sweep: bool) -> None:
    """A rank other than 0 under context parallelism: the same generations as rank 0, writing and printing
    nothing (rank 0 prints config errors; other errors print on the rank they happen on)."""
    if launch.rank_zero(False) and sweep:  # rank 0 found this job finished before
        return
    silence_notices()
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    run.quiet = True
    from .runner import run_experiment

    try:
        run_experiment(run)
    except ConfigError:
        sys.exit(2)


if __name__ == "__main__":
    try:
        sys.argv[1:] = expand_config_argument(sys.argv[1:])
        check_group_choices(sys.argv[1:], config_dir(), "config")
    except ConfigError as error:
        if launch.is_writer():
            print(f"cachelab: error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv.extend(launch.hydra_overrides_for_other_ranks(sys.argv[1:]))
    main()
