"""cachelab.perceptual: CLIP score, FID and ImageReward per image and per video frame through torchmetrics on a small
randomly initialised CLIP (no download), one-line errors naming what is missing, and the CLI that adds the figures
to finished runs (result.json, summary.csv, tables). LPIPS and Inception FID need torchvision: checked where usable."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torchmetrics", reason="the metrics extra: pip install -e '.[metrics]'")

from cachelab import perceptual  # noqa: E402
from cachelab.tracking.results import to_json  # noqa: E402
from cachelab.tracking.sweep import write_summary  # noqa: E402
from cachelab.tracking.tables import results_table  # noqa: E402

PROMPTS = ["a handwritten digit 3", "a handwritten digit 4"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIPModel (16 wide, one layer, 32x32 images) with its tokenizer and PIL image processor, saved."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer
    from transformers.models import clip

    image_processor = getattr(clip, "CLIPImageProcessorPil", CLIPImageProcessor)  # transformers 5 without torchvision: the PIL one

    folder = tmp_path_factory.mktemp("tiny_clip")
    words = ["<|startoftext|>", "<|endoftext|>", "!", "a</w>", "handwritten</w>", "digit</w>", *[f"{d}</w>" for d in range(10)]]
    (folder / "vocab.json").write_text(json.dumps({word: i for i, word in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))
    images = image_processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    config = CLIPConfig(
        text_config=dict(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                           patch_size=8),
        projection_dim=8)
    CLIPModel(config).save_pretrained(folder)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture
def options(tiny_clip):
    return perceptual.Options(clip_model=str(tiny_clip))


def random_images(*shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_clip_score_per_image_and_per_video_frame(options):
    images = random_images(2, 32, 32, 3)
    scores = perceptual.clip_score(images, PROMPTS, options)
    assert len(scores) == 2 and all(0 <= s <= 100 for s in scores)
    assert perceptual.clip_score(images[1:], PROMPTS[1:], options) == pytest.approx(scores[1:], rel=1e-5)
    videos = random_images(2, 3, 32, 32, 3, seed=1)  # (N, F, H, W, C): a video's score is the mean over its frames
    per_video = perceptual.clip_score(videos, PROMPTS, options)
    frames = perceptual.clip_score(videos[0], PROMPTS[:1] * 3, options)
    assert per_video[0] == pytest.approx(np.mean(frames), rel=1e-5) and len(per_video) == 2


def test_evaluate_gives_cached_and_reference_figures(options):
    reference, cached = random_images(2, 32, 32, 3), random_images(2, 32, 32, 3, seed=2)
    figures = perceptual.evaluate(["clip_score"], reference, cached, PROMPTS, options)
    assert set(figures) == {"clip_score", "reference_clip_score", "clip_score_per_prompt"}
    assert figures["clip_score"] == pytest.approx(np.mean(figures["clip_score_per_prompt"]))
    assert figures["reference_clip_score"] == pytest.approx(np.mean(perceptual.clip_score(reference, PROMPTS, options)), rel=1e-5)


def test_fid_over_sets_is_zero_for_the_same_set_and_grows_with_the_difference(options):
    reference = random_images(6, 32, 32, 3)
    noisy = np.clip(reference + 0.3 * random_images(6, 32, 32, 3, seed=3), 0, 1)
    figures = perceptual.fid_of_sets(["fid_clip"], reference, {"same": reference[::-1].copy(), "noisy": noisy,
                                                               "other": random_images(6, 32, 32, 3, seed=4)}, options)
    assert abs(figures["same"]["fid_clip"]) < 1e-4
    assert figures["noisy"]["fid_clip"] > 1e-4 and figures["other"]["fid_clip"] > 1e-4
    videos = random_images(3, 2, 32, 32, 3)  # every frame counts in FID
    same_frames = perceptual.fid([videos], videos.reshape(6, 32, 32, 3), perceptual.ClipFeatures(options), options)
    assert same_frames == pytest.approx(0, abs=1e-4)


def test_image_reward_scores_every_frame_with_the_packages_model():
    class Model:  # ImageReward's interface: score(prompt, [PIL images]) -> float
        def score(self, prompt, images):
            return float(np.asarray(images[0]).mean()) + len(prompt)

    videos = random_images(2, 3, 8, 8, 3)
    scores = perceptual.image_reward(videos, PROMPTS, model=Model())
    expected = [np.mean([np.round(np.clip(f, 0, 1) * 255).mean() + len(p) for f in v]) for v, p in zip(videos, PROMPTS)]
    assert scores == pytest.approx(expected)


def test_what_is_missing_is_named_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    cases = [(["clip_scor"], "unknown metric 'clip_scor' (nearest: clip_score)"),
             (["clip_score"], "hf download openai/clip-vit-base-patch16"),
             (["fid_clip"], "hf download openai/clip-vit-base-patch16")]
    if perceptual._torchvision_usable():
        cases += [(["lpips"], "lpips needs torchvision built for the installed torch"), (["fid"], "fid needs torchvision")]
    if not perceptual._installed("ImageReward"):
        cases += [(["image_reward"], "pip install image-reward")]
    for names, message in cases:
        with pytest.raises(perceptual.MetricUnavailable) as error:
            perceptual.check(names)
        assert message in str(error.value) and "\n" not in str(error.value), names
    with pytest.raises(perceptual.MetricUnavailable, match="no such folder"):
        perceptual.check(["clip_score"], perceptual.Options(clip_model=str(tmp_path / "nothing" / "here")))


@pytest.mark.skipif(bool(perceptual._torchvision_usable()), reason="torchvision does not load here")
def test_lpips_weights_are_named_when_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(perceptual.MetricUnavailable, match="AlexNet weights"):
        perceptual.check(["lpips"])


def fake_sweep(folder, reference, cached_sets):
    """A sweep folder as python -m cachelab writes it: job folders with result.json and images/, summary.csv."""
    for number, (threshold, cached) in enumerate(cached_sets.items()):
        job = folder / f"{number}_threshold={threshold}"
        (job / "images").mkdir(parents=True)
        for i, (r, c) in enumerate(zip(reference, cached)):
            Image.fromarray((r * 255).round().astype(np.uint8)).save(job / "images" / f"{i:03d}_reference.png")
            Image.fromarray((c * 255).round().astype(np.uint8)).save(job / "images" / f"{i:03d}_cached.png")
        result = dict(policy="first_block", threshold=threshold, steps=8, computed_steps=5.0, computed_work=0.6, speedup=1.5,
                      ideal_speedup=1.6, psnr=30.0, ssim=0.9, prompts=PROMPTS, status="done")
        (job / "result.json").write_text(to_json(result))
    write_summary(folder)


def test_the_command_adds_the_figures_to_a_sweeps_results_summary_and_table(tmp_path, tiny_clip):
    reference = random_images(2, 32, 32, 3)
    fake_sweep(tmp_path / "sweep", reference, {0.1: reference, 0.3: random_images(2, 32, 32, 3, seed=5)})
    done = subprocess.run([sys.executable, "-m", "cachelab.perceptual", str(tmp_path / "sweep"), "--metrics", "clip_score,fid_clip",
                           "--clip-model", str(tiny_clip)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    same, other = (json.loads((tmp_path / "sweep" / job / "result.json").read_text())
                   for job in ("0_threshold=0.1", "1_threshold=0.3"))
    assert same["clip_score"] == pytest.approx(same["reference_clip_score"], rel=1e-5) and abs(same["fid_clip"]) < 1e-4
    assert other["fid_clip"] > 1e-4 and len(other["clip_score_per_prompt"]) == 2
    assert other["perceptual"]["metrics"] == ["clip_score", "fid_clip"]
    header = (tmp_path / "sweep" / "summary.csv").read_text().splitlines()[0].split(",")
    assert {"clip_score", "reference_clip_score", "fid_clip"} <= set(header)
    assert "reference clip_score" in done.stdout and "fid_clip" in done.stdout  # the printed table
    assert "fid_clip" in (tmp_path / "sweep" / "summary.md").read_text()


def test_a_missing_model_stops_with_one_line_and_exit_2(tmp_path):
    reference = random_images(2, 32, 32, 3)
    fake_sweep(tmp_path / "sweep", reference, {0.1: reference})
    done = subprocess.run([sys.executable, "-m", "cachelab.perceptual", str(tmp_path / "sweep"), "--metrics", "clip_score"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("cachelab.perceptual: error: the CLIP model openai/clip-vit-base-patch16 is not in the "
                                  "Hugging Face cache")
    assert "clip_score" not in json.loads((tmp_path / "sweep" / "0_threshold=0.1" / "result.json").read_text())


def test_tables_show_the_figures_the_rows_have():
    row = dict(policy="first_block", threshold=0.1, computed_steps=5.0, steps=8, computed_work=0.6, speedup=1.5, ideal_speedup=1.6,
               psnr=30.0, ssim=0.9)
    assert "clip_score" not in results_table([row])
    table = results_table([row, {**row, "clip_score": 31.234, "reference_clip_score": 31.5, "lpips": 0.01234}])
    assert "| clip_score | reference clip_score |" in table and "31.23" in table and "0.0123" in table and "lpips" in table


QUICK_RUN = ["num_prompts=2", "steps=4", "timing.repeats=1", "timing.warmup=0", "logger=none", "policy=fixed_interval"]


def test_a_run_with_metrics_it_cannot_compute_stops_before_generating(tmp_path):
    """LPIPS needs torchvision and its AlexNet weights; HF_HUB_CACHE empty: one line naming what is missing, exit 2."""
    done = subprocess.run([sys.executable, "-m", "cachelab", "metrics=[lpips]", *QUICK_RUN, f"hydra.run.dir={tmp_path}/run"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
                               "TORCH_HOME": str(tmp_path / "torch")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "metrics=['lpips']: lpips needs" in done.stderr
    assert not (tmp_path / "run" / "result.json").exists()


def test_a_run_with_metrics_reports_them_in_its_result_and_table(tmp_path, tiny_clip):
    done = subprocess.run([sys.executable, "-m", "cachelab", "metrics=[clip_score,fid_clip]", f"clip_model={tiny_clip}", *QUICK_RUN,
                           f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(result["clip_score_per_prompt"]) == 2 and np.isfinite([result["clip_score"], result["reference_clip_score"]]).all()
    assert result["fid_clip"] >= 0
    header = [line for line in done.stdout.splitlines() if line.startswith("| policy")][0]
    assert "clip_score" in header and "reference clip_score" in header and "fid_clip" in header


def test_tune_targets_a_perceptual_figure(tmp_path, tiny_clip):
    env = {**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"),
           "TORCH_HOME": str(tmp_path / "torch")}
    tune = [sys.executable, "-m", "cachelab.tune", "policy=fixed_interval", "num_prompts=1", "tune.num_prompts=1", "steps=4",
            "timing.repeats=1", "timing.warmup=0", "logger=none", f"hydra.run.dir={tmp_path}/tune"]
    refused = subprocess.run([*tune, "target.lpips=0.1"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert refused.returncode == 2 and "lpips needs" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    done = subprocess.run([*tune, "target.clip_score=-1000", f"clip_model={tiny_clip}"], capture_output=True, text=True,
                          timeout=900, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "tune" / "tune.json").read_text())
    trials = [trial for policy in record["policies"] for trial in policy["trials"]]
    assert trials and all(np.isfinite(trial["clip_score"]) for trial in trials)
