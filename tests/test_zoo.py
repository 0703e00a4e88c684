"""The embedded digits model: offline loading, generation quality, the digit metric, checkpoint errors."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from PIL import Image

from cachelab import zoo
from cachelab.zoo.data import load_digits_8x8, upsample


@pytest.fixture(scope="module")
def pipe():
    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def copy(tmp_path):
    return shutil.copytree(zoo.path("digits"), tmp_path / "digits")


@pytest.fixture(scope="module")
def real_digits():
    images, labels = load_digits_8x8()
    return upsample(images[:300])[:, 0].numpy(), labels[:300]


def test_unknown_name_lists_available():
    with pytest.raises(ValueError, match="digits"):
        zoo.path("mnist")
    with pytest.raises(ValueError, match="digits"):
        zoo.load_pipeline("mnist")


def test_prompts():
    assert zoo.prompts_for([7, 0]) == ["a handwritten digit 7", "a handwritten digit 0"]
    assert zoo.DIGIT_PROMPT.format(3) == "a handwritten digit 3"


def test_plain_flux_pipeline_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    plain = FluxPipeline.from_pretrained(zoo.path("digits"), local_files_only=True)
    assert type(plain) is FluxPipeline
    assert len(plain.transformer.transformer_blocks) + len(plain.transformer.single_transformer_blocks) >= 12
    out = plain(zoo.prompts_for([1]), num_inference_steps=2, output_type="np", **zoo.CALL_DEFAULTS)
    assert out.images.shape == (1, 32, 32, 3)


def test_checkpoint_is_safetensors_only_and_small():
    files = [f for f in zoo.path("digits").rglob("*") if f.is_file()]
    assert not [f for f in files if f.suffix in {".bin", ".pt", ".pth", ".pkl", ".ckpt"}]
    assert sum(f.stat().st_size for f in files) <= 25 * 2**20


def test_default_call_is_32x32(pipe):
    assert isinstance(pipe, FluxPipeline)
    assert pipe(zoo.prompts_for([4]), num_inference_steps=2).images[0].size == (32, 32)


def test_generates_the_prompted_digits(pipe):
    digits = [0, 3, 5, 7, 8, 9]
    out = pipe(zoo.prompts_for(digits), num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    assert zoo.digit_accuracy(out.images, digits) >= 5 / 6


def test_true_cfg_generates_the_prompted_digits(pipe):
    digits = [1, 2, 4, 6]
    out = pipe(zoo.prompts_for(digits), num_inference_steps=12, negative_prompt="", true_cfg_scale=3.0,
               generator=torch.Generator().manual_seed(1), output_type="np")
    assert zoo.digit_accuracy(out.images, digits) >= 3 / 4


def test_digit_accuracy_on_real_digits(real_digits):
    images, labels = real_digits
    assert zoo.digit_accuracy(images, labels) >= 0.98
    assert zoo.digit_accuracy(images, (labels + 1) % 10) <= 0.05
    as_uint8 = (images * 255).round().astype(np.uint8)
    assert zoo.digit_accuracy(np.repeat(as_uint8[..., None], 3, axis=-1), labels) >= 0.98
    as_pil = [Image.fromarray(im).convert("RGB") for im in as_uint8[:50]]
    np.testing.assert_array_equal(zoo.classify_digits(as_pil), zoo.classify_digits(images[:50]))


def test_digit_accuracy_of_prompts_reads_the_digit_each_prompt_names(real_digits):
    images, labels = real_digits
    assert zoo.digit_accuracy_of_prompts(images, zoo.prompts_for(labels)) == zoo.digit_accuracy(images, labels) >= 0.98
    assert zoo.digit_accuracy_of_prompts(images, zoo.prompts_for((labels + 1) % 10)) <= 0.05
    eights = images[labels == 8][:4]
    assert zoo.digit_accuracy_of_prompts(eights, ["a handwritten digit 8"] * 4) == 1.0


@pytest.mark.parametrize("odd", ["a handwritten digit 18", "a handwritten digit", "A handwritten digit 8",
                                 "a handwritten digit 8.", "a photo of a cat 8", ""])
def test_digit_accuracy_of_prompts_is_none_unless_every_prompt_names_a_digit(real_digits, odd):
    images, labels = real_digits
    prompts = zoo.prompts_for(labels[:3])
    assert zoo.digit_accuracy_of_prompts(images[:3], prompts) == 1.0
    assert zoo.digit_accuracy_of_prompts(images[:4], [*prompts, odd]) is None
    assert zoo.digit_accuracy_of_prompts(images[:0], []) is None


def test_digit_accuracy_checks_lengths(real_digits):
    with pytest.raises(ValueError, match="digits"):
        zoo.digit_accuracy(real_digits[0][:3], [1, 2])


@pytest.mark.parametrize("name", [
    "transformer/diffusion_pytorch_model.safetensors", "vae/config.json", "tokenizer_2/tokenizer.json",
    "model_index.json",
])
def test_missing_file_is_named(copy, name):
    (copy / name).unlink()
    with pytest.raises(zoo.CheckpointError, match=name.split("/")[-1]) as err:
        zoo.load_pipeline(copy)
    assert str(copy / name) in str(err.value)


@pytest.mark.parametrize("name", ["transformer/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_truncated_weights_are_named(copy, name):
    file = copy / name
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    with pytest.raises(zoo.CheckpointError, match="corrupt") as err:
        zoo.load_pipeline(copy)
    assert str(file) in str(err.value)


def test_corrupt_json_is_named(copy):
    (copy / "scheduler" / "scheduler_config.json").write_text("{not json")
    with pytest.raises(zoo.CheckpointError, match="scheduler_config.json"):
        zoo.load_pipeline(copy)


def test_loader_errors_name_the_checkpoint(copy):
    config = copy / "transformer" / "config.json"
    config.write_text(json.dumps(dict(json.loads(config.read_text()), attention_head_dim=16, axes_dims_rope=[4, 6, 6])))
    with pytest.raises(zoo.CheckpointError, match=str(copy)):
        zoo.load_pipeline(copy)


def test_teacache_and_magcache_use_the_numbers_measured_on_the_model(pipe):
    import cachelab
    from cachelab.calibration import read_calibration
    from cachelab.policies.magcache import FLUX_MAG_RATIOS
    from cachelab.policies.teacache import PUBLISHED_COEFFICIENTS

    measured = read_calibration(zoo.path())
    for policy, attribute in [(cachelab.TeaCache(0.2), "coefficients"), (cachelab.MagCache(0.1), "mag_ratios")]:
        executor = cachelab.attach(pipe, policy)
        cachelab.detach(pipe)
        assert getattr(executor.policy, attribute) == measured[policy.name][attribute]
    plain = zoo.load_pipeline(calibrated=False)
    executor = cachelab.attach(plain, cachelab.TeaCache(0.2))
    cachelab.detach(plain)
    assert executor.policy.coefficients == list(PUBLISHED_COEFFICIENTS["flux"])
    assert len(measured["magcache"]["mag_ratios"]) == 28 and FLUX_MAG_RATIOS != tuple(measured["magcache"]["mag_ratios"])


def test_zoo_is_there_after_import_cachelab_without_diffusers():
    code = "import sys, cachelab; print(cachelab.zoo.path()); print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(zoo.path("digits")), "False"]


def test_the_card_is_what_the_card_tool_renders_from_the_checkpoint(copy):
    tool = Path(__file__).parents[1] / "experiments" / "train_digits" / "card.py"
    spec = importlib.util.spec_from_file_location("digits_card", tool)
    card = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(card)
    (copy / "README.md").unlink()
    card.write_card(copy, json.loads((copy / "measurements.json").read_text()))
    assert (copy / "README.md").read_text() == (zoo.path("digits") / "README.md").read_text()
    assert "python experiments/train_digits/calibrate_digits.py --seeds 3" in (copy / "README.md").read_text()
