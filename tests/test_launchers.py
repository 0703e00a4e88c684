"""Sweeps through Hydra's launcher plugins (the `launchers` extra): the same job folders, results and summary as with
the basic launcher; hydra/launcher=slurm submits one job array with cachelab's Slurm settings."""

import csv
import json
import os
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from test_runner_fixtures import run_cli

from cachelab.config import config_dir

TINY_SWEEP = ["-m", "threshold=0.1,0.3", "num_prompts=1", "steps=4", "timing.prompts=1", "timing.repeats=1",
              "timing.warmup=0", "logger=none", "save_images=false", "quiet=true"]


@pytest.mark.parametrize("launcher, launched", [
    (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "Joblib.Parallel(n_jobs=2,backend=loky"),
    (["hydra/launcher=submitit_local"], "Submitit 'local' sweep output dir"),
])
def test_a_sweep_through_a_launcher_plugin_names_and_summarises_its_jobs(tmp_path, launcher, launched):
    sweep = tmp_path / "sweep"
    done = run_cli([*TINY_SWEEP, *launcher, f"cache_dir={tmp_path}/store", f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert launched in done.stdout + done.stderr
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "result.json").is_file())
    assert jobs == ["0_threshold=0.1", "1_threshold=0.3"]
    results = [json.loads((sweep / job / "result.json").read_text()) for job in jobs]
    assert [(r["status"], r["threshold"], r["model"]) for r in results] == [("done", 0.1, "digits"), ("done", 0.3, "digits")]
    with open(sweep / "summary.csv", newline="") as table:
        assert [(row["job"], row["status"]) for row in csv.DictReader(table)] == [(job, "done") for job in jobs]
    assert "| 1_threshold=0.3" in done.stdout


def test_the_slurm_launcher_submits_one_array_with_cachelabs_settings(tmp_path):
    # a stand-in sbatch keeps the script it is given and refuses it; submitit only checks that srun exists
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "no cluster here" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    done = run_cli(["-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=1",
                    "threshold=0.1,0.3", "logger=none", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path,
                   PATH=f"{bin_dir}:{os.environ['PATH']}")
    assert done.returncode != 0 and "no cluster here" in done.stderr
    flags = {line.removeprefix("#SBATCH ") for line in (tmp_path / "submitted.sh").read_text().splitlines()
             if line.startswith("#SBATCH ")}
    assert {"--array=0-1%1", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--mem=64GB", "--time=120",
            "--job-name=cachelab"} <= flags


def test_cachelabs_launcher_configs_do_not_shadow_a_plugins_config():
    # a file named like a plugin's config would be merged into it (deprecated) or, extending it, include itself
    Plugins.instance()  # registers the installed plugins' configs
    plugin_configs = set(ConfigStore.instance().list("hydra/launcher"))
    assert {"joblib.yaml", "submitit_local.yaml", "submitit_slurm.yaml"} <= plugin_configs
    ours = {path.name for path in (Path(config_dir()) / "hydra" / "launcher").glob("*.yaml")}
    assert ours and not ours & plugin_configs

