"""`python -m cachelab.tune`: the search, the validated table, the written config reproducing it, resume,
bad input; and the two rough edges of `python -m cachelab` fixed with it (W&B's output, a policy too big for the model)."""

import json
import math
import shlex

import pytest
from test_runner_fixtures import REPO, composed, run_cli
from test_tracking import offline_run

from cachelab.config import validate
from cachelab.tune.knobs import THRESHOLDS
from cachelab.tune.search import bisect, bisect_knob
from cachelab.tune.targets import bars, meets, shortfall

FAST = ["num_prompts=3", "steps=8", "timing.prompts=1", "timing.repeats=1", "timing.warmup=0", "quiet=true", "threads=1"]


@pytest.mark.parametrize("last_passing", [-1, 0, 5, 13, 14])
def test_bisection_finds_the_last_passing_value_in_log_trials(last_passing):
    asked = []

    def passes(index):
        asked.append(index)
        return index <= last_passing

    assert bisect(len(THRESHOLDS), passes) == last_passing
    assert len(asked) <= math.ceil(math.log2(len(THRESHOLDS) + 1))


def test_bisect_knob_returns_the_chosen_setting_then_safer_ones():
    from cachelab.tune.knobs import Knob

    knob = Knob("interval", (2, 3, 4, 5, 6))
    figures = {2: 50.0, 3: 45.0, 4: 41.0, 5: 38.0, 6: 30.0}
    found = bisect_knob(knob, lambda s: {"psnr": figures[s["interval"]]}, lambda f: f["psnr"] >= 40, safer=2)
    assert found == [{"interval": 4}, {"interval": 3}, {"interval": 2}]
    assert bisect_knob(knob, lambda s: {"psnr": 0.0}, lambda f: f["psnr"] >= 40, safer=2) == []


def test_targets_all_must_hold():
    target_bars = bars(type("T", (), dict(psnr=40.0, ssim=0.99, metric=0.9))(), "digit_accuracy")
    assert target_bars == {"psnr": 40.0, "ssim": 0.99, "digit_accuracy": 0.9}
    assert meets({"psnr": 41, "ssim": 0.995, "digit_accuracy": 1.0}, target_bars)
    assert not meets({"psnr": 41, "ssim": 0.98, "digit_accuracy": 1.0}, target_bars)
    assert not meets({"psnr": 41, "ssim": 0.995}, target_bars)  # a missing figure misses
    assert shortfall({"psnr": 38, "ssim": 0.995, "digit_accuracy": 1.0}, target_bars) == pytest.approx(0.05)


@pytest.mark.parametrize("override, message", [
    (["policies=[first_block,nope]", "target.psnr=40"], "cachelab.tune: error: policies: 'nope' is not a registered policy"),
    (["target.psnr=abc"], "cachelab.tune: error: invalid config value: target.psnr: Value 'abc'"),
    ([], "cachelab.tune: error: give a quality target: target.psnr=<dB>"),
    (["target.ssim=2"], "cachelab.tune: error: target.ssim must be in (0, 1], got 2.0"),
    (["policy=teacache", "policies=[first_block]", "target.psnr=40"], "cachelab.tune: error: give policy=<name> or policies"),
    (["tune.seed=0", "target.psnr=40"], "cachelab.tune: error: tune.seed=0 makes 10 tuning generations equal to validation"),
    (["target.metric=0.9", "model=flux", "policy=first_block"], "cachelab.tune: error: target.metric: model=flux"),
    (["steps=1", "target.psnr=40"], "cachelab.tune: error: steps must be an integer >= 2, got 1"),
])
def test_bad_input_fails_with_one_line(tmp_path, override, message):
    done = run_cli([*override, "logger=none", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, module="cachelab.tune")
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message), done.stderr


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """One tune of first_block on the digits model (8 steps, 3 prompts), logged to W&B offline."""
    tmp_path = tmp_path_factory.mktemp("tune")
    done = run_cli(["policy=first_block", "target.psnr=30", *FAST, f"cache_dir={tmp_path}/store",
                    f"hydra.run.dir={tmp_path}/out"], cwd=REPO, module="cachelab.tune")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path, done, json.loads((tmp_path / "out" / "tune.json").read_text())


