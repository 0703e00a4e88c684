"""LPIPS and Inception FID through torchvision, on randomly initialised backbones saved where torch.hub looks for
the published weights (no download). They run where the metrics extra is installed (`pip install -e ".[metrics]"`);
tests/test_metrics_extra.py runs them in the venv .ci/run makes with that extra."""

import json
import os
import subprocess
import sys
from importlib.metadata import requires, version
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from cachelab import perceptual

pytestmark = pytest.mark.skipif(bool(perceptual._torchvision_usable()) or not perceptual._installed("torch_fidelity"),
                                reason="needs the metrics extra (torchvision built for this torch, torch-fidelity)")


def save_random_alexnet(checkpoints: Path):
    from torchvision.models import AlexNet_Weights, alexnet

    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), checkpoints / Path(AlexNet_Weights.IMAGENET1K_V1.url).name)


def save_random_inception():
    from torch_fidelity import feature_extractor_inceptionv3 as inception

    torch.manual_seed(0)
    with mock.patch.object(inception, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(inception.FeatureExtractorInceptionV3, "load_state_dict"):
        model = inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), perceptual.inception_weights()[1])


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A TORCH_HOME holding random AlexNet and InceptionV3 weights under the published file names."""
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    save_random_alexnet(checkpoints)
    with mock.patch.dict(os.environ, TORCH_HOME=str(home)):
        save_random_inception()
    return home


@pytest.fixture
def random_backbones(torch_home, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    return torch_home


def images(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_lpips_is_zero_for_the_same_image_and_grows_with_the_noise(random_backbones):
    from torchmetrics.functional.image.lpips import learned_perceptual_image_patch_similarity

    perceptual.check(["lpips"])
    reference = images(3, 32, 32, 3)
    noise = images(3, 32, 32, 3, seed=1) - 0.5
    same, slight, strong = (perceptual.lpips(reference, np.clip(reference + scale * noise, 0, 1)) for scale in (0, 0.1, 0.8))
    assert max(same) < 1e-6 and min(slight) > 0 and np.mean(strong) > np.mean(slight)
    pair = [torch.from_numpy(x[:1].transpose(0, 3, 1, 2)).float() for x in (np.clip(reference + 0.8 * noise, 0, 1), reference)]
    direct = learned_perceptual_image_patch_similarity(*pair, net_type="alex", normalize=True)
    assert strong[0] == pytest.approx(float(direct), rel=1e-5)  # one pair as torchmetrics scores it


def test_lpips_of_a_video_is_the_mean_over_its_frames(random_backbones):
    reference, cached = images(2, 3, 32, 32, 3), images(2, 3, 32, 32, 3, seed=2)
    per_video = perceptual.lpips(reference, cached)
    frames = perceptual.lpips(reference[1], cached[1])
    assert len(per_video) == 2 and per_video[1] == pytest.approx(np.mean(frames), rel=1e-5)


def test_inception_fid_is_zero_for_the_same_set_and_larger_for_another(random_backbones):
    perceptual.check(["fid"])
    reference = images(8, 32, 32, 3)
    figures = perceptual.fid_of_sets(["fid"], reference, {"same": reference[::-1].copy(), "other": images(8, 32, 32, 3, seed=3)})
    assert abs(figures["same"]["fid"]) < 1e-2 * figures["other"]["fid"] and figures["other"]["fid"] > 0


def test_missing_inception_weights_are_named_with_where_to_download_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(perceptual.MetricUnavailable, match=f"InceptionV3 weights at {tmp_path}/hub/checkpoints/") as error:
        perceptual.check(["fid"])
    assert "\n" not in str(error.value) and "download https://" in str(error.value)


def test_a_run_with_lpips_and_fid_reports_them_in_its_result_and_table(tmp_path, torch_home):
    quick = ["num_prompts=2", "steps=4", "timing.repeats=1", "timing.warmup=0", "logger=none", "policy=fixed_interval"]
    done = subprocess.run([sys.executable, "-m", "cachelab", "metrics=[lpips,fid]", *quick, f"hydra.run.dir={tmp_path}/run"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(torch_home)})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(result["lpips_per_prompt"]) == 2 and result["lpips"] > 0 and result["fid"] > 0
    header = [line for line in done.stdout.splitlines() if line.startswith("| policy")][0]
    assert "lpips" in header and "fid" in header


def test_the_installed_pair_is_the_extras_and_diffusers_pipelines_import_beside_it():
    """A torchvision built for another torch breaks `from diffusers import FluxPipeline`; the extra's pair does not."""
    from packaging.requirements import Requirement

    extra = [Requirement(line) for line in requires("cachelab") if 'extra == "metrics"' in line]
    pins = {r.name: str(r.specifier).removeprefix("==") for r in extra if str(r.specifier).startswith("==")}
    assert {name: version(name) for name in ("torch", "torchvision")} == {"torch": pins["torch"], "torchvision": pins["torchvision"]}
    done = subprocess.run([sys.executable, "-c", "from diffusers import FluxPipeline, WanPipeline, CogView4Pipeline"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
