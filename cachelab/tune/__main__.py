"""``python -m cachelab.tune target.psnr=<dB> [target.ssim=..] [target.metric=..] [policy=<name> | policies=[..]]
[run keys ...]``: for each policy, the fastest setting that meets every target, searched on tuning prompts/seeds
(tune.*) and validated on the run's own prompts/seeds; prints the table and the command of each setting."""

from __future__ import annotations

import datetime
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from ..config import ConfigError, config_dir
from ..config_choices import check_group_choices
from ..tracking import sweep  # noqa: F401  (registers the resolvers of hydra.run.dir)
from . import plan, targets
from .settings import split
from .validation import run_config, setting_run


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="tune")
def main(cfg) -> None:
    start = time.perf_counter()
    try:
        plain, settings = split(cfg)
        wanted = [name for name in targets.PERCEPTUAL if getattr(settings.target, name) is not None]
        plain["metrics"] = sorted(set(plain.get("metrics") or []) | set(wanted))  # computed for the targets on them
        chosen = plan.chosen_policies(plain, settings)
        configs = {name: plan.policy_config(name, plain) for name in chosen}
        names, unfit = plan.fitting(chosen, configs, plain, explicit=settings.policies is not None or plain.get("policy") is not None)
        validation = setting_run(plain, configs[names[0]], {})
        tuning = plan.tuning_run(plain, settings, configs[names[0]])
        plan.check_disjoint(tuning, validation)
        plan.check_metric_target(settings, validation)
        from ..models.loading import WeightsNotFound, locate

        try:
            locate(validation.model)
        except WeightsNotFound as error:
            raise ConfigError(str(error)) from None
    except ConfigError as error:
        print(f"cachelab.tune: error: {error}", file=sys.stderr)
        sys.exit(2)
    if not validation.verbose:
        from ..notices import silence_notices

        silence_notices()
    hydra_config = HydraConfig.get()
    out = Path(hydra_config.runtime.output_dir)
    origin = " ".join(["python -m cachelab.tune", *hydra_config.overrides.task])
    metric = validation.model.metric
    bars = targets.bars(settings.target, metric.name if metric else None)

    def say(line: str) -> None:
        if not validation.quiet:
            print(line, flush=True)

    from ..runner import cpu_threads, run_prompts
    from ..tracking.wandb_run import wandb_run
    from .report import closing, with_table, write_config, write_tune_json
    from .trials import TrialBench
    from .tune_policy import tune_policy
    from .wandb_log import log_tune

    say(f"tuning {', '.join(names)} on model={validation.model.name} for {targets.describe(bars)}; output: {out}")
    with wandb_run(validation.logger, config=dict(origin=origin, target=bars, policies=names), name=f"tune-{validation.model.name}",
                   group=None, directory=out, quiet=validation.quiet, verbose=validation.verbose) as tracker:
        with cpu_threads(validation.threads):
            bench = TrialBench(tuning, out / "trials", bars, settings.tune.batch)
            held_out = TrialBench(validation, out / "validation_checks", {})
            records = []
            for name in chosen:
                if name in unfit:
                    records.append(dict(policy=name, bound=False, trials=[], validated=[], use=None, skipped=unfit[name]))
                    continue
                try:
                    records.append(tune_policy(name, configs[name], plain, settings, bench, held_out, bars, out / "validation", say))
                except ConfigError as error:
                    print(f"cachelab.tune: error: {error}", file=sys.stderr)
                    sys.exit(2)
        for record in records:
            if record["use"] is not None:
                row = record["validated"][record["use"]]
                config = run_config(setting_run(plain, configs[record["policy"]], row["setting"]))
                record["config"] = str(out / "configs" / f"{record['policy']}.yaml")
                record["command"] = write_config(out / "configs", record, config, origin)
        seconds = time.perf_counter() - start
        tune = dict(command=origin, date=datetime.date.today().isoformat(), model=validation.model.name, target=bars,
                    metric=dict(name=metric.name, format=metric.format) if metric else None,
                    tuning=dict(prompts=bench.prompts, seed=tuning.seed, trials_run=bench.trials_run),
                    validation=dict(prompts=run_prompts(validation), seed=validation.seed),
                    seconds=seconds, policies=records)
        tune = with_table(tune)
        write_tune_json(out / "tune.json", tune)
        if tracker is not None:
            log_tune(tracker, tune)
    print(f"\n{closing(tune)}\ntune.json: {out / 'tune.json'}", flush=True)


if __name__ == "__main__":
    try:
        check_group_choices(sys.argv[1:], config_dir(), "tune")
    except ConfigError as error:
        print(f"cachelab.tune: error: {error}", file=sys.stderr)
        sys.exit(2)
    main()
