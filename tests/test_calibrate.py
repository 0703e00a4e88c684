import numpy as np
import torch
from tiny import generate

import cachelab
from cachelab import MagCache, TeaCache
from cachelab.calibrate import magcache_ratios, signal_pairs, teacache_coefficients


def test_pairs_are_the_input_and_output_changes_of_consecutive_steps(flux):
    inputs, outputs = [], []
    block = flux.transformer.transformer_blocks[0]
    pre = block.register_forward_pre_hook(
        lambda module, args, kwargs: inputs.append(block.norm1(kwargs["hidden_states"], emb=kwargs["temb"])[0]),
        with_kwargs=True,
    )
    post = flux.transformer.register_forward_hook(lambda module, args, out: outputs.append(out[0]))
    try:
        x, y = signal_pairs(flux, ["a photo of a cat"], num_inference_steps=5, height=32, width=32,
                            max_sequence_length=16, generator=torch.Generator().manual_seed(0))
    finally:
        pre.remove()
        post.remove()

    def changes(tensors):
        return [((b - a).abs().mean() / a.abs().mean()).item() for a, b in zip(tensors, tensors[1:])]

    assert np.allclose(x, changes(inputs), rtol=1e-5) and np.allclose(y, changes(outputs), rtol=1e-5)


def test_fitted_coefficients_drive_teacache(flux):
    kwargs = dict(num_inference_steps=8, height=32, width=32, max_sequence_length=16, output_type="pt")
    coefficients = teacache_coefficients(flux, ["a photo of a cat", "a red dog"], **kwargs)
    assert len(coefficients) == 5 and np.isfinite(coefficients).all()
    executor = cachelab.attach(flux, TeaCache(threshold=0.2, coefficients=coefficients))
    try:
        image = generate(flux, steps=8)
    finally:
        cachelab.detach(flux)
    assert executor.policy.coefficients == coefficients
    assert torch.isfinite(image).all()


def test_magcache_ratios_are_residual_norm_ratios_of_consecutive_steps(flux):
    inputs, outputs = [], []
    transformer = flux.transformer
    pre = transformer.transformer_blocks[0].register_forward_pre_hook(
        lambda m, args, kwargs: inputs.append(kwargs["hidden_states"]), with_kwargs=True
    )
    post = transformer.single_transformer_blocks[-1].register_forward_hook(lambda m, args, out: outputs.append(out[1]))
    kwargs = dict(num_inference_steps=5, height=32, width=32, max_sequence_length=16)
    try:
        ratios = magcache_ratios(flux, ["a photo of a cat"], generator=torch.Generator().manual_seed(0), **kwargs)
    finally:
        pre.remove()
        post.remove()
    norms = [torch.linalg.norm(o - i, dim=-1) for i, o in zip(inputs, outputs)]
    expected = [1.0] + [(b / (a + 1e-8)).mean().item() for a, b in zip(norms, norms[1:])]
    assert np.allclose(ratios, expected, rtol=1e-5)
    executor = cachelab.attach(flux, MagCache(threshold=0.5, retention_ratio=0.0, mag_ratios=ratios))
    try:
        generate(flux, steps=5)
    finally:
        cachelab.detach(flux)
    assert not all(r.computed for r in executor.trace)
