"""The embedded video model: offline loading, generation quality on its own metric, the metric itself, and a
cached run through the runner with its metric in the table."""

import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from test_runner_fixtures import composed

from cachelab import zoo
from cachelab.config import validate
from cachelab.runner import run_experiment
from cachelab.tracking.tables import reference_row, results_table
from cachelab.zoo.data import load_digits_8x8
from cachelab.zoo.video_data import (
    DIRECTIONS,
    NUM_FRAMES,
    all_video_prompts,
    corner_path,
    digit_tiles,
    make_clip,
    parse_video_prompt,
    video_prompt,
)
from cachelab.zoo.video_metric import directions_of, video_accuracy, video_accuracy_of_prompts


@pytest.fixture(scope="module")
def pipe():
    pipe = zoo.load_pipeline("video_digits")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def true_clips():
    """120 clips of real digits, every direction, offsets across 4..12: (videos, digits, directions)."""
    images, labels = load_digits_8x8()
    tiles = digit_tiles(images[:120])
    directions = [DIRECTIONS[i % 4] for i in range(120)]
    clips = torch.stack([make_clip(tile, d, 4 + i % 9) for i, (tile, d) in enumerate(zip(tiles, directions))])
    return clips.numpy(), labels[:120], directions


def test_prompts_name_a_digit_and_a_direction():
    prompts = all_video_prompts()
    assert len(prompts) == 40 and prompts[1] == "the digit 0 moving right" == video_prompt(0, "right")
    assert parse_video_prompt("the digit 3 moving left") == (3, "left")
    assert parse_video_prompt("the digit 3 moving sideways") is None
    with pytest.raises(ValueError, match="direction must be one of"):
        video_prompt(3, "sideways")


def test_a_clip_slides_two_pixels_a_frame():
    assert corner_path("left", 8) == [(8, 16 - 2 * f) for f in range(NUM_FRAMES)]
    assert corner_path("down", 5) == [(2 * f, 5) for f in range(NUM_FRAMES)]


def test_the_metric_reads_true_clips(true_clips):
    videos, digits, directions = true_clips
    scores = video_accuracy(videos, digits, directions)
    assert scores["digit"] >= 0.95 and scores["motion"] == 1.0
    rgb = np.repeat(videos[..., None], 3, axis=-1)  # WanPipeline's np frames: (N, F, H, W, 3)
    assert video_accuracy(rgb, digits, directions) == scores
    assert directions_of(videos[:, ::-1]) == [{"left": "right", "right": "left", "up": "down", "down": "up"}[d]
                                              for d in directions]


def test_the_metric_fails_blank_and_still_videos(true_clips):
    videos, digits, directions = true_clips
    assert video_accuracy(np.zeros_like(videos), digits, directions) == {"digit": 0.0, "motion": 0.0}
    still = np.repeat(videos[:, :1], NUM_FRAMES, axis=1)
    assert video_accuracy(still, digits, directions)["motion"] == 0.0


def test_the_metric_checks_its_input(true_clips):
    videos, digits, directions = true_clips
    with pytest.raises(ValueError, match="120 videos, 3 digits"):
        video_accuracy(videos, digits[:3], directions)
    with pytest.raises(ValueError, match="unknown directions"):
        video_accuracy(videos[:1], digits[:1], ["sideways"])
    with pytest.raises(ValueError, match=r"expected videos of shape"):
        video_accuracy(videos[0], digits[:1], directions[:1])
    assert video_accuracy_of_prompts(videos[:1], ["a cat"]) is None and video_accuracy_of_prompts(videos[:0], []) is None


def test_checkpoint_is_safetensors_only_and_small():
    files = [f for f in zoo.path("video_digits").rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20


def test_loads_offline_as_a_wan_pipeline_whose_default_call_fits(pipe):
    assert isinstance(pipe, WanPipeline)
    frames = pipe("the digit 4 moving up", num_inference_steps=2, output_type="np").frames
    assert frames.shape == (1, NUM_FRAMES, 32, 32, 3)


def test_generates_the_prompted_digit_moving_the_prompted_way(pipe):
    prompts = all_video_prompts()[::3]  # 14 prompts: every digit, every direction
    frames = pipe(prompts, num_inference_steps=16, generator=torch.Generator().manual_seed(5), output_type="np").frames
    scores = video_accuracy_of_prompts(frames, prompts)
    assert scores["digit"] >= 0.75 and scores["motion"] >= 0.75, scores


def test_a_cached_run_reports_both_scores_in_its_table(tmp_path):
    overrides = ["model=video_digits", "policy=first_block", "threshold=0.1", "steps=8", "num_prompts=2",
                 "timing.prompts=1", "timing.repeats=1", "timing.warmup=0", "logger=none", f"cache_dir={tmp_path}",
                 "quiet=true"]
    result = run_experiment(validate(composed(overrides))).result
    assert set(result["video_accuracy"]) == {"digit", "motion"}
    assert result["computed_fraction_per_branch"].keys() == {"cond", "uncond"}
    table = results_table([reference_row(result), result])
    assert "video_accuracy" in table and "digit " in table and ", motion " in table
