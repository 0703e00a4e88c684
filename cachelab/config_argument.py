"""`python -m cachelab config=<file.yaml>`: run a config file written by `python -m cachelab.tune` (or by hand).

Hydra takes a primary config from a folder and a name (`--config-dir D --config-name N`); this turns the one
argument into those two before Hydra reads the command line.
"""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError

PREFIX = "config="


def expand_config_argument(arguments: list[str]) -> list[str]:
    """`arguments` with `config=<file>` replaced by Hydra's `--config-dir`/`--config-name` pair."""
    given = [argument for argument in arguments if argument.startswith(PREFIX)]
    if not given:
        return arguments
    if len(given) > 1:
        raise ConfigError(f"config= given {len(given)} times; give one config file")
    if any(argument.split("=")[0] in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")
           for argument in arguments):
        raise ConfigError("config= names the config file; leave out --config-dir/--config-name/--config-path")
    path = Path(given[0][len(PREFIX):]).expanduser()
    if path.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"{given[0]}: config= takes a .yaml file (python -m cachelab.tune writes <out>/configs/<policy>.yaml)")
    if not path.is_file():
        raise ConfigError(f"{given[0]}: no such file (python -m cachelab.tune writes <out>/configs/<policy>.yaml)")
    rest = [argument for argument in arguments if argument is not given[0]]
    return ["--config-dir", str(path.resolve().parent), "--config-name", path.stem, *rest]