def test_the_tune_prints_the_table_and_the_command(tuned):
    tmp_path, done, tune = tuned
    (record,) = tune["policies"]
    row = record["validated"][record["use"]]
    assert row["meets"] and row["psnr"] >= 30
    assert "| * | first_block" in done.stdout and "speedup" in done.stdout
    assert f"first_block: {record['command']}" in done.stdout
    # the setting chosen on the tuning set meets the target there, and the next faster threshold does not
    trials = {trial["setting"]["threshold"]: trial for trial in record["trials"]}
    chosen = record["validated"][0]["setting"]["threshold"]
    assert trials[chosen]["meets"]
    faster = THRESHOLDS[THRESHOLDS.index(chosen) + 1]
    assert faster in trials and not trials[faster]["meets"]
    # tuned on seeds apart from the validation seeds
    assert tune["tuning"]["seed"] == 2000 and tune["validation"]["seed"] == 0
    assert [r["policy"] for r in tune["rows"]] == ["first_block"] and tune["rows"][0]["winner"]
    run = offline_run(tmp_path / "out")
    assert run["exit_code"] == 0 and run["summary"]["winner"] == "first_block"


def test_the_written_config_reproduces_the_validated_numbers(tuned, tmp_path):
    _, _, tune = tuned
    (record,) = tune["policies"]
    row = record["validated"][record["use"]]
    arguments = shlex.split(record["command"])[3:]  # python -m cachelab config=<file>
    assert len(arguments) == 1 and arguments[0].startswith("config=")
    done = run_cli([*arguments, f"hydra.run.dir={tmp_path}/again"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "again" / "result.json").read_text())
    assert (result["policy"], result["threshold"]) == ("first_block", row["setting"]["threshold"])
    assert (result["psnr"], result["ssim"], result["computed_fraction"]) == (row["psnr"], row["ssim"], row["computed_fraction"])


@pytest.mark.parametrize("policy, setting, batched", [("fixed_interval", {"interval": 3}, True),
                                                     ("first_block", {"threshold": 0.3}, False)])
def test_trials_of_a_policy_reading_no_signal_run_in_batched_calls(tmp_path, policy, setting, batched):
    """The same figures from one call per prompt and from all prompts in one call; a policy that reads a signal
    (whose decisions would follow the batch) keeps one call per prompt."""
    from cachelab.tune.trials import TrialBench

    run = validate(composed(["num_prompts=4", "steps=8", "seed=2000", "threads=1", f"cache_dir={tmp_path}/store"]))
    figures = {}
    for batch in (1, 4):
        bench = TrialBench(run, tmp_path / f"trials{batch}", {}, batch)
        calls = []
        handle = bench.pipe.transformer.register_forward_pre_hook(lambda *_: calls.append(1))
        figures[batch] = bench.evaluate(policy, setting, {"name": policy})
        handle.remove()
        figures[batch]["calls"] = len(calls)
    assert figures[1]["calls"] == 4 * 8 and figures[4]["calls"] == (8 if batched else 4 * 8)
    assert figures[4]["computed_fraction"] == figures[1]["computed_fraction"] < 1
    assert figures[4]["psnr"] == pytest.approx(figures[1]["psnr"], abs=0.01)
    assert figures[4]["ssim"] == pytest.approx(figures[1]["ssim"], abs=1e-4)


def test_a_resumed_tune_reuses_finished_trials_and_validations(tuned):
    tmp_path, _, tune = tuned
    (tmp_path / "out" / "tune.json").unlink()
    done = run_cli(["policy=first_block", "target.psnr=30", *FAST, f"cache_dir={tmp_path}/store", f"resume={tmp_path}/out"],
                   cwd=REPO, module="cachelab.tune")
    assert done.returncode == 0, done.stderr[-3000:]
    again = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert again["tuning"]["trials_run"] == 0 and again["rows"] == tune["rows"]


