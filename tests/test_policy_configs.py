"""A built-in policy is one file: `policy=<name>` is generated from its dataclass (cachelab.policies.configs), the knob
cachelab.tune searches is declared on the class (`tune_knob`), and the README's policy table lists the registry."""

import dataclasses
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hydra.core.config_store import ConfigStore
from test_runner_fixtures import composed

from cachelab import config
from cachelab.config import ConfigError, config_dir
from cachelab.policies import CachePolicy, compute, registered_policies
from cachelab.policies import registry as policy_registry
from cachelab.policies.configs import policy_config, policy_node, recorded_config
from cachelab.tune.knobs import THRESHOLDS, Knob, Space, interval_knob, knob_for
from cachelab.tune.plan import deployable_policies

BUILT_IN = {name: cls for name, cls in registered_policies().items() if cls.__module__.startswith("cachelab.policies.")}
README = Path(__file__).resolve().parent.parent / "README.md"


def validate(overrides):
    return config.validate(composed(overrides), check_weights=False)


@pytest.fixture
def registry(monkeypatch):
    """Policies registered by a test leave the registry and the ConfigStore as they were."""
    monkeypatch.setattr(policy_registry, "_POLICIES", dict(policy_registry._POLICIES))
    stored = dict(ConfigStore.instance().repo.get("policy", {}))
    yield policy_registry.register_policy
    ConfigStore.instance().repo["policy"] = stored


