"""mkdocs hook: the generated reference pages, written at build time (nothing generated is committed).

- ``reference/policies.md``: the policy catalogue, from ``cachelab.registered_policies()``: each built-in policy's
  docstring, its dataclass fields and defaults, what ``python -m cachelab.tune`` searches (``tune_knob``), its
  stand-in knob (``forecaster=``), its parity status (the class's ``parity``) and the command line that runs it.
- ``reference/config.md``: every key of ``python -m cachelab`` and ``python -m cachelab.tune``, from the config
  schema (``cachelab.config.RunConfig``) with the defaults and comments of ``conf/config.yaml`` / ``conf/tune.yaml``,
  and the choices of every config group (``conf/`` and the policies generated from the registry).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from pathlib import Path

from mkdocs.structure.files import File
from omegaconf import MISSING

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
#: The digits model, where the tune knobs are shown: its steps and blocks.
STEPS, BLOCKS = 28, 12


def on_files(files, config):
    for name, content in (("reference/policies.md", policy_catalogue()), ("reference/config.md", config_reference())):
        files.append(File.generated(config, name, content=content))
    return files


# -- the policy catalogue ---------------------------------------------------------------------------------------

def built_in_policies() -> dict[str, type]:
    import cachelab

    return {name: cls for name, cls in cachelab.registered_policies().items() if cls.__module__.startswith("cachelab.policies.")}


def cell(value) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return "`" + text.replace("|", "\\|") + "`"


def field_default(field: dataclasses.Field):
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def tune_knob(cls) -> str:
    from cachelab.tune.knobs import Knob, Space, knob_for

    knob = knob_for(cls, STEPS, BLOCKS)
    if knob is None:
        return "none: `python -m cachelab.tune` leaves it out"
    if isinstance(knob, Space):
        return (f"several knobs searched with Optuna: `{'`, `'.join(Space.keys)}` (on the digits model: up to "
                f"{knob.max_head} head blocks, {knob.max_tail} tail blocks, {knob.max_warmup} warm-up steps)")
    assert isinstance(knob, Knob)
    values = ", ".join(str(value) for value in knob.values)
    return f"`{knob.key}`, bisected over {values} (safest first; on the digits model, {STEPS} steps, {BLOCKS} blocks)"


def stand_in_knob(cls) -> str:
    from cachelab.forecasters import FORECASTERS
    from cachelab.policies.base import Forecasts

    names = ", ".join(f"`{name}`" for name in sorted(FORECASTERS))
    if issubclass(cls, Forecasts):
        default = field_default(next(f for f in dataclasses.fields(cls) if f.name == "forecaster"))
        return (f"`forecaster=` (default `{default}`; one of {names}) and `forecaster_order=` stand in for what it "
                "skips; recorded only when set")
    return "none (it chooses its own stand-in)"


def policy_section(name: str, cls) -> str:
    from cachelab.policies.configs import policy_node

    doc = inspect.cleandoc(cls.__doc__ or "")
    lines = [f"## `{name}`", "", f"`{cls.__module__}.{cls.__name__}` — `{repr(cls())}`", "", doc, ""]
    lines += [f"**Parity:** {cls.parity or 'not stated'}", ""]
    policy = cls()  # some policies derive their unit, roles or signals from their settings: the defaults' here
    lines += [f"**Unit:** `{policy.unit}`" + (f", roles {', '.join(f'`{r}`' for r in policy.roles)}" if policy.unit != "step" else "")]
    if policy.signals:
        lines[-1] += "; **signals:** " + ", ".join(f"`{signal}`" for signal in policy.signals)
    lines += ["", f"**Tuned by `python -m cachelab.tune`:** {tune_knob(cls)}", "",
              f"**Stand-in knob:** {stand_in_knob(cls)}", ""]
    if cls.calibrated:
        families = ", ".join(sorted(cls.published)) or "none"
        lines += [f"**Calibrated arguments:** {', '.join(f'`{key}`' for key in cls.calibrated)} (published numbers for: "
                  f"{families}; others: `python -m cachelab.calibrate`)", ""]
    if cls.bound:
        lines += ["**A bound, not deployable:** reports keep it off the Pareto front.", ""]
    if dataclasses.is_dataclass(cls):
        cli = policy_node(cls) or {}
        rows = ["| field | default | `policy=` default | recorded |", "|---|---|---|---|"]
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            recorded = "when set" if field.metadata.get("when_set") else ("no" if not field.metadata.get("recorded", True) else "yes")
            shown = cell(cli[field.name]) if field.name in cli else "-"
            rows.append(f"| `{field.name}` | {cell(field_default(field))} | {shown} | {recorded} |")
        lines += rows if len(rows) > 2 else ["No settings."]
        lines += ["", example(name), ""]
    return "\n".join(lines)


def peer(parity: str) -> str:
    """The peer a parity line names (its first clause), or none."""
    if parity.startswith("none"):
        return "none"
    return re.match(r'^(?:unit="\w+": )?([^:,;(]+)', parity)[1].strip()


#: Policies whose signal needs video latents: their example runs on the embedded video model.
VIDEO_ONLY = {"seacache"}


def example(name: str) -> str:
    model = " model=video_digits" if name in VIDEO_ONLY else ""
    return f"```bash\npython -m cachelab policy={name}{model}\n```"


def policy_catalogue() -> str:
    policies = built_in_policies()
    index = ["| policy | class | unit | parity |", "|---|---|---|---|"]
    for name, cls in sorted(policies.items()):
        index.append(f"| [`{name}`](#{name}) | `{cls.__name__}` | {cls().unit} | {peer(cls.parity)} |")
    head = ["# Policy catalogue", "",
            "Generated at build time from `cachelab.registered_policies()` (`docs/_hooks/reference.py`): every built-in "
            "policy's docstring, settings (dataclass fields) and defaults, the knob `python -m cachelab.tune` searches "
            "(`tune_knob`), the stand-in knob and the parity status (the class attribute `parity`: the peer implementation "
            "it matches and the test that shows it). `policy=<name>` on the command line is made from the same fields; "
            "its defaults differ from the class's only where the class says so (`cli_defaults`).", "",
            "A `recorded` field goes into `result.json` and the run's records; `when set`: only once it differs from "
            "its default.", ""]
    return "\n".join(head + index + [""] + [policy_section(name, cls) for name, cls in sorted(policies.items())]) + "\n"


# -- the config reference ---------------------------------------------------------------------------------------

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w]*):(?P<value>[^#]*)(#(?P<comment>.*))?$")
COMMENT = re.compile(r"^(?P<indent> *)#(?P<comment>.*)$")


def yaml_keys(path: Path) -> dict[str, tuple[str, str]]:
    """key path -> (value as written, comment) for every key of a yaml file (the `hydra:` and `defaults:` blocks left out)."""
    keys: dict[str, tuple[str, str]] = {}
    stack: list[tuple[int, str]] = []
    last = None
    for line in path.read_text().splitlines():
        match = KEY.match(line)
        if match:
            indent = len(match["indent"])
            while stack and stack[-1][0] >= indent:
                stack.pop()
            key = ".".join([k for _, k in stack] + [match["key"]])
            stack.append((indent, match["key"]))
            if key.split(".")[0] in ("hydra", "defaults"):
                last = None
                continue
            keys[key] = (match["value"].strip(), (match["comment"] or "").strip())
            last = key
            continue
        comment = COMMENT.match(line)
        if comment and last and len(comment["indent"]) > 0:  # a comment continued under its key
            value, text = keys[last]
            keys[last] = (value, f"{text} {comment['comment'].strip()}".strip())
        else:
            last = None if not line.startswith(" ") else last
    return keys


def type_name(hint) -> str:
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    text = text.replace("typing.", "").replace("cachelab.config.", "")
    return text  # Optional[...] kept: a `|` would split a table cell


#: What the keys whose yaml line has no comment mean.
MEANINGS = {
    "steps": "denoising steps; default: the model's (`model.steps`)",
    "height": "image height in pixels; default: the model's, a multiple of `model.size_multiple`",
    "width": "image width in pixels; default: the model's",
    "guidance": "guidance scale passed as `model.guidance_arg`; default: the model's (null: not passed)",
    "num_frames": "video frames; default: the model's (null for image models)",
    "cache_dir": "the reference store: uncached images keyed by model, prompts, seeds and settings (`$CACHELAB_CACHE_DIR`)",
    "save_images": "write every image under `images/` and `grid.png` in the run's folder",
    "model.name": "the model's name in results and tables",
    "model.family": "the transformer family (`cachelab/models/specs.py`): its block layout and published numbers",
    "model.hub_id": "the Hugging Face hub id, looked up in the local cache (null: embedded)",
    "model.path": "a local directory with the pipeline (`model_index.json`), instead of the hub cache",
    "model.revision": "the hub revision to look up",
    "model.dtype": "float32, float16 or bfloat16",
    "model.steps": "default `steps`",
    "model.height": "default `height`",
    "model.width": "default `width`",
    "model.guidance": "default `guidance`",
    "model.guidance_arg": "the pipeline argument that takes `guidance` (`guidance_scale`, `true_cfg_scale`, ...)",
    "model.num_frames": "default `num_frames` (video models)",
    "model.size_multiple": "height and width must be multiples of it (VAE scale x patch size)",
    "model.frame_multiple": "`num_frames - 1` must be a multiple of it (the VAE's temporal scale)",
    "model.threads": "default `threads`",
    "model.prompts": "the default prompts",
    "model.metric": "the model's own metric: `name`, `function` (`package.module:function(images, prompts)`), `format`",
    "model.call_kwargs": "further arguments of every pipeline call",
    "logger.name": "`wandb` or `none` (set by `logger=`)",
    "logger.project": "the W&B project",
    "logger.entity": "the W&B entity (null: your default)",
    "logger.mode": "online / offline / disabled; null: decide from the environment",
    "logger.group": "null: the sweep (name/timestamp) in multirun, none for a single run",
    "logger.tags": "W&B tags",
}


def schema_rows(cls, prefix: str, yaml: dict[str, tuple[str, str]]) -> list[str]:
    rows = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = prefix + field.name
        hint = hints.get(field.name, field.type)
        if dataclasses.is_dataclass(hint) and key not in ("model", "logger"):
            rows += schema_rows(hint, key + ".", yaml)
            continue
        value, comment = yaml.get(key, ("", ""))
        if not value and field.default is not dataclasses.MISSING and field.default is not MISSING:
            default = field.default
            value = "null" if default is None else str(default).lower() if isinstance(default, bool) else str(default)
        elif not value and field.default_factory is not dataclasses.MISSING:
            value = str(field.default_factory())
        if key in ("model", "policy", "logger"):
            value, comment = "(a config group)", f"`{key}=<choice>`: see the groups below; `{key}.<key>=...` sets one of its keys"
        comment = comment or MEANINGS.get(key, "")
        rows.append(f"| `{key}` | `{type_name(hint)}` | {('`' + value + '`') if value else '-'} | {comment.replace('|', '/')} |")
    return rows


def group_choices() -> list[str]:
    lines = []
    for group in ("model", "logger", "experiment", "hydra/launcher"):
        lines += [f"### `{group}=`", "", "| choice | what it is |", "|---|---|"]
        for path in sorted((CONF / group).glob("*.yaml")):
            first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines()
                          if line.startswith("#") and "@package" not in line), "")
            if group == "model":
                values = yaml_keys(path)
                hub = values.get("hub_id", ("", ""))[0]
                first = (f"family `{values['family'][0]}`, " + (f"`{hub}`" if hub not in ("", "null") else "embedded")
                         + f", {values['steps'][0]} steps, {values['height'][0]}x{values['width'][0]}"
                         + (f"; {first}" if first else ""))
            lines.append(f"| `{path.stem}` | {first.replace('|', '/')} |")
        lines.append("")
    lines += ["### `policy=`", "", "Every registered policy, made from its class (no yaml; see the "
              "[policy catalogue](policies.md)): " + ", ".join(f"`{name}`" for name in sorted(built_in_policies())) + ". "
              "A policy of your own: a yaml with `name:` and `module:` in a folder on `hydra.searchpath`.", ""]
    variants = sorted(p.relative_to(CONF / "variant").with_suffix("").as_posix() for p in (CONF / "variant").rglob("*.yaml"))
    lines += ["### `variant=`", "", "Whole-policy choices that the ablations sweep over: "
              + ", ".join(f"`{v}`" for v in variants) + ".", ""]
    return lines


def config_reference() -> str:
    from cachelab.config import LoggerConfig, ModelConfig, RunConfig

    run = yaml_keys(CONF / "config.yaml")
    lines = ["# Configuration reference", "",
             "Generated at build time (`docs/_hooks/reference.py`) from the config schema `cachelab.config.RunConfig` "
             "and the defaults and comments of `conf/config.yaml`. Every value is checked before any model loads: a "
             "mistake is one line and exit status 2. `python -m cachelab --help` prints the same keys.", "",
             "## `python -m cachelab` keys", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += schema_rows(RunConfig, "", run)
    lines += ["", "`threshold` replaces the policy's own (`null`: the policy's default). `policy.<field>=...` sets any "
              "setting of the chosen policy (its fields: the [policy catalogue](policies.md)). `config=<file>` (first "
              "argument) loads a config written by `python -m cachelab.tune`; more overrides may follow it.", ""]
    lines += ["## `model.*`", "", "Set by `model=<choice>`; any key can be overridden (`model.path=/dir`). Defaults "
              "shown are the schema's; each `conf/model/<choice>.yaml` sets its own.", "",
              "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += schema_rows(ModelConfig, "model.", {})
    lines += ["", "## `logger.*`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += schema_rows(LoggerConfig, "logger.", {})
    tune = yaml_keys(CONF / "tune.yaml")
    lines += ["", "## `python -m cachelab.tune` keys", "",
              "Every key above describes the validation runs; these are the tune's own (`conf/tune.yaml`).", "",
              "| key | default | meaning |", "|---|---|---|"]
    for key, (value, comment) in tune.items():
        if key.split(".")[0] in ("target", "policies", "tune", "timing") and value:
            lines.append(f"| `{key}` | `{value}` | {comment.replace('|', '/')} |")
    lines += ["", "## Config groups", ""] + group_choices()
    return "\n".join(lines) + "\n"

