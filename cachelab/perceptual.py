"""Perceptual figures of cached images, opt-in (`pip install -e ".[metrics]"`), through maintained implementations
(the figures mean something only with the published weights; the tests run the same code on random backbones):

- ``lpips``: LPIPS (AlexNet) of each cached image against its uncached reference (torchmetrics; needs torchvision);
- ``clip_score``: CLIP score of each image against its prompt, cached and reference (torchmetrics with a CLIP model
  from transformers, loaded from a local folder or the Hugging Face cache);
- ``image_reward``: ImageReward of each image for its prompt, cached and reference (the ``image-reward`` package);
- ``fid``: FID of a set of cached images against the uncached set (torchmetrics' InceptionV3 from torch-fidelity);
  ``fid_clip``: the same distance over the CLIP model's image features (no torchvision needed).

Images are float arrays in [0, 1], (N, H, W, C); videos (N, F, H, W, C) are scored frame by frame and a video's
figure is the mean over its frames (FID: over all frames). Nothing is downloaded: `check` names, in one line,
what is missing and how to get it, before any image is scored.

    python -m cachelab.perceptual <run or sweep folders> --metrics clip_score,lpips,fid_clip [--clip-model ID|DIR]

adds the figures to each finished job's result.json (from its saved images), rewrites a sweep's summary.csv /
summary.md and prints the table; exit status 2, one line, when a metric cannot run here.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

METRICS = ("lpips", "clip_score", "image_reward", "fid", "fid_clip")
SET_METRICS = ("fid", "fid_clip")  # over a set of images, not per image
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch16"
IMAGE_REWARD_WEIGHTS = "ImageReward.pt"


class MetricUnavailable(RuntimeError):
    """A metric's package or weights are not on this machine (the message says what to install or download)."""


@dataclass
class Options:
    """Where the metrics' weights are: ``clip_model`` a folder or a Hugging Face id in the local cache."""

    clip_model: str = DEFAULT_CLIP_MODEL
    image_reward_root: str = "~/.cache/ImageReward"
    device: str = "cpu"
    batch: int = 16


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _torchvision_usable() -> str | None:
    """None when torchvision imports with this torch; else why not."""
    if not _installed("torchvision"):
        return "torchvision is not installed"
    try:
        import torchvision  # noqa: F401
    except Exception as error:  # a build for another torch fails while registering its operators
        return f"torchvision does not load with torch {_torch_version()} ({type(error).__name__}: {str(error).splitlines()[0]})"
    return None


def _torch_version() -> str:
    import torch

    return torch.__version__


def _hub_checkpoint(name: str) -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / name


def inception_weights() -> tuple[str, Path]:
    """Where torch-fidelity downloads its InceptionV3 weights from, and the file torch.hub loads them from."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3, _hub_checkpoint(Path(URL_INCEPTION_V3).name)


def clip_model_dir(name: str) -> Path:
    """The local folder of a CLIP model: ``name`` itself, or its snapshot in the Hugging Face cache."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise MetricUnavailable(f"clip_model={name}: no config.json in that folder (a CLIPModel saved with save_pretrained)")
        return folder
    if name.startswith((".", "~", os.sep)) or name.count("/") > 1:
        raise MetricUnavailable(f"clip_model={name}: no such folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise MetricUnavailable(f"the CLIP model {name} is not in the Hugging Face cache ({HF_HUB_CACHE}): download it with "
                                f"`hf download {name}`, or give clip_model=<a folder with a saved CLIPModel>") from None


