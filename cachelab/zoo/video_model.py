"""The pipeline class of the embedded video model: a WanPipeline with call defaults that fit it."""

from __future__ import annotations

import contextlib
import inspect

import torch
from diffusers import WanPipeline, WanTransformer3DModel

from cachelab.zoo.video_data import CALL_DEFAULTS


class VideoDigitsWanPipeline(WanPipeline):
    """A WanPipeline whose call defaults fit the video digits model (9 frames of 32x32, 8 UMT5 tokens).

    `pipe(prompt)` equals `WanPipeline.__call__(pipe, prompt, **CALL_DEFAULTS)`; explicit arguments win.
    Guidance stays WanPipeline's default (true classifier-free guidance at 5.0, empty negative prompt).
    """

    def __call__(self, *args, **kwargs):
        bound = inspect.signature(WanPipeline.__call__).bind_partial(self, *args, **kwargs).arguments
        for name, value in CALL_DEFAULTS.items():
            if bound.get(name) is None:
                kwargs[name] = value
        return super().__call__(*args, **kwargs)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """WanPipeline.from_pretrained; in float32 also without accelerate (see `_float32_loading`)."""
        if kwargs.get("torch_dtype") in (None, torch.float32) and kwargs.get("low_cpu_mem_usage") is False:
            with _float32_loading():
                return super().from_pretrained(*args, **kwargs)
        return super().from_pretrained(*args, **kwargs)


@contextlib.contextmanager
def _float32_loading():
    """WanTransformer3DModel declares modules it keeps in float32; diffusers then refuses low_cpu_mem_usage=False,
    the only way it loads without accelerate. In float32 the declaration changes nothing: lift it while loading."""
    declared = WanTransformer3DModel._keep_in_fp32_modules
    WanTransformer3DModel._keep_in_fp32_modules = None
    try:
        yield
    finally:
        WanTransformer3DModel._keep_in_fp32_modules = declared
