"""The text K/V cache: cross-attention's keys and values of the text encoder's states computed once per generation
and CFG branch. Exact (the uncached output bit for bit) on the video model and a tiny LTX-Video, alone and under a
lossy policy; refused where the text stream changes between blocks (Flux)."""

import pytest
import torch
from families import ltx_video

import cachelab
from cachelab import zoo
from cachelab.policies import FirstBlockCache, NoCache
from cachelab.zoo.video_data import video_prompt


@pytest.fixture(scope="module")
def video():
    pipe = zoo.load_pipeline("video_digits")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def clip(pipe, policy=None, **kwargs):
    executor = cachelab.attach(pipe, policy, **kwargs) if policy is not None else None
    try:
        frames = pipe([video_prompt(3, "right"), video_prompt(5, "up")], num_inference_steps=8,
                      generator=torch.Generator().manual_seed(0), output_type="pt").frames
        return frames, executor
    finally:
        if executor is not None:
            cachelab.detach(pipe)


def test_exact_on_the_video_model_alone_and_under_first_block(video):
    uncached, _ = clip(video)
    alone, executor = clip(video, NoCache(), text_kv=True)
    assert torch.equal(alone, uncached)
    assert executor.text_kv.hits > 0 and executor.kept_bytes()["text_kv"] > 0
    lossy, _ = clip(video, FirstBlockCache(threshold=0.2))
    stacked, executor = clip(video, FirstBlockCache(threshold=0.2), text_kv=True)
    assert torch.equal(stacked, lossy)
    assert any(not r.computed for r in executor.trace)
    assert executor.text_kv.misses == 2 * len(executor.text_kv.projections)  # once per CFG branch, then kept


def test_exact_on_a_tiny_ltx_video_over_steps():
    model, inputs = ltx_video()
    timesteps = [torch.tensor([t]) for t in (900.0, 600.0, 300.0)]
    with torch.no_grad():
        uncached = [model(**inputs, timestep=t).sample for t in timesteps]
        executor = cachelab.attach(model, NoCache(), num_steps=3, text_kv=True)
        try:
            cached = [model(**inputs, timestep=t).sample for t in timesteps]
        finally:
            cachelab.detach(model)
    assert all(torch.equal(a, b) for a, b in zip(uncached, cached))
    assert executor.text_kv.hits == 2 * len(executor.text_kv.projections)


def test_changed_text_states_are_computed_again():
    model, inputs = ltx_video()
    other = dict(inputs, encoder_hidden_states=inputs["encoder_hidden_states"] + 1)
    with torch.no_grad():
        expected = model(**other, timestep=torch.tensor([600.0])).sample
        cachelab.attach(model, NoCache(), num_steps=2, text_kv=True)
        try:
            model(**inputs, timestep=torch.tensor([900.0]))
            got = model(**other, timestep=torch.tensor([600.0])).sample
        finally:
            cachelab.detach(model)
    assert torch.equal(got, expected)


def test_refused_on_joint_attention(flux):
    with pytest.raises(ValueError, match="flux family has none"):
        cachelab.attach(flux, FirstBlockCache(0.1), text_kv=True)