def test_no_built_in_policy_repeats_its_fields_in_a_yaml():
    repeated = sorted(name for name in BUILT_IN if (Path(config_dir()) / "policy" / f"{name}.yaml").is_file())
    assert not repeated, (f"conf/policy/{{{','.join(repeated)}}}.yaml: policy=<name> is generated from the dataclass; "
                          "delete the yaml (a command-line default that differs from the class's: cli_defaults)")


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_policy_config_is_the_fields_with_their_defaults(name):
    cls = BUILT_IN[name]
    composed_policy = dict(composed([f"policy={name}"]).policy)
    assert composed_policy == policy_node(cls) == policy_config(name, config_dir(), cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    assert list(composed_policy) == ["name", *[f.name for f in fields if not f.kw_only], *[f.name for f in fields if f.kw_only]]
    run = validate([f"policy={name}"])
    assert config.make_run_policy(run).params() == {**cls().params(), **getattr(cls, "cli_defaults", {})}


def test_the_command_line_keeps_first_block_at_0_1_while_the_class_keeps_diffusers_0_05():
    assert BUILT_IN["first_block"].cli_defaults == {"threshold": 0.1}
    assert BUILT_IN["first_block"]().threshold == 0.05
    assert validate([]).policy["threshold"] == validate(["policy=first_block"]).threshold == 0.1


FORECASTING = sorted(name for name, cls in BUILT_IN.items()
                     if {"forecaster", "forecaster_order"} <= {f.name for f in dataclasses.fields(cls)})


def test_the_triggers_have_the_stand_in_knobs():
    triggers = {"first_block", "dbcache", "teacache", "magcache", "fixed_interval", "taylorseer", "pab", "fora", "dbprune"}
    assert triggers <= set(FORECASTING)


@pytest.mark.parametrize("name", FORECASTING)
def test_forecaster_overrides_need_no_plus(name):
    run = validate([f"policy={name}", "policy.forecaster=foca", "policy.forecaster_order=2"])
    assert (run.policy["forecaster"], run.policy["forecaster_order"]) == ("foca", 2)
    config.make_run_policy(run)


def test_dict_and_any_fields_keep_working():
    assert composed(["policy=learned"]).policy.plans is None
    run = validate(["policy=learned"])
    assert "plans" not in run.policy and "block_plans" not in run.policy  # left out of records, as the yaml did
    assert config.make_run_policy(run).plans is None
    assert composed(["policy=learned", "policy.plans={six: {steps: 28}}"]).policy.plans == {"six": {"steps": 28}}
    assert validate(["policy=dbprune", "policy.non_prune_blocks=[1,2]"]).policy["non_prune_blocks"] == [1, 2]
    assert validate(["policy=pab"]).policy["spatial_attention_timestep_skip_range"] == [100, 800]


def test_bad_values_are_still_the_policys_own_one_line_errors():
    with pytest.raises(ConfigError, match="threshold must be"):
        validate(["policy=teacache", "policy.threshold=oops"])
    with pytest.raises(ConfigError, match="interval must be an integer >= 1"):
        validate(["policy=fora", "policy.interval=0"])


def test_a_policy_registered_later_gets_its_config_the_same_way(registry):
    @registry("test_later_policy")
    @dataclass(eq=False, repr=False)
    class Later(CachePolicy):
        period: int = 3
        options: dict = field(default_factory=lambda: {"a": [1, 2]})
        anything: Any = None
        required: float = field(default=0.5, kw_only=True)
        cli_defaults: ClassVar[dict] = {"period": 4}

        def decide(self, ctx):
            return compute()

    assert dict(composed(["policy=test_later_policy"]).policy) == {
        "name": "test_later_policy", "period": 4, "options": {"a": [1, 2]}, "anything": None, "required": 0.5}
    run = validate(["policy=test_later_policy", "policy.anything=[x]", "policy.required=2"])
    policy = config.make_run_policy(run)
    assert (policy.period, policy.options, policy.anything, policy.required) == (4, {"a": [1, 2]}, ["x"], 2)


def test_a_field_without_default_must_be_given(registry):
    @registry("test_required_policy")
    @dataclass(eq=False, repr=False)
    class Required(CachePolicy):
        level: int

        def decide(self, ctx):
            return compute()

    with pytest.raises(ConfigError, match="policy.level"):
        validate(["policy=test_required_policy"])
    assert config.make_run_policy(validate(["policy=test_required_policy", "policy.level=2"])).level == 2


def test_a_plain_subclass_gets_no_config(registry):
    @registry("test_plain_policy")
    class Plain(CachePolicy):
        def decide(self, ctx):
            return compute()

    assert policy_node(Plain) is None and "test_plain_policy.yaml" not in ConfigStore.instance().repo["policy"]


def test_a_policy_that_policy_module_imports_records_its_defaults(registry, tmp_path, monkeypatch):
    (tmp_path / "late_policies.py").write_text(
        "from dataclasses import dataclass\n"
        "from cachelab import CachePolicy, compute, register_policy\n\n"
        "@register_policy('test_module_policy')\n"
        "@dataclass(eq=False, repr=False)\n"
        "class ModulePolicy(CachePolicy):\n"
        "    uses_threshold = True\n"
        "    threshold: float = 0.3\n"
        "    interval: int = 2\n\n"
        "    def decide(self, ctx):\n"
        "        return compute()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "late_policies", raising=False)
    run = validate(["policy=none", "policy.name=test_module_policy", "+policy.module=late_policies", "+policy.interval=5"])
    assert run.policy == {"name": "test_module_policy", "threshold": 0.3, "interval": 5, "module": "late_policies"}
    assert run.threshold == 0.3


def test_recorded_config_keeps_what_was_given():
    learned = BUILT_IN["learned"]
    assert recorded_config(learned, {"name": "learned", "budget": 4}) == {"name": "learned", "budget": 4, "unit": "step"}
    assert recorded_config(learned, {"name": "learned", "plans": {"4": {}}})["plans"] == {"4": {}}


# -- the knob cachelab.tune searches ----------------------------------------------------------------------------

#: What cachelab.tune searched before the knob moved onto the classes (its knob_for switched on these names).
INTERVALS = ("fixed_interval", "taylorseer", "fora")
SKIP_RANGES = ("pab", "faster_cache")
BUDGETS = ("learned", "oracle")


@pytest.mark.parametrize("name", sorted(BUILT_IN))
@pytest.mark.parametrize("steps, blocks", [(2, 1), (8, 5), (28, 19), (50, 57)])
def test_each_policy_declares_the_knob_it_had(name, steps, blocks):
    cls = BUILT_IN[name]
    knob = knob_for(cls, steps, blocks)
    if name == "dbcache":
        expected = Space(max_head=max(1, blocks // 4), max_tail=max(0, blocks // 6), max_warmup=steps // 4)
    elif name in INTERVALS + SKIP_RANGES:
        key = "interval" if name in INTERVALS else "spatial_attention_block_skip_range"
        expected = Knob(key, tuple(range(2, max(3, steps // 2 + 1))))
    elif name in BUDGETS:
        expected = Knob("budget", tuple(range(steps, 0, -1)))
    elif name == "none":
        expected = None
    elif "tune_knob" in vars(cls):  # a policy newer than the move declares its own
        assert isinstance(knob, (Knob, Space))
        return
    else:
        expected = Knob("threshold", THRESHOLDS) if cls.uses_threshold else None
    assert knob == expected


def test_every_deployable_built_in_declares_its_knob():
    undeclared = [name for name in deployable_policies() if getattr(BUILT_IN[name], "tune_knob", None) is None]
    assert not undeclared, f"declare tune_knob on {', '.join(undeclared)} (cachelab.tune.knobs)"


def test_knobs_py_names_no_policy():
    source = (Path(knob_for.__code__.co_filename)).read_text()
    body = source[source.index("def knob_for"):]
    assert not [name for name in BUILT_IN if f'"{name}"' in body]


def test_a_new_policy_declares_its_knob_in_its_own_class():
    class Periodic(CachePolicy):
        tune_knob = interval_knob("period")

        def decide(self, ctx):
            return compute()

    class Pair(Periodic):
        @classmethod
        def tune_knob(cls, steps, blocks):
            return "period", [3, 2]

    assert knob_for(Periodic, 10, 4) == Knob("period", (2, 3, 4, 5))
    assert knob_for(Pair, 10, 4) == Knob("period", (3, 2))


# -- the README's policy table ----------------------------------------------------------------------------------

def readme_policy_rows() -> list[str]:
    text = README.read_text()
    section = text[text.index("### Policies"):]
    section = section[:section.index("\n#", 1)]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def test_the_readme_policy_table_lists_exactly_the_registered_built_ins():
    rows = readme_policy_rows()
    assert len(rows) == len(set(rows)), "a policy has two rows"
    assert not set(BUILT_IN) - set(rows), f"README.md's policy table misses {sorted(set(BUILT_IN) - set(rows))}"
    assert not set(rows) - set(BUILT_IN), f"README.md's policy table lists unregistered {sorted(set(rows) - set(BUILT_IN))}"