def check(names: Sequence[str], options: Options = Options()) -> None:
    """Raise MetricUnavailable (one line) for the first metric whose package or local weights are missing."""
    for name in names:
        if name not in METRICS:
            import difflib

            nearest = difflib.get_close_matches(name, METRICS, n=1, cutoff=0)
            raise MetricUnavailable(f"unknown metric {name!r} (nearest: {nearest[0]}); the metrics are {', '.join(METRICS)}")
        if not _installed("torchmetrics") and name != "image_reward":
            raise MetricUnavailable(f"{name} needs torchmetrics: pip install -e \".[metrics]\"")
        if name in ("lpips", "fid"):
            problem = _torchvision_usable()
            if problem:
                raise MetricUnavailable(f"{name} needs torchvision built for the installed torch ({problem}): "
                                        "pip install -e \".[metrics]\" (a torch and torchvision released together), or the "
                                        f"torchvision made for torch {_torch_version()} from the index that torch came from")
        if name == "lpips":
            from torchvision.models import AlexNet_Weights

            weights = _hub_checkpoint(Path(AlexNet_Weights.IMAGENET1K_V1.url).name)
            if not weights.is_file():
                raise MetricUnavailable(f"lpips needs torchvision's AlexNet weights at {weights}: download "
                                        f"{AlexNet_Weights.IMAGENET1K_V1.url} there")
        if name == "fid":
            if not _installed("torch_fidelity"):
                raise MetricUnavailable("fid needs torch-fidelity (its InceptionV3): pip install -e \".[metrics]\"")
            url, weights = inception_weights()
            if not weights.is_file():
                raise MetricUnavailable(f"fid needs torch-fidelity's InceptionV3 weights at {weights}: download {url} there "
                                        "(or use fid_clip)")
        if name in ("clip_score", "fid_clip"):
            clip_model_dir(options.clip_model)
        if name == "image_reward":
            if not _installed("ImageReward"):
                raise MetricUnavailable("image_reward needs the image-reward package: pip install image-reward")
            weights = Path(options.image_reward_root).expanduser() / IMAGE_REWARD_WEIGHTS
            if not weights.is_file():
                raise MetricUnavailable(f"image_reward needs {weights}: download ImageReward.pt and med_config.json of "
                                        "THUDM/ImageReward (`hf download THUDM/ImageReward --local-dir` that folder)")


def _frames(images: np.ndarray) -> tuple[np.ndarray, int]:
    """(N*F, H, W, C) frames of images or videos, and F (1 for images)."""
    if images.ndim == 5:
        return images.reshape(-1, *images.shape[2:]), images.shape[1]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or (N, F, H, W, C), got shape {images.shape}")
    return images, 1


def _per_sample(frame_values: Sequence[float], frames: int) -> list[float]:
    """A video's figure: the mean of its frames'."""
    values = np.asarray(frame_values, dtype=np.float64).reshape(-1, frames)
    return [float(v) for v in values.mean(axis=1)]


