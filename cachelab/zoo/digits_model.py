"""The pipeline class of the embedded digits model: a FluxPipeline with call defaults that fit it."""

from __future__ import annotations

import inspect

from diffusers import FluxPipeline

from cachelab.zoo.data import CALL_DEFAULTS


class DigitsFluxPipeline(FluxPipeline):
    """A FluxPipeline whose call defaults fit the digits model (32x32 images, 8 T5 tokens).

    `pipe(prompt)` equals `FluxPipeline.__call__(pipe, prompt, **CALL_DEFAULTS)`; explicit arguments win.
    """

    def __call__(self, *args, **kwargs):
        bound = inspect.signature(FluxPipeline.__call__).bind_partial(self, *args, **kwargs).arguments
        for name, value in CALL_DEFAULTS.items():
            if bound.get(name) is None:
                kwargs[name] = value
        return super().__call__(*args, **kwargs)
