"""`python -m cachelab` in a subprocess: bad input, the documented command, a 2x2 sweep with W&B."""

import json
import re
import time

import pytest
from test_runner_fixtures import REPO, run_cli, saved_tiny_flux, tiny_overrides
from test_tracking import offline_run


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return saved_tiny_flux(tmp_path_factory)


@pytest.mark.parametrize("override, message", [
    ("threshold=abc", "cachelab: error: invalid config value: threshold: Value 'abc'"),
    ("threshold=-1", "cachelab: error: threshold must be a number >= 0, got -1"),
    ("steps=1", "cachelab: error: steps must be an integer >= 2, got 1"),
    ("height=30", "cachelab: error: height=30 does not fit model=digits: it must be a positive multiple of 4"),
    ("prompt_file=missing.txt", "cachelab: error: prompt_file=missing.txt: no such file"),
    ("policy.interval=0 policy=fixed_interval", "cachelab: error: policy=fixed_interval: interval must be an integer >= 1"),
    ("policy=teacache model=cogview4",
     "cachelab: error: policy=teacache on model=cogview4: TeaCache has no published coefficients for the cogview4"),
    ("policy=magcache model=wan", "cachelab: error: policy=magcache on model=wan: MagCache has no published magnitude"),
    ("policy=oracle policy.budget=0", "cachelab: error: policy=oracle: budget must be an integer >= 1, got 0"),
    ("policy=learned policy.budget=9", "cachelab: error: policy=learned on model=digits: no learned plan for budget=9"),
    ("policy=learned model=flux", "cachelab: error: policy=learned on model=flux: the learned policy has no calibrated plans"),
    ("policy=oracle policy.budget=30", "cachelab: error: policy=oracle on model=digits: budget=30 is more than the 28 steps"),
    ("policy=learned steps=20", "cachelab: error: policy=learned on model=digits: the learned plan for budget=6 was calibrated"),
    ("policy=taylorseer policy.order=-1", "cachelab: error: policy=taylorseer: order must be an integer >= 0, got -1"),
    ("calibration_file=missing.json", "cachelab: error: calibration_file=missing.json: no such file"),
])
def test_bad_input_fails_with_one_line(tmp_path, override, message):
    done = run_cli([*override.split(), "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message)


@pytest.mark.parametrize("module, arguments, message", [
    ("cachelab", ["policy=first_blok"], "cachelab: error: policy=first_blok: no such policy (nearest: first_block); the choices are "),
    ("cachelab", ["-m", "policy=first_block,teacahe"], "cachelab: error: policy=teacahe: no such policy (nearest: teacache)"),
    ("cachelab", ["model=flxu"], "cachelab: error: model=flxu: no such model (nearest: flux); the choices are cogvideox, "),
    ("cachelab", ["logger=wand"], "cachelab: error: logger=wand: no such logger (nearest: wandb); the choices are none, wandb"),
    ("cachelab", ["experiment=fbc_threshold"],
     "cachelab: error: experiment=fbc_threshold: no such experiment (nearest: fbc_threshold_sweep)"),
    ("cachelab", ["experiment=fbc_vs_fixed_interval", "variant=fbc_vs_fixed_interval/fixed_interval_9"],
     "cachelab: error: variant=fbc_vs_fixed_interval/fixed_interval_9: no such variant (nearest: fbc_vs_fixed_interval/fixed_"),
    ("cachelab", ["-m", "hydra/launcher=jobib"], "cachelab: error: hydra/launcher=jobib: no such hydra/launcher (nearest: joblib)"),
    ("cachelab.tune", ["target.psnr=40", "policy=nonesuch"], "cachelab.tune: error: policy=nonesuch: no such policy (nearest: "),
    ("cachelab.calibrate", ["model=digitz"], "cachelab.calibrate: error: model=digitz: no such model (nearest: digits)"),
])
def test_an_unknown_group_choice_is_one_line_naming_the_choices_and_the_nearest(tmp_path, module, arguments, message):
    done = run_cli([*arguments, "logger=none", f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path,
                   module=module)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()  # stopped before any job


def test_a_choice_from_the_users_own_config_folder_is_among_the_choices(tmp_path):
    (tmp_path / "my_conf" / "policy").mkdir(parents=True)
    (tmp_path / "my_conf" / "policy" / "skip_every_third.yaml").write_text("name: skip_every_third\nmodule: my_policies\n")
    done = run_cli([f"hydra.searchpath=[file://{tmp_path}/my_conf]", "policy=skip_every_thrid", "logger=none",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 2 and "(nearest: skip_every_third)" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_documented_command_without_weights_fails_fast(tmp_path):
    start = time.monotonic()
    done = run_cli(["policy=first_block", "model=flux", "threshold=0.15"], cwd=tmp_path,
                   HF_HUB_CACHE=str(tmp_path / "hub"))
    assert time.monotonic() - start < 30
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    for words in (str(tmp_path / "hub"), "hf download black-forest-labs/FLUX.1-dev", "model.path=", "model=digits"):
        assert words in done.stderr


def test_the_documented_command_with_weights_runs(tmp_path, tiny_dir):
    overrides = tiny_overrides(tiny_dir, tmp_path / "store")
    done = run_cli(["policy=first_block", "model=flux", "threshold=0.15", *overrides, f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["policy"], result["model"], result["threshold"]) == ("first_block", "flux", 0.15)
    assert result["config"]["model"]["path"] == str(tiny_dir) and result["versions"]["torch"]
    assert "| first_block" in done.stdout and "| none (reference)" in done.stdout
    assert {"trace.csv", "grid.png", "images", ".hydra"} <= {p.name for p in (tmp_path / "run").iterdir()}


def test_a_2x2_sweep_runs_every_job_and_summarises(tmp_path, tiny_dir):
    overrides = [o for o in tiny_overrides(tiny_dir, tmp_path / "store") if o != "logger=none"]
    sweep = tmp_path / "sweep"
    done = run_cli(["-m", "policy=first_block,teacache", "threshold=0.05,0.3", *overrides, "logger=wandb",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit())
    assert jobs == ["0_policy=first_block,threshold=0.05", "1_policy=first_block,threshold=0.3",
                    "2_policy=teacache,threshold=0.05", "3_policy=teacache,threshold=0.3"]
    results = [json.loads((sweep / job / "result.json").read_text()) for job in jobs]
    assert [(r["policy"], r["threshold"]) for r in results] == [
        ("first_block", 0.05), ("first_block", 0.3), ("teacache", 0.05), ("teacache", 0.3)]
    assert sum(r["reference_from_store"] for r in results) == 3  # the reference is computed once
    assert (sweep / "summary.csv").read_text().count("\n") == 5
    assert "| 3_policy=teacache,threshold=0.3" in done.stdout
    runs = [offline_run(sweep / job) for job in jobs]
    assert all(run["exit_code"] == 0 and run["summary"]["threshold"] for run in runs)
    assert len({run["group"] for run in runs}) == 1 and runs[0]["group"].startswith("default-")


def test_the_default_run_on_the_embedded_model(tmp_path):
    done = run_cli(["num_prompts=3", "steps=8", "timing.repeats=1", "timing.warmup=0", "logger=none",
                    f"cache_dir={tmp_path}/store", f"hydra.run.dir={tmp_path}/run"], cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert (result["model"], result["policy"], result["num_prompts"]) == ("digits", "first_block", 3)
    assert result["metric"]["name"] == "digit_accuracy" and 0 <= result["digit_accuracy"] <= 1
    assert result["reference_digit_accuracy"] is not None and "| digit_accuracy |" in done.stdout
    assert result["reference_peak_memory_mb"] > 0 and result["cached_peak_memory_mb"] > 0
    # quiet by default: no third-party notices, and progress bars only for the phases, not per image or per weight file
    assert "[transformers]" not in done.stderr and "Loading" not in done.stderr
    bars = {line.split(":")[0].strip() for line in re.split(r"[\r\n]", done.stderr) if "%|" in line}
    assert bars == {"reference", "cached", "timing"}


def test_a_resumed_sweep_runs_only_the_jobs_without_a_finished_result(tmp_path, tiny_dir):
    overrides = tiny_overrides(tiny_dir, tmp_path / "store")
    command = ["-m", "policy=fixed_interval", "policy.interval=2,3,4", *overrides]
    done = run_cli(command, cwd=tmp_path)  # the default sweep folder, multirun/<name>/<time>
    assert done.returncode == 0, done.stderr[-2000:]
    (sweep,) = (tmp_path / "multirun" / "default").iterdir()
    jobs = sorted(p for p in sweep.iterdir() if (p / "result.json").is_file())
    assert [job.name for job in jobs] == ["0_policy.interval=2", "1_policy.interval=3", "2_policy.interval=4"]
    written = {job.name: (job / "result.json").stat().st_mtime_ns for job in jobs}
    (jobs[1] / "result.json").unlink()
    (sweep / "summary.csv").unlink()
    done = run_cli([*command, f"resume={sweep}"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("finished before (same config), skipped") == 2
    assert {job.name: (job / "result.json").stat().st_mtime_ns for job in jobs} != written
    assert [(job / "result.json").stat().st_mtime_ns == written[job.name] for job in jobs] == [True, False, True]
    assert len((sweep / "summary.csv").read_text().splitlines()) == 4
    # a finished result of another config is never overwritten
    done = run_cli([*command, "seed=1", f"resume={sweep}"], cwd=tmp_path)
    assert done.returncode != 0 and "holds the finished result of another config (seed differ)" in done.stderr
    assert [(job / "result.json").stat().st_mtime_ns == written[job.name] for job in jobs] == [True, False, True]


def test_a_failing_job_keeps_the_results_of_the_others(tmp_path, tiny_dir):
    sweep = tmp_path / "sweep"
    # FluxPipeline refuses max_sequence_length > 512 only once it runs: job 1 fails after validation
    done = run_cli(["-m", *tiny_overrides(tiny_dir, tmp_path / "store"), "model.call_kwargs.max_sequence_length=16,600",
                    f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert done.returncode != 0
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert rows[1].startswith("0_model.call_kwargs.max_sequence_length=16,done,first_block")
    assert rows[2].startswith("1_model.call_kwargs.max_sequence_length=600,failed,first_block")
    assert "max_sequence_length" in json.loads((sweep / rows[2].split(",")[0] / "result.json").read_text())["error"]


def test_a_users_own_policy_runs_from_its_own_config_folder(tmp_path):
    (tmp_path / "my_policies.py").write_text(
        "from cachelab import CachePolicy, compute, register_policy, reuse\n\n"
        "@register_policy('skip_every_third')\n"
        "class SkipEveryThird(CachePolicy):\n"
        "    def decide(self, ctx):\n"
        "        return reuse() if ctx.step % 3 == 2 else compute()\n"
    )
    (tmp_path / "my_conf" / "policy").mkdir(parents=True)
    (tmp_path / "my_conf" / "policy" / "skip_every_third.yaml").write_text("name: skip_every_third\nmodule: my_policies\n")
    done = run_cli([f"hydra.searchpath=[file://{tmp_path}/my_conf]", "policy=skip_every_third", "num_prompts=2",
                    "steps=6", "timing.repeats=1", "timing.warmup=0", "logger=none", f"cache_dir={tmp_path}/store",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["policy"] == "skip_every_third" and result["computed_steps"] == 4


def test_calibrate_then_run_the_learned_policy_and_the_oracle(tmp_path, tiny_dir):
    overrides = tiny_overrides(tiny_dir, tmp_path / "store")
    done = run_cli([*overrides, "calibrate.budgets=[2,3]", "calibrate.generations=1", f"hydra.run.dir={tmp_path}/cal"],
                   cwd=tmp_path, module="cachelab.calibrate")
    assert done.returncode == 0, done.stderr[-2000:]
    calibration = json.loads((tmp_path / "cal" / "calibration.json").read_text())
    assert set(calibration["policies"]) == {"teacache", "magcache", "learned", "lemica", "sencache"}
    assert {b: len(p["computed"]) for b, p in calibration["policies"]["learned"]["plans"].items()} == {"2": 2, "3": 3}
    for policy, computed, bound in [("learned", 2.0, False), ("oracle", 3.0, True)]:
        done = run_cli([*overrides, f"policy={policy}", "policy.budget=" + str(int(computed)), f"hydra.run.dir={tmp_path}/{policy}",
                        f"calibration_file={tmp_path / 'cal' / 'calibration.json'}"], cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads((tmp_path / policy / "result.json").read_text())
        assert result["computed_steps"] == computed and result["bound"] is bound
    assert "| oracle (bound)" in done.stdout


def _has_cuda():
    import torch

    return torch.cuda.is_available()


def _has_mps():
    import torch

    return torch.backends.mps.is_available()


@pytest.mark.parametrize("override, message", [
    pytest.param("device=cuda", "cachelab: error: device=cuda: no CUDA device is available",
                 marks=pytest.mark.skipif(_has_cuda(), reason="CUDA is available")),
    pytest.param("device=cuda:3", "cachelab: error: device=cuda:3: no CUDA device is available",
                 marks=pytest.mark.skipif(_has_cuda(), reason="CUDA is available")),
    pytest.param("device=mps", "cachelab: error: device=mps: no MPS device is available",
                 marks=pytest.mark.skipif(_has_mps(), reason="MPS is available")),
    ("device=gpu", "cachelab: error: device=gpu is not a device (auto, cpu, mps, cuda or cuda:N)"),
    ("device=cuda:x", "cachelab: error: device=cuda:x is not a device (auto, cpu, mps, cuda or cuda:N)"),
])
def test_a_device_this_machine_lacks_fails_with_one_line_saying_what_works(tmp_path, override, message):
    done = run_cli([override, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(message)
    assert "device=auto" in done.stderr and "device=cpu" in done.stderr and done.stderr.strip().endswith("works here")


def test_a_cuda_index_beyond_the_device_count_says_which_devices_exist(monkeypatch):
    import torch

    from cachelab.config import ConfigError, check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    check_device("cuda")
    check_device("cuda:1")
    with pytest.raises(ConfigError) as error:
        check_device("cuda:2")
    assert str(error.value) == ("device=cuda:2: there are only 2 CUDA devices; "
                                "device=auto, device=cpu, device=cuda, device=cuda:0 or device=cuda:1 works here")
