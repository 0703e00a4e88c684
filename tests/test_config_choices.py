"""cachelab.config_choices: a config-group choice is checked against what Hydra knows for the group (conf/ yaml files,
--config-dir, hydra.searchpath and Hydra's ConfigStore) before Hydra composes; anything else is left to Hydra."""

import pytest
from hydra.core.config_store import ConfigStore

from cachelab.config import ConfigError, config_dir
from cachelab.config_choices import check_group_choices


def check(*arguments: str, config_name: str = "config") -> None:
    check_group_choices(list(arguments), config_dir(), config_name)


@pytest.mark.parametrize("arguments", [
    [], ["policy=first_block"], ["-m", "policy=first_block,teacache", "threshold=0.1,0.2"], ["policy=null"], ["~policy"],
    ["policy.interval=3", "threshold=0.2", "steps=6"],
    ["experiment=fbc_vs_fixed_interval", "variant=fbc_vs_fixed_interval/fixed_interval_2"],
    ["hydra/launcher=joblib"], ["policy=glob(*)"], ["--help"], ["--cfg", "job", "model=wan"], ["policy=first_block,"],
])
def test_valid_or_unreadable_command_lines_pass(arguments):
    check(*arguments)


@pytest.mark.parametrize("arguments, message", [
    (["policy=first_blok"], "policy=first_blok: no such policy (nearest: first_block); the choices are "),
    (["-m", "threshold=0.1", "policy=[first_block,teacach]"], "policy=teacach: no such policy (nearest: teacache)"),
    (["+policy@other=magcach"], "policy=magcach: no such policy (nearest: magcache)"),
    (["variant=teacache_indicators/raw_input_7"], "variant=teacache_indicators/raw_input_7: no such variant (nearest: "
                                                  "teacache_indicators/raw_input_"),
])
def test_an_unknown_choice_is_one_line(arguments, message):
    with pytest.raises(ConfigError) as error:
        check(*arguments)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_tune_config_has_the_same_groups():
    with pytest.raises(ConfigError, match=r"policy=nonesuch: no such policy \(nearest: "):
        check("target.psnr=40", "policy=nonesuch", config_name="tune")


@pytest.fixture
def stored_policy():
    store = ConfigStore.instance()
    store.store(group="policy", name="stored_policy_for_test", node={"name": "first_block"})
    yield "stored_policy_for_test"
    store.repo["policy"].pop("stored_policy_for_test.yaml")  # other tests in this process see conf/ as it is


def test_configs_registered_in_the_config_store_are_choices(stored_policy):
    check(f"policy={stored_policy}")
    with pytest.raises(ConfigError, match=r"\(nearest: stored_policy_for_test\).*stored_policy_for_test"):
        check("policy=stored_policy_for_tset")


def test_config_dir_folders_are_searched(tmp_path):
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "mine.yaml").write_text("name: first_block\n")
    check("--config-dir", str(tmp_path), "policy=mine")
    with pytest.raises(ConfigError, match=r"\(nearest: mine\)"):
        check("--config-dir", str(tmp_path), "policy=mien")
