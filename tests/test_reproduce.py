"""`python -m cachelab.reproduce`: the same config gives the same images and decisions, and a committed
table that differs is caught; every experiment config composes, job by job."""

import itertools
import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from test_runner_fixtures import REPO, composed, run_cli

from cachelab import reproduce
from cachelab.ablations.results import differences
from cachelab.config import config_dir, validate

EXPERIMENTS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
# Two jobs of the FBC threshold sweep, made small: 2 prompts, 6 steps, one timed round (timings are noise here).
SMALL = ["threshold=0.1,0.3", "num_prompts=2", "steps=6", "timing.prompts=1", "timing.repeats=1", "timing.warmup=0"]


def jobs(experiment: str) -> list[list[str]]:
    """The overrides of every job of an experiment's sweep (the cartesian product of its params)."""
    params = composed([f"experiment={experiment}"], return_hydra_config=True).hydra.sweeper.params
    parsed = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    choices = [[f"{o.key_or_group}={value}" for value in o.sweep_string_iterator()] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("model", ["digits", "flux"])  # digits by default; each must run unchanged on a real model
def test_every_job_of_every_experiment_validates(experiment, model):
    for job in jobs(experiment):
        run = validate(composed([f"experiment={experiment}", *job, f"model={model}"]), check_weights=False)
        assert run.name == experiment and run.model.name == model


def test_an_experiment_reproduces_exactly_and_a_changed_value_is_caught(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CACHELAB_CACHE_DIR", str(tmp_path / "store"))
    folder = tmp_path / "fbc_threshold_sweep"  # the folder's name is the experiment's
    folder.mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    written = run_cli(["--write", str(folder), *SMALL, "--tolerance", "100", "--keep", str(first)], tmp_path,
                      module="cachelab.reproduce")
    assert written.returncode == 0, written.stdout + written.stderr
    committed = json.loads((folder / "results.json").read_text())
    assert [row["label"] for row in committed["rows"]] == ["threshold=0.1", "threshold=0.3"]
    assert committed["overrides"] == SMALL and "| threshold=0.3 | first_block |" in (folder / "README.md").read_text()

    again = run_cli([str(folder), "--keep", str(second)], tmp_path, module="cachelab.reproduce")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "fbc_threshold_sweep reproduces: 2 jobs" in again.stdout
    for job in ("0_threshold=0.1", "1_threshold=0.3"):
        images = sorted((first / job / "images").iterdir())
        assert len(images) == 6  # reference, cached and difference of 2 prompts
        for image in images:
            assert image.read_bytes() == (second / job / "images" / image.name).read_bytes(), image
        decisions = [line.split(",")[:5] for line in (first / job / "trace.csv").read_text().splitlines()]
        assert decisions == [line.split(",")[:5] for line in (second / job / "trace.csv").read_text().splitlines()]
    assert sum(line.split(",")[4] == "0" for line in (first / "1_threshold=0.3" / "trace.csv").read_text().splitlines()) > 0

    committed["rows"][1]["ssim"] += 1e-9
    (folder / "results.json").write_text(json.dumps(committed))
    assert reproduce.main([str(folder), "--from", str(second)]) == 1
    printed = capsys.readouterr().out
    assert "1 of 2 jobs differ" in printed and "1_threshold=0.3: ssim" in printed


def test_speedups_may_differ_within_the_tolerance_and_nothing_else():
    row = dict(job="0_threshold=0.1", decisions="ab12", computed_steps=10.5, psnr=35.25, ssim=0.99, speedup=2.0)
    assert differences([row], [{**row, "speedup": 2.5}], tolerance=0.3) == []
    assert differences([row], [{**row, "speedup": 2.7}], tolerance=0.3) == [
        "0_threshold=0.1: speedup 2.000 -> 2.700 (more than 30% apart)"]
    assert differences([row], [{**row, "decisions": "cd34"}], tolerance=0.3) == ["0_threshold=0.1: decisions 'ab12' -> 'cd34'"]
    assert differences([row], [], tolerance=0.3) == ["0_threshold=0.1: missing from the new run"]


def test_a_folder_that_names_no_experiment_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        reproduce.main([str(tmp_path / "no_such_experiment")])
    assert exit.value.code == 2
    error = capsys.readouterr().err
    assert "no conf/experiment/no_such_experiment.yaml (experiments: " in error and "fbc_threshold_sweep" in error


def test_the_quickest_committed_experiment_reproduces_exactly(capsys):
    """CI re-runs a committed table (fbc_threshold_sweep: 4 jobs, about 100 s on 2 CPU cores): a change that moves
    decisions, computed steps, PSNR, SSIM or the digit accuracy fails here. Speedups, timings on a shared machine,
    are not compared. Bit-identical images need the CPU and torch build the table was recorded with."""
    folder = REPO / "experiments" / "fbc_threshold_sweep"
    committed = json.loads((folder / "results.json").read_text())
    if committed["machine"] != reproduce.machine():
        pytest.skip(f"the table was recorded on {committed['machine']}, this is {reproduce.machine()}: "
                    "other kernels round differently")
    code = reproduce.main([str(folder), "--tolerance", "inf"])
    printed = capsys.readouterr()
    assert code == 0, (f"{printed.out}{printed.err[-3000:]}\nIf the change is meant to move the numerics, re-record every experiment "
                       "(python -m cachelab.reproduce --write experiments/<name>) and say why in the commit")
    assert "fbc_threshold_sweep reproduces: 4 jobs" in printed.out
