from .base import SIGNALS, CachePolicy, Decision, StepContext, compute, forecast, reuse
from .dual_block import DualBlockCache
from .first_block import FirstBlockCache
from .fixed_interval import FixedInterval
from .learned import Learned
from .magcache import MagCache
from .no_cache import NoCache
from .oracle import Oracle
from .registry import make_policy, register_policy, registered_policies
from .taylorseer import TaylorSeer
from .teacache import TeaCache

__all__ = [
    "SIGNALS",
    "CachePolicy",
    "Decision",
    "StepContext",
    "compute",
    "forecast",
    "reuse",
    "DualBlockCache",
    "FirstBlockCache",
    "FixedInterval",
    "Learned",
    "MagCache",
    "NoCache",
    "Oracle",
    "TaylorSeer",
    "TeaCache",
    "make_policy",
    "register_policy",
    "registered_policies",
]
