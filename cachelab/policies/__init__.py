from .base import CALL_SIGNALS, SIGNALS, CachePolicy, Decision, StepContext, compute, forecast, register_call_signal, reuse
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
    "CALL_SIGNALS",
    "SIGNALS",
    "register_call_signal",
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
