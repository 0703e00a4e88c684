"""Find a model's pipeline (embedded, `model.path`, or the Hugging Face cache) and load it.

`locate` only reads a few small files, so a missing model fails in a moment, before anything large loads.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .. import zoo
from ..calibration import use_calibration_file
from ..zoo.checkpoint import CheckpointError, from_pretrained, pipeline_components

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".safetensors.index.json", ".bin.index.json", ".gguf", ".pt", ".pth")


class WeightsNotFound(FileNotFoundError):
    """The model's pipeline is not on this machine; the message says where it looked and what to do."""


def locate(model) -> Path:
    """The directory of `model`'s saved pipeline: `model.path`, the embedded checkpoint, or the HF cache."""
    if model.path:
        directory = Path(model.path).expanduser().resolve()
        _check_pipeline_dir(directory, model, f"model.path={model.path}")
        return directory
    if model.hub_id is None:
        return _embedded(model.name)
    from huggingface_hub import constants, try_to_load_from_cache

    found = try_to_load_from_cache(model.hub_id, "model_index.json", revision=model.revision)
    if not isinstance(found, str):
        raise WeightsNotFound(
            f"model={model.name}: {model.hub_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
            f"and model.path is not set. Get the weights with `hf download {model.hub_id}` "
            f"(`huggingface-cli download {model.hub_id}` in older huggingface_hub) or set model.path=/dir "
            "to a saved pipeline; model=digits runs offline."
        )
    directory = Path(found).parent
    _check_pipeline_dir(directory, model, f"the Hugging Face cache ({directory})")
    return directory


def _embedded(name: str) -> Path:
    try:
        directory = zoo.path(name)
        zoo.check_checkpoint(directory)
    except (ValueError, zoo.CheckpointError) as error:
        raise WeightsNotFound(f"model={name}: the embedded checkpoint is not usable: {error}") from None
    return directory


def _check_pipeline_dir(directory: Path, model, where: str) -> None:
    if model.hub_id:
        advice = (f"get the weights with `hf download {model.hub_id}` or set model.path=/dir to a pipeline "
                  "saved with save_pretrained; model=digits runs offline.")
    else:
        advice = "point model.path to a pipeline saved with save_pretrained, or drop it for the embedded model."
    index = directory / "model_index.json"
    if not index.is_file():
        raise WeightsNotFound(f"model={model.name}: no model_index.json in {where}; {advice}")
    try:
        components = pipeline_components(directory)
    except CheckpointError as error:
        raise WeightsNotFound(f"model={model.name}: {where}: {error}; {advice}") from None
    for component in components:
        folder = directory / component
        if not folder.is_dir():
            raise WeightsNotFound(f"model={model.name}: {where} lacks the {component}/ folder; {advice}")
        has_config = (folder / "config.json").is_file()
        if has_config and not any(f.name.endswith(WEIGHT_SUFFIXES) for f in folder.iterdir()):
            raise WeightsNotFound(f"model={model.name}: {where} has no weights in {component}/ (partial download?); {advice}")


def torch_device(name: str) -> str:
    if name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_pipeline(model, device: str = "auto"):
    """The diffusers pipeline of `model` on `device`, in `model.dtype`, with the numbers of a
    `calibration.json` beside its weights given to its transformer (`cachelab.calibration`)."""
    directory = locate(model)
    if model.hub_id is None:
        pipe = zoo.load_pipeline(directory, torch_dtype=getattr(torch, model.dtype))
    else:
        from diffusers import DiffusionPipeline

        pipe = from_pretrained(DiffusionPipeline, directory, getattr(torch, model.dtype))
        use_calibration_file(pipe.transformer, directory)
    return pipe.to(torch_device(device))
