"""`python -m cachelab [-m] [overrides]`: each job runs the uncached reference and the cached run.

Configs live in the repo's conf/ (see `python -m cachelab --help` and README.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, config_dir, validate
from .tracking import provenance, results_table, save_job, wandb_run, write_summary


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        run = validate(cfg)
    except ConfigError as error:
        print(f"cachelab: error: {error}", file=sys.stderr)
        sys.exit(2)
    from .runner import run_experiment  # after validation: imports torch and diffusers

    hydra_config = HydraConfig.get()
    output_dir = Path(hydra_config.runtime.output_dir)
    sweep = hydra_config.mode == RunMode.MULTIRUN
    config = OmegaConf.to_container(OmegaConf.structured(run))
    job = dict(policy=run.policy["name"], model=run.model.name, threshold=run.threshold, steps=run.steps)
    try:
        with wandb_run(run.logger, config=config, name=output_dir.name if sweep else f"{run.name}-{job['policy']}",
                       group=f"{run.name}-{output_dir.parent.name}" if sweep else None,
                       directory=output_dir, quiet=run.quiet) as tracker:
            outcome = run_experiment(run)
            result = {**outcome.result, "status": "done", "config": config, **provenance()}
            save_job(output_dir, result, outcome, run.save_images)
            if tracker is not None:
                from .tracking import log_outcome

                log_outcome(tracker, outcome.result, outcome)
    except Exception as error:
        save_job(output_dir, {**job, "status": "failed", "error": f"{type(error).__name__}: {error}", "config": config})
        raise
    finally:
        if sweep:
            write_summary(output_dir.parent)
    if not sweep:
        print(f"\n{results_table([reference_row(result), result])}\n\nresults: {output_dir}", flush=True)


def reference_row(result: dict) -> dict:
    return dict(policy="none (reference)", computed_steps=result["steps"], steps=result["steps"], speedup=1.0,
                ideal_speedup=1.0, psnr=float("inf"), ssim=1.0, digit_accuracy=result["reference_digit_accuracy"])


if __name__ == "__main__":
    main()
