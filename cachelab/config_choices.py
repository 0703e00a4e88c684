"""Config-group choices checked before Hydra composes: `policy=first_blok` is one line that names the valid choices
and the nearest one, instead of Hydra's multi-line composition error.

The choices are the ones Hydra itself would find for the group: the yaml files in conf/ (and in any
`--config-dir` or `hydra.searchpath` folder) and the configs registered in Hydra's ConfigStore.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os

from .config import ConfigError


def _parse_command_line(arguments: list[str]):
    """Hydra's own reading of the command line (flags and overrides), or None where Hydra would reject it."""
    from hydra._internal.utils import get_args_parser

    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return get_args_parser().parse_args(arguments)
    except SystemExit:  # a flag Hydra's parser refuses (or --version): Hydra reports it itself
        return None


def _values(override) -> list[str]:
    """The config names an override of a group selects: one, or each of a choice sweep (`policy=a,b`)."""
    from hydra.core.override_parser.types import ValueType

    if override.is_sweep_override():
        if override.value_type not in (ValueType.CHOICE_SWEEP, ValueType.SIMPLE_CHOICE_SWEEP):  # glob(), range(): Hydra's
            return []
        return [value for value in override.sweep_string_iterator()]
    value = override.value()
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):  # group=[a,b]: several configs of one group
        return [item for item in value if isinstance(item, str)]
    return []  # null: no config of the group


class _Groups:
    """The config groups and their choices as Hydra sees them for one primary config and command line."""

    def __init__(self, config_dir: str, config_name: str, extra_dir: str | None, searchpath: list[str]):
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra._internal.utils import create_config_search_path
        from hydra.core.config_search_path import SearchPathQuery

        search_path = create_config_search_path(config_dir)
        if extra_dir is not None:  # where Hydra puts --config-dir
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(extra_dir)}",
                                anchor=SearchPathQuery(provider="schema"))
        self.loader = ConfigLoaderImpl(config_search_path=search_path)
        self.config_name = config_name
        self.searchpath = searchpath  # the hydra.searchpath override, if given: Hydra adds those folders
        self._listed = {}

    def _list(self, group: str, kind) -> list[str]:
        if (group, kind) not in self._listed:
            self._listed[group, kind] = self.loader.get_group_options(group, results_filter=kind, config_name=self.config_name,
                                                                      overrides=self.searchpath)
        return self._listed[group, kind]

    def is_group(self, key: str) -> bool:
        from hydra.core.object_type import ObjectType

        parent, _, leaf = key.rpartition("/")
        return bool(leaf) and leaf in self._list(parent, ObjectType.GROUP)

    def choices(self, group: str) -> list[str]:
        """Every config the group can select, those in subgroups as `sub/name` (variant=<experiment>/<choice>)."""
        from hydra.core.object_type import ObjectType

        found = list(self._list(group, ObjectType.CONFIG))
        for sub in self._list(group, ObjectType.GROUP):
            found += [f"{sub}/{name}" for name in self.choices(f"{group}/{sub}")]
        return sorted(set(found))


def check_group_choices(arguments: list[str], config_dir: str, config_name: str) -> None:
    """Raise ConfigError (one line) when an override selects a config that its group does not have.

    `arguments` is the command line Hydra will read (after `config=` is expanded); `config_name` the primary
    config of the entry point. Anything this cannot read is left to Hydra, which reports it as before.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args = _parse_command_line(arguments)
    if args is None or args.config_path is not None:  # another primary config folder: Hydra's own check
        return
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
    except HydraException:  # a malformed override: Hydra's message says where
        return
    searchpath = [text for text, override in zip(args.overrides, overrides) if override.get_key_element() == "hydra.searchpath"]
    groups = None
    for override in overrides:
        if override.is_delete() or "." in override.key_or_group:
            continue  # a key inside a config (policy.interval=3), not a choice of a group
        values = _values(override)
        if not values:
            continue
        if groups is None:
            try:
                groups = _Groups(config_dir, args.config_name or config_name, args.config_dir, searchpath)
            except (HydraException, OSError):
                return
        group = override.key_or_group
        if not groups.is_group(group):
            continue
        choices = groups.choices(group)
        for value in values:
            if value not in choices:
                nearest = difflib.get_close_matches(value, choices, n=1, cutoff=0)
                hint = f" (nearest: {nearest[0]})" if nearest else ""
                raise ConfigError(f"{group}={value}: no such {group}{hint}; the choices are {', '.join(choices) or 'none'}")
