"""The shipped models load with plain diffusers, as a reader would load them: `<Pipeline>.from_pretrained(folder)`
with no cachelab loader and no extra keywords. WanPipeline needs accelerate for that (its transformer keeps modules
in fp32, which diffusers refuses without accelerate's low-memory loading), so accelerate is a dependency."""

import importlib.util

import pytest
from diffusers import FluxPipeline, WanPipeline

from cachelab import zoo
from cachelab.zoo.video_data import CALL_DEFAULTS as VIDEO_CALL_DEFAULTS


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_accelerate_is_installed():
    assert importlib.util.find_spec("accelerate") is not None, "pip install accelerate (a dependency in pyproject.toml)"


def test_digits_loads_with_plain_flux_pipeline():
    pipe = FluxPipeline.from_pretrained(zoo.path("digits"))
    assert type(pipe) is FluxPipeline
    pipe.set_progress_bar_config(disable=True)
    out = pipe(zoo.prompts_for([4]), num_inference_steps=2, output_type="np", **zoo.CALL_DEFAULTS)
    assert out.images.shape == (1, 32, 32, 3)


def test_video_digits_loads_with_plain_wan_pipeline():
    pipe = WanPipeline.from_pretrained(zoo.path("video_digits"))
    assert type(pipe) is WanPipeline
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("the digit 3 moving left", num_inference_steps=2, output_type="np", **VIDEO_CALL_DEFAULTS).frames
    assert frames.shape == (1, VIDEO_CALL_DEFAULTS["num_frames"], VIDEO_CALL_DEFAULTS["height"], VIDEO_CALL_DEFAULTS["width"], 3)
