"""Finding a real model's weights: model.path, the Hugging Face cache, and what a miss says."""

import shutil

import huggingface_hub
import pytest
from test_runner_fixtures import composed, saved_tiny_flux

from cachelab.config import validate
from cachelab.models.loading import WeightsNotFound, load_pipeline, locate
from cachelab.zoo import CheckpointError, check_checkpoint


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def flux_model(*overrides):
    return validate(composed(["model=flux", *overrides]), check_weights=False).model


def cache_snapshot(hub_cache, source, repo_id="black-forest-labs/FLUX.1-dev", revision="0123abc"):
    repo = hub_cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(source, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    return repo / "snapshots" / revision


def test_a_miss_says_where_it_looked_and_what_to_do(hub_cache):
    with pytest.raises(WeightsNotFound) as error:
        locate(flux_model())
    message = str(error.value)
    for words in (str(hub_cache), "hf download black-forest-labs/FLUX.1-dev", "model.path=", "model=digits"):
        assert words in message
    assert "\n" not in message


def test_the_hugging_face_cache_is_found(hub_cache, tmp_path_factory):
    snapshot = cache_snapshot(hub_cache, saved_tiny_flux(tmp_path_factory))
    assert locate(flux_model()) == snapshot


def test_a_partial_download_is_a_miss(hub_cache, tmp_path_factory):
    snapshot = cache_snapshot(hub_cache, saved_tiny_flux(tmp_path_factory))
    for weights in (snapshot / "transformer").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(WeightsNotFound, match="no weights in transformer/"):
        locate(flux_model())


def test_model_path_loads_the_saved_pipeline(tmp_path_factory):
    directory = saved_tiny_flux(tmp_path_factory)
    model = flux_model(f"model.path={directory}", "model.dtype=float32")
    assert locate(model) == directory
    pipe = load_pipeline(model, "cpu")
    assert type(pipe).__name__ == "FluxPipeline" and pipe.transformer.dtype.is_floating_point


def test_model_path_without_a_pipeline_is_a_miss(tmp_path):
    with pytest.raises(WeightsNotFound, match="no model_index.json"):
        locate(flux_model(f"model.path={tmp_path}"))


def test_a_pipeline_missing_a_component_is_named_by_locate_and_by_the_checkpoint_check(tmp_path_factory, tmp_path):
    directory = shutil.copytree(saved_tiny_flux(tmp_path_factory), tmp_path / "pipe")
    shutil.rmtree(directory / "vae")
    with pytest.raises(WeightsNotFound, match="lacks the vae/ folder"):
        locate(flux_model(f"model.path={directory}"))
    with pytest.raises(CheckpointError, match="missing checkpoint folder: .*vae"):
        check_checkpoint(directory)


def test_a_corrupt_model_index_is_a_miss_that_names_it(tmp_path_factory, tmp_path):
    directory = shutil.copytree(saved_tiny_flux(tmp_path_factory), tmp_path / "pipe")
    (directory / "model_index.json").write_text("{not json")
    with pytest.raises(WeightsNotFound, match="corrupt checkpoint file .*model_index.json"):
        locate(flux_model(f"model.path={directory}"))
