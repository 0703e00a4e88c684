from .base import SIGNALS, CachePolicy, Decision, StepContext, compute, reuse
from .dual_block import DualBlockCache
from .first_block import FirstBlockCache
from .fixed_interval import FixedInterval
from .magcache import MagCache
from .no_cache import NoCache
from .registry import make_policy, register_policy, registered_policies
from .teacache import TeaCache

__all__ = [
    "SIGNALS",
    "CachePolicy",
    "Decision",
    "StepContext",
    "compute",
    "reuse",
    "DualBlockCache",
    "FirstBlockCache",
    "FixedInterval",
    "MagCache",
    "NoCache",
    "TeaCache",
    "make_policy",
    "register_policy",
    "registered_policies",
]
