"""Policy settings said once: built-in policies are dataclasses whose fields are the constructor arguments,
params(), the CLI defaults (policy=<name>, generated from the class) and the README table; plain subclasses keep working."""

import dataclasses
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_runner_fixtures import composed
from tiny import generate

import cachelab
from cachelab import CachePolicy, FirstBlockCache, Learned, MagCache, TeaCache, compute, reuse
from cachelab.policies import make_policy, register_policy, registered_policies
from cachelab.schedules import Plan

BUILT_IN = {name: cls for name, cls in registered_policies().items() if cls.__module__.startswith("cachelab.policies.")}
#: CLI thresholds that differ on purpose from the class default (FirstBlockCache keeps diffusers' 0.05).
CLI_THRESHOLDS = {"first_block": 0.1}
README = Path(__file__).resolve().parent.parent / "README.md"


def init_fields(cls, recorded_only: bool = True) -> dict:
    return {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
            for f in dataclasses.fields(cls) if f.init and (f.metadata.get("recorded", True) or not recorded_only)}


def test_every_policy_is_built_in():
    assert set(BUILT_IN) == {"none", "fixed_interval", "first_block", "dbcache", "teacache", "magcache", "taylorseer",
                             "oracle", "learned", "pab", "dbprune", "fora", "faster_cache", "seacache", "fora", "faster_cache",
                             "easycache", "lemica", "sencache", "step_mask", "toca", "duca", "clusca"}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_params_are_the_init_fields(name):
    cls = BUILT_IN[name]
    assert dataclasses.is_dataclass(cls)
    assert cls().params() == init_fields(cls)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_the_cli_defaults_are_the_class_defaults(name):
    defaults = init_fields(BUILT_IN[name], recorded_only=False)  # the learned plans too (None: the calibration's)
    yaml = OmegaConf.to_container(composed([f"policy={name}"]).policy)  # generated from the class (no yaml)
    assert yaml.pop("name") == name
    assert set(yaml) == set(defaults), f"policy={name} keys differ from {BUILT_IN[name].__name__}'s settings"
    if name in CLI_THRESHOLDS:
        assert yaml.pop("threshold") == CLI_THRESHOLDS[name] != defaults.pop("threshold")
    assert yaml == {key: list(value) if isinstance(value, tuple) else value for key, value in defaults.items()}


def test_the_readme_table_shows_each_constructor_with_its_defaults():
    shown = dict(re.findall(r"^\| `(\w+)` \| `(\w+\(.*?\))` \|", README.read_text(), flags=re.MULTILINE))
    assert set(shown) == set(BUILT_IN)
    for name, cls in BUILT_IN.items():
        assert shown[name] == repr(cls()).replace("'", '"'), name


def test_positional_arguments_keep_their_order():
    assert FirstBlockCache(0.1, 2).params() == {"threshold": 0.1, "taylor_order": 2}
    dual = cachelab.DualBlockCache(0.2, 3, 1).params()
    assert dual == {**cachelab.DualBlockCache().params(), "threshold": 0.2, "compute_first": 3, "compute_last": 1}
    assert cachelab.TaylorSeer(3, 2).params() == {"interval": 3, "order": 2, "warmup_steps": 0, "unit": "step"}
    assert cachelab.Oracle(4, "taylor", 3).params() == {"budget": 4, "forecast": "taylor", "history": 3}


def test_settings_derived_attributes_follow_the_settings():
    dual = cachelab.DualBlockCache(compute_first=3, compute_last=2, taylor_order=2)
    assert (dual.head_blocks, dual.tail_blocks, dual.history) == (3, 2, 3)
    assert FirstBlockCache(taylor_order=1).history == 2 and cachelab.TaylorSeer(order=3).history == 4
    assert cachelab.Oracle(forecast="reuse", history=5).history == 1
    with pytest.raises(ValueError, match="compute_first must be an integer >= 1"):
        dataclasses.replace(dual, compute_first=0)


def test_for_model_returns_a_new_policy_and_leaves_the_original_untouched():
    teacache = TeaCache(0.3)
    filled = teacache.for_model({"coefficients": [2, 0]}, "flux")
    assert filled is not teacache and type(filled) is TeaCache
    assert filled.params() == {"threshold": 0.3, "coefficients": [2.0, 0.0]}
    assert teacache.coefficients is None
    assert filled.for_model({"coefficients": [5.0]}, "flux") is filled  # nothing left to fill
    with pytest.raises(ValueError, match="MagCache has no published magnitude ratios for the wan family"):
        MagCache().for_model({}, "wan")


def test_learned_for_model_sets_the_plan_on_the_copy():
    plan = Plan(steps=4, computed=[0, 2], weights={1: [1.0], 3: [2.0, -1.0]})
    learned = Learned(2)
    ready = learned.for_model({"plans": {"2": plan.to_json()}}, "digits")
    assert ready is not learned and ready.in_use == {"step": plan} and ready.history == 2
    assert learned.plans is None and learned.in_use == {} and learned.history == 1
    assert ready.params() == learned.params() == {"budget": 2, "unit": "step"}  # the plans stay out of records


class EveryThird(CachePolicy):
    """A plain subclass with its own __init__, as users write them."""

    calibrated = ("offset",)

    def __init__(self, period=3, offset=None):
        self.period, self.offset = period, offset

    def decide(self, ctx):
        return compute() if (ctx.step + self.offset) % self.period == 0 or ctx.is_last else reuse()


def test_a_plain_subclass_runs_through_make_policy_and_the_executor(flux, monkeypatch):
    from cachelab.policies import registry

    monkeypatch.setattr(registry, "_POLICIES", dict(registry._POLICIES))
    register_policy("test_every_third")(EveryThird)
    policy = make_policy("test_every_third", period=2)
    assert policy.params() == {} and repr(policy) == "EveryThird()"
    filled = policy.for_model({"offset": 0}, "flux")
    assert filled is not policy and policy.offset is None and filled.offset == 0
    executor = cachelab.attach(flux, filled)
    try:
        generate(flux, steps=5)
    finally:
        cachelab.detach(flux)
    assert [r.computed for r in executor.trace] == [True, False, True, False, True]
    assert all(r.signal is None for r in executor.trace)
