"""Every config in conf/ composes and validates; bad values fail with one ConfigError line."""

import inspect
from pathlib import Path

import pytest
from test_runner_fixtures import composed

from cachelab import config, zoo
from cachelab.config import ConfigError, config_dir
from cachelab.policies import registered_policies

CONF = Path(config_dir())


def validate(cfg):
    """Config checks only: the weights are test_runner_loading's business."""
    return config.validate(cfg, check_weights=False)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def built_in_policies() -> list[str]:
    """policy=<name> of every built-in policy: its config is generated from its dataclass (cachelab.policies.configs)."""
    return sorted({name for name, cls in registered_policies().items() if cls.__module__.startswith("cachelab.policies")}
                  | set(options("policy")))


def test_config_dir_is_the_repo_conf():
    assert CONF == Path(__file__).resolve().parent.parent / "conf"


@pytest.mark.parametrize("model", options("model"))
def test_every_model_config_validates(model):
    run = validate(composed([f"model={model}"]))
    assert run.model.name == model
    assert run.steps == run.model.steps >= 2
    assert run.height % run.model.size_multiple == 0 and run.width % run.model.size_multiple == 0
    assert run.model.hub_id or model in zoo.MODELS


@pytest.mark.parametrize("policy", built_in_policies())
def test_every_policy_config_validates(policy):
    run = validate(composed([f"policy={policy}"]))
    assert run.policy["name"] == policy


def test_every_registered_policy_has_a_config_with_its_knobs():
    for name, cls in registered_policies().items():
        if not cls.__module__.startswith("cachelab.policies"):
            continue  # registered by an experiment's policy.module, configured in its variant
        knobs = set(composed([f"policy={name}"]).policy) - {"name"}
        assert knobs <= set(inspect.signature(cls.__init__).parameters) - {"self"}, name


@pytest.mark.parametrize("logger", options("logger"))
def test_every_logger_config_validates(logger):
    assert validate(composed([f"logger={logger}"])).logger.name == logger


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_job_of_every_experiment_validates(experiment):
    assert (CONF / "experiment" / f"{experiment}.yaml").read_text().startswith("# @package _global_")
    hydra = composed([f"experiment={experiment}"], return_hydra_config=True).hydra
    assert hydra.mode.name == "MULTIRUN" and hydra.sweeper.params
    for key, values in hydra.sweeper.params.items():
        for value in str(values).split(","):
            run = validate(composed([f"experiment={experiment}", f"{key}={value}"]))
            assert run.name == experiment


def test_top_level_threshold_replaces_the_policy_threshold():
    run = validate(composed(["policy=teacache", "threshold=0.15"]))
    assert run.threshold == run.policy["threshold"] == 0.15


def test_policy_threshold_is_used_when_top_level_is_null():
    run = validate(composed(["policy=first_block"]))
    assert run.threshold == run.policy["threshold"] == 0.1


def test_policies_without_threshold_record_none():
    run = validate(composed(["policy=fixed_interval", "threshold=0.3", "policy.interval=3"]))
    assert run.threshold is None and run.policy["interval"] == 3


@pytest.mark.parametrize("override, words", [
    ("threshold=abc", "threshold"),
    ("threshold=-1", "threshold must be a number >= 0"),
    ("steps=1", "steps must be an integer >= 2"),
    ("height=30", "multiple of 4"),
    ("prompt_file=/no/such/prompts.txt", "no such file"),
    ("policy.threshold=oops", "threshold must be"),
    ("timing.repeats=0", "timing.repeats"),
    ("+unknown_key=1", "unknown_key"),
])
def test_bad_values_raise_one_line(override, words):
    with pytest.raises(ConfigError) as error:
        validate(composed([override]))
    assert words in str(error.value) and "\n" not in str(error.value)


def test_prompt_file_replaces_prompts(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n\na dog\n")
    run = validate(composed([f"prompt_file={prompts}"]))
    from cachelab.runner import run_prompts

    assert run_prompts(run) == ["a cat", "a dog"]
