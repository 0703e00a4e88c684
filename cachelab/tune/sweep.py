"""`python -m cachelab.tune -m policy=a,b,... hydra/launcher=joblib|slurm`: one job per policy through any
Hydra launcher; at the end, one table and tune.json over every job's tune.json."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..tracking.sweep import SweepSummary, _job_number
from .report import closing, with_table, write_tune_json


def merged(tunes: list[dict], seconds: float) -> dict:
    """One tune of the jobs' tunes: their policies' records together, the table over all of them."""
    tuning = {**tunes[0]["tuning"], "trials_run": sum(tune["tuning"]["trials_run"] for tune in tunes)}
    return with_table({**tunes[0], "command": [tune["command"] for tune in tunes], "tuning": tuning, "seconds": seconds,
                       "policies": [record for tune in tunes for record in tune["policies"]]})


class TuneSweepSummary(SweepSummary):
    """Names the job folders as cachelab's sweeps do; at the end merges the jobs' tune.json."""

    def on_multirun_start(self, config, **kwargs) -> None:
        self.start = time.perf_counter()
        super().on_multirun_start(config, **kwargs)

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        paths = sorted(sweep_dir.glob("*/tune.json"), key=lambda path: _job_number(path.parent.name))
        if not paths:
            return
        tune = merged([json.loads(path.read_text()) for path in paths], time.perf_counter() - self.start)
        write_tune_json(sweep_dir / "tune.json", tune)
        print(f"\n{closing(tune)}\ntune.json: {sweep_dir / 'tune.json'}", flush=True)