@pytest.mark.parametrize("argument, message", [
    ("config=missing.yaml", "cachelab: error: config=missing.yaml: no such file"),
    ("config=setting.txt", "cachelab: error: config=setting.txt: config= takes a .yaml file"),
])
def test_a_bad_config_argument_is_one_line(tmp_path, argument, message):
    (tmp_path / "setting.txt").write_text("threshold: 0.1\n")
    done = run_cli([argument], cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(message), done.stderr


def test_a_policy_too_big_for_the_model_is_one_line(tmp_path):
    done = run_cli(["policy=dbcache", "policy.compute_first=100", *FAST, "logger=none", f"cache_dir={tmp_path}/store",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("cachelab: error: policy=dbcache on model=digits: ") and "this model has 12 blocks" in done.stderr


def test_wandb_says_where_the_run_went_in_one_line(tmp_path):
    done = run_cli(["num_prompts=2", "steps=4", "timing.repeats=1", "timing.warmup=0", "timing.prompts=1", "save_images=false",
                    f"cache_dir={tmp_path}/store", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "wandb:" not in output
    (line,) = [line for line in output.splitlines() if "W&B" in line]
    assert line.startswith(f"W&B: run saved offline in {tmp_path}/run/wandb/offline-run-")
    verbose = run_cli(["num_prompts=2", "steps=4", "timing.repeats=1", "timing.warmup=0", "timing.prompts=1", "verbose=true",
                       "save_images=false", f"cache_dir={tmp_path}/store", f"hydra.run.dir={tmp_path}/loud"], cwd=tmp_path)
    assert "wandb: Run summary:" in verbose.stdout + verbose.stderr


def test_a_multirun_tunes_one_policy_per_job_and_merges_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(["-m", "policy=first_block,fixed_interval", "target.psnr=30", *FAST, "logger=none", f"cache_dir={tmp_path}/store",
                    f"hydra.sweep.dir={sweep}"], cwd=REPO, module="cachelab.tune")
    assert done.returncode == 0, done.stderr[-3000:]
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "tune.json").is_file())
    assert jobs == ["0_policy=first_block", "1_policy=fixed_interval"]
    tune = json.loads((sweep / "tune.json").read_text())
    assert [record["policy"] for record in tune["policies"]] == ["first_block", "fixed_interval"]
    assert sum(row["winner"] for row in tune["rows"]) == 1
    speedups = [row["speedup"] for row in tune["rows"] if row["speedup"] is not None]
    assert speedups == sorted(speedups, reverse=True)
    assert done.stdout.rstrip().endswith(f"tune.json: {sweep / 'tune.json'}") and "2 policies tuned in" in done.stdout


def test_default_policies_the_model_cannot_run_are_left_out_with_the_reason():
    from omegaconf import OmegaConf
    from test_runner_fixtures import composed

    from cachelab.config import ConfigError
    from cachelab.tune import plan

    cfg = composed(["model=flux", "policy=first_block"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("policy")
    configs = {name: plan.policy_config(name, plain) for name in ("first_block", "learned")}
    fit, unfit = plan.fitting(["first_block", "learned"], configs, plain, explicit=False)
    assert fit == ["first_block"] and "the learned policy has no calibrated plans" in unfit["learned"]
    with pytest.raises(ConfigError, match="the learned policy has no calibrated plans"):
        plan.fitting(["first_block", "learned"], configs, plain, explicit=True)
    assert "oracle" not in plan.deployable_policies() and "none" not in plan.deployable_policies()


def test_a_memory_bound_holds_from_above():
    from cachelab.tune.settings import Target
    from cachelab.tune.targets import describe

    target_bars = bars(Target(psnr=40.0, kept_mib=2.0), None)
    assert meets({"psnr": 41, "kept_mib": 1.5}, target_bars) and not meets({"psnr": 41, "kept_mib": 2.5}, target_bars)
    assert shortfall({"psnr": 41, "kept_mib": 2.5}, target_bars) == pytest.approx(0.25)
    assert describe(target_bars) == "psnr >= 40, kept_mib <= 2"
