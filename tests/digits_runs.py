"""One batched generation on the embedded digits model, cached with a policy or not."""

import torch

import cachelab
from cachelab import zoo


def generate_digits(pipe, digits, seed: int, policy=None):
    """(images, transformer calls that computed) for one call of the prompts of ``digits``; None uncached."""
    executor = cachelab.attach(pipe, policy) if policy else None
    try:
        images = pipe(zoo.prompts_for(digits), generator=torch.Generator().manual_seed(seed), output_type="np").images
        return images, executor and sum(r.computed for r in executor.trace)
    finally:
        if executor:
            cachelab.detach(pipe)
