"""cachelab: caching policies for diffusion-transformer inference."""

from . import zoo  # the embedded digits model: cachelab.zoo.load_pipeline() after a plain `import cachelab`
from .engine.attach import attach, detach
from .engine.executor import StepLoopExecutor, StepRecord
from .models.specs import ModelSpec, register_spec
from .policies import (
    CachePolicy,
    Decision,
    DualBlockCache,
    FirstBlockCache,
    FixedInterval,
    Learned,
    MagCache,
    NoCache,
    Oracle,
    StepContext,
    TaylorSeer,
    TeaCache,
    compute,
    forecast,
    make_policy,
    register_policy,
    registered_policies,
    reuse,
)

__version__ = "0.1.0"

__all__ = [
    "CachePolicy",
    "Decision",
    "DualBlockCache",
    "FirstBlockCache",
    "FixedInterval",
    "Learned",
    "MagCache",
    "ModelSpec",
    "NoCache",
    "Oracle",
    "StepContext",
    "StepLoopExecutor",
    "StepRecord",
    "TaylorSeer",
    "TeaCache",
    "attach",
    "compute",
    "detach",
    "forecast",
    "make_policy",
    "register_policy",
    "register_spec",
    "registered_policies",
    "reuse",
    "zoo",
]
