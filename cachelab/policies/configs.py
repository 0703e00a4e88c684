"""The Hydra config `policy/<name>` of a registered dataclass policy, generated from its fields.

`register_policy` stores it in Hydra's `ConfigStore`, so `python -m cachelab policy=<name> policy.<field>=...`
works for every built-in policy, for one registered later, and for a user's own policy imported before Hydra
composes the config, with no yaml repeating the fields. The config is the policy's name, then each constructor
field with its default (untyped: the policy's `__post_init__` checks the values, as it did for the yamls), then
the class's `cli_defaults` on top: command-line defaults that differ on purpose from the class's own
(`FirstBlockCache`'s threshold: 0.1 on the command line, diffusers' 0.05 in Python).

A built-in policy has no yaml (tests/test_policy_configs.py): Hydra would merge a `policy/<name>.yaml` onto the
stored config of the same name, with a deprecation warning ("automatic schema matching"). A user's own policy
with a yaml in a folder of their own (`hydra.searchpath`) works as before: `policy.module` imports it only after
Hydra composed, and the run records its fields' defaults under the yaml's keys (`recorded_config`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

#: The Hydra config group of the policies.
GROUP = "policy"
#: Where a built-in policy's generated config is recorded in the ConfigStore (``hydra --info`` shows it).
PROVIDER = "cachelab"


def policy_node(cls: type) -> dict[str, Any] | None:
    """``{"name": ..., field: default, ...}`` for a dataclass policy (None for a plain subclass: it has no
    fields to read). A field without a default is ``???`` (Hydra: a value the command line must give); a
    default that a config cannot hold (an object) is left out, so the class's own default applies."""
    if not dataclasses.is_dataclass(cls):
        return None
    node: dict[str, Any] = {"name": cls.name}
    fields = sorted((f for f in dataclasses.fields(cls) if f.init), key=lambda f: f.kw_only)  # keyword-only last
    for f in fields:
        if f.default is not dataclasses.MISSING:
            value = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        else:
            value = "???"
        if _holds(value):
            node[f.name] = _plain(value)
    for key, value in getattr(cls, "cli_defaults", {}).items():
        node[key] = _plain(value)
    return node


def store_policy_config(cls: type) -> None:
    """Store ``policy/<cls.name>`` in Hydra's ConfigStore (nothing for a plain subclass)."""
    node = policy_node(cls)
    if node is None:
        return
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group=GROUP, name=cls.name, node=node, provider=PROVIDER)


def policy_config(name: str, conf: str | Path, cls: type | None) -> dict[str, Any] | None:
    """The config ``policy=<name>`` composes (without overrides): the generated config of ``cls`` (the policy
    registered as ``name``, if any) with ``<conf>/policy/<name>.yaml`` on top where there is one, as Hydra merges
    them; None when neither exists."""
    from omegaconf import OmegaConf

    node = None if cls is None else policy_node(cls)
    path = Path(conf) / GROUP / f"{name}.yaml"
    if path.is_file():
        return {**(node or {}), **OmegaConf.to_container(OmegaConf.load(path))}
    return node


def _plain(value: Any) -> Any:
    """Tuples as lists (what a yaml gives), recursively."""
    if isinstance(value, (tuple, list)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _holds(value: Any) -> bool:
    """Whether an OmegaConf config holds ``value`` as it is (None, numbers, strings, lists, dicts of them)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (tuple, list)):
        return all(_holds(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _holds(item) for key, item in value.items())
    return False


def recorded_config(cls: type, given: dict[str, Any]) -> dict[str, Any]:
    """The policy config a run records: ``given`` on top of the class's generated config (a policy that
    ``policy.module`` imports registers after Hydra composed), less the fields that ``params()`` leaves out of
    records (``NOT_RECORDED``: the learned plans) while they hold their defaults, as the yamls did."""
    node = {key: value for key, value in (policy_node(cls) or {}).items() if value != "???"}
    config = {**node, **given}
    for f in dataclasses.fields(cls) if dataclasses.is_dataclass(cls) else ():
        if f.metadata.get("recorded", True) is not True and f.name in node and config.get(f.name) == node[f.name]:
            del config[f.name]
    return config