def _tensor(frames: np.ndarray):
    """(N, C, H, W) float tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.clip(frames, 0, 1).transpose(0, 3, 1, 2))).float()


def _batches(count: int, size: int):
    for start in range(0, count, size):
        yield slice(start, min(start + size, count))


def lpips(reference: np.ndarray, cached: np.ndarray, options: Options = Options()) -> list[float]:
    """LPIPS (AlexNet) of each cached image or video (mean over frames) against its reference; 0 = identical."""
    import torch
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    (ref, frames), (out, _) = _frames(reference), _frames(cached)
    metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", reduction="mean", normalize=True).to(options.device)
    values = []
    with torch.no_grad():
        for index in range(len(ref)):  # one pair at a time: torchmetrics reduces over a batch
            pair = _tensor(out[index:index + 1]).to(options.device), _tensor(ref[index:index + 1]).to(options.device)
            values.append(float(metric(*pair)))
            metric.reset()
    return _per_sample(values, frames)


def _embeddings(output):
    """The projected embeddings of a CLIP `get_*_features` call: transformers 5 returns them as the pooler output of
    a model output, transformers 4 (which torchmetrics' CLIPScore expects) as a tensor."""
    return output if hasattr(output, "norm") else output.pooler_output


class _TensorFeatures:
    """A CLIPModel whose `get_image_features` / `get_text_features` return tensors under either transformers."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def to(self, *args, **kwargs):
        self.model = self.model.to(*args, **kwargs)
        return self

    def get_image_features(self, *args, **kwargs):
        return _embeddings(self.model.get_image_features(*args, **kwargs))

    def get_text_features(self, *args, **kwargs):
        return _embeddings(self.model.get_text_features(*args, **kwargs))


def clip_loader(options: Options) -> Callable:
    """What torchmetrics' CLIPScore calls to get (model, processor): the local CLIP model, never a download."""
    def load():
        from transformers import CLIPModel, CLIPProcessor

        folder = clip_model_dir(options.clip_model)
        model = CLIPModel.from_pretrained(folder, local_files_only=True).eval().to(options.device)
        return _TensorFeatures(model), CLIPProcessor.from_pretrained(folder, local_files_only=True)

    return load


def _clip_metric(options: Options):
    from torchmetrics.multimodal.clip_score import CLIPScore

    return CLIPScore(model_name_or_path=clip_loader(options)).to(options.device)


def clip_score(images: np.ndarray, prompts: Sequence[str], options: Options = Options(), metric=None) -> list[float]:
    """CLIP score (torchmetrics: 100 x cosine of the image and prompt embeddings, at least 0) of each image or
    video (mean over frames) for its prompt."""
    import torch

    frames, count = _frames(images)
    if len(prompts) * count != len(frames):
        raise ValueError(f"{len(prompts)} prompts for {len(frames) // count} images")
    texts = [prompt for prompt in prompts for _ in range(count)]
    metric = metric or _clip_metric(options)
    pixels = (_tensor(frames) * 255).round().to(torch.uint8)
    values = []
    with torch.no_grad():
        for index in range(len(frames)):  # one at a time: CLIPScore reduces over a batch
            metric.update(pixels[index:index + 1].to(options.device), texts[index:index + 1])
            values.append(float(metric.compute()))
            metric.reset()
    return _per_sample(values, count)


def _image_reward_model(options: Options):
    import ImageReward

    root = Path(options.image_reward_root).expanduser()
    return ImageReward.load(str(root / IMAGE_REWARD_WEIGHTS), device=options.device, download_root=str(root))


def image_reward(images: np.ndarray, prompts: Sequence[str], options: Options = Options(), model=None) -> list[float]:
    """ImageReward of each image or video (mean over frames) for its prompt (the image-reward package's model)."""
    from PIL import Image

    frames, count = _frames(images)
    model = model or _image_reward_model(options)
    texts = [prompt for prompt in prompts for _ in range(count)]
    values = [float(model.score(text, [Image.fromarray((np.clip(frame, 0, 1) * 255).round().astype(np.uint8))]))
              for text, frame in zip(texts, frames)]
    return _per_sample(values, count)


class ClipFeatures:
    """The CLIP model's image embedding as FID's feature extractor (``fid_clip``): (N, 3, H, W) uint8 in, (N, D) out."""

    def __new__(cls, options: Options):
        import torch

        model, processor = clip_loader(options)()

        class Features(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model.model
                self.num_features = model.config.projection_dim

            def forward(self, pixels):
                inputs = processor(images=[p.cpu() for p in pixels], return_tensors="pt")
                return _embeddings(self.model.get_image_features(inputs["pixel_values"].to(pixels.device)))

        return Features()


def fid(reference_sets: Sequence[np.ndarray], cached: np.ndarray, feature="inception", options: Options = Options()) -> float:
    """FID of the cached images (all frames of videos) against the uncached ones (torchmetrics'
    FrechetInceptionDistance); ``feature``: "inception" (torch-fidelity's InceptionV3), or an nn.Module with a
    ``num_features`` (ClipFeatures for ``fid_clip``)."""
    import torch
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=2048 if feature == "inception" else feature, reset_real_features=False,
                                      normalize=False).to(options.device)
    with torch.no_grad():
        for images, real in [*((r, True) for r in reference_sets), (cached, False)]:
            frames, _ = _frames(images)
            pixels = (_tensor(frames) * 255).round().to(torch.uint8)
            for part in _batches(len(pixels), options.batch):
                metric.update(pixels[part].to(options.device), real=real)
        return float(metric.compute())


def evaluate(names: Sequence[str], reference: np.ndarray, cached: np.ndarray, prompts: Sequence[str],
             options: Options = Options()) -> dict:
    """The per-image figures of `names` as result keys: `lpips` (mean) and `lpips_per_prompt`; `clip_score`,
    `reference_clip_score` and `clip_score_per_prompt`; the same for `image_reward`. Set metrics (fid) are
    computed over a sweep's sets: `fid_of_sets`."""
    result = {}
    if "lpips" in names:
        values = lpips(reference, cached, options)
        result.update(lpips=float(np.mean(values)), lpips_per_prompt=values)
    for name, score in (("clip_score", clip_score), ("image_reward", image_reward)):
        if name in names:
            scorer = _clip_metric(options) if name == "clip_score" else _image_reward_model(options)  # loaded once
            values, reference_values = score(cached, prompts, options, scorer), score(reference, prompts, options, scorer)
            result.update({name: float(np.mean(values)), f"reference_{name}": float(np.mean(reference_values)),
                           f"{name}_per_prompt": values})
    return result


def fid_of_sets(names: Sequence[str], reference: np.ndarray, cached_sets: dict[str, np.ndarray],
                options: Options = Options()) -> dict[str, dict[str, float]]:
    """{job: {fid: ..., fid_clip: ...}}: each cached set of a sweep against the (shared) uncached set."""
    features = {}
    if "fid" in names:
        features["fid"] = "inception"
    if "fid_clip" in names:
        features["fid_clip"] = ClipFeatures(options)
    return {job: {name: fid([reference], images, feature, options) for name, feature in features.items()}
            for job, images in cached_sets.items()}


def _read_pngs(folder: Path, kind: str) -> np.ndarray:
    from PIL import Image

    files = sorted(folder.glob(f"[0-9][0-9][0-9]_{kind}.png"))
    return np.stack([np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255 for f in files]) if files else np.zeros(0)


def job_folders(folder: Path) -> list[Path]:
    """A run's folder, or a sweep's finished job folders (those with result.json and saved images)."""
    from .tracking.results import RESULT_FILE

    jobs = [folder] if (folder / RESULT_FILE).is_file() else sorted(p.parent for p in folder.glob(f"*/{RESULT_FILE}"))
    return [job for job in jobs if (job / "images").is_dir()]


def score_folders(folders: Sequence[Path], names: Sequence[str], options: Options) -> list[dict]:
    """Add the figures of `names` to every finished job's result.json below `folders`; the updated results."""
    from .tracking.results import RESULT_FILE, read_result, replace_file, to_json
    from .tracking.sweep import write_summary

    results = []
    for folder in folders:
        for job in job_folders(folder):
            result = read_result(job / RESULT_FILE)
            if result.get("status", "done") != "done":
                continue
            reference, cached = _read_pngs(job / "images", "reference"), _read_pngs(job / "images", "cached")
            prompts = result.get("prompts") or []
            figures = evaluate(names, reference, cached, prompts[:len(cached)], options)
            for metric_name, value in fid_of_sets(names, reference, {job.name: cached}, options)[job.name].items():
                figures[metric_name] = value
            result.update(figures, perceptual=dict(metrics=list(names), clip_model=options.clip_model, source="images/*.png (8 bit)"))
            replace_file(job / RESULT_FILE, to_json(result) + "\n")
            results.append({**result, "job": job.name})
        if not (folder / RESULT_FILE).is_file() and (folder / "summary.csv").is_file():
            write_summary(folder)
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m cachelab.perceptual", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="run folders or sweep folders of python -m cachelab")
    parser.add_argument("--metrics", required=True, help=f"comma-separated, of: {', '.join(METRICS)}")
    parser.add_argument("--clip-model", default=DEFAULT_CLIP_MODEL, help="a Hugging Face id in the local cache, or a folder")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.metrics.split(",") if name.strip()]
    options = Options(clip_model=args.clip_model, device=args.device)
    try:
        check(names, options)
        missing = [str(folder) for folder in args.folders if not job_folders(folder)]
        if missing:
            raise MetricUnavailable(f"no finished job with saved images (save_images=true) in {', '.join(missing)}")
    except MetricUnavailable as error:
        print(f"cachelab.perceptual: error: {error}", file=sys.stderr)
        return 2
    from .notices import silence_notices
    from .tracking.tables import results_table

    silence_notices()
    results = score_folders(args.folders, names, options)
    print(results_table(results, with_job=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
