"""cachelab: caching policies for diffusion-transformer inference."""

from .executor import StepLoopExecutor, StepRecord, attach, detach
from .models.specs import ModelSpec, register_spec
from .policies import (
    CachePolicy,
    Decision,
    DualBlockCache,
    FirstBlockCache,
    FixedInterval,
    MagCache,
    NoCache,
    StepContext,
    TeaCache,
    compute,
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
    "MagCache",
    "ModelSpec",
    "NoCache",
    "StepContext",
    "StepLoopExecutor",
    "StepRecord",
    "TeaCache",
    "attach",
    "compute",
    "detach",
    "make_policy",
    "register_policy",
    "register_spec",
    "registered_policies",
    "reuse",
]
