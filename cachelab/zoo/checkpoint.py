"""Saved diffusers pipeline folders: the components model_index.json lists, a check that names a missing or
corrupt file before anything loads, and `from_pretrained` without the `torch_dtype` deprecation warning."""

from __future__ import annotations

import json
import struct
import warnings
from pathlib import Path

# Files each kind of component needs, by the library class that model_index.json names.
_MODEL_WEIGHTS = ("diffusion_pytorch_model.safetensors", "model.safetensors")
_NEEDS = {
    "scheduler": ("scheduler_config.json",),
    "tokenizer": ("tokenizer_config.json", "tokenizer.json"),
}


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or corrupt (the message names the file)."""


def _read_json(file: Path) -> dict:
    if not file.is_file():
        raise CheckpointError(f"missing checkpoint file: {file}")
    try:
        return json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"corrupt checkpoint file {file}: {err}") from err


def check_safetensors(file: Path) -> None:
    """The header parses and the file is as long as the tensors it declares."""
    if not file.is_file():
        raise CheckpointError(f"missing checkpoint file: {file}")
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError(f"header of {header_len} bytes in a file of {size} bytes")
            header = json.loads(fh.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, struct.error, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"corrupt safetensors file {file}: {err}") from err
    if 8 + header_len + end != size:
        raise CheckpointError(f"corrupt safetensors file {file}: {size} bytes, header declares {8 + header_len + end}")


def _check_component(folder: Path, class_name: str) -> None:
    if not folder.is_dir():
        raise CheckpointError(f"missing checkpoint folder: {folder}")
    kind = "scheduler" if "Scheduler" in class_name else "tokenizer" if "Tokenizer" in class_name else "model"
    if kind != "model":
        for name in _NEEDS[kind]:
            _read_json(folder / name)
        return
    _read_json(folder / "config.json")
    weights = [folder / name for name in _MODEL_WEIGHTS if (folder / name).exists()]
    for index in folder.glob("*.safetensors.index.json"):
        weights += [folder / shard for shard in sorted(set(_read_json(index)["weight_map"].values()))]
    if not weights:
        raise CheckpointError(f"missing checkpoint file: {folder / _MODEL_WEIGHTS[0]} (no safetensors weights)")
    for file in weights:
        check_safetensors(file)


def pipeline_components(root: Path) -> dict[str, str]:
    """{component folder: library class} of every component that `root`/model_index.json loads from a folder
    (not the `_`-prefixed metadata, not components saved as None)."""
    index = _read_json(Path(root) / "model_index.json")
    return {name: spec[1] for name, spec in index.items()
            if not name.startswith("_") and isinstance(spec, list) and spec[0] is not None}


def check_checkpoint(root: Path) -> None:
    """Raise CheckpointError naming the first missing or corrupt file of the pipeline saved in `root`."""
    root = Path(root)
    if not root.is_dir():
        raise CheckpointError(f"missing checkpoint folder: {root}")
    for name, class_name in pipeline_components(root).items():
        _check_component(root / name, class_name)


def from_pretrained(pipeline_class, directory: Path, torch_dtype, **kwargs):
    """`pipeline_class.from_pretrained(directory, torch_dtype=torch_dtype, **kwargs)`, quietly: newer
    diffusers and transformers prefer `dtype=` and warn about `torch_dtype=`, which older ones only know."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        return pipeline_class.from_pretrained(directory, torch_dtype=torch_dtype, **kwargs)
