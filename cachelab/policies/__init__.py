from .base import CALL_SIGNALS, SIGNALS, CachePolicy, Decision, StepContext, compute, forecast, register_call_signal, reuse
from .dbprune import DBPrune
from .dual_block import DualBlockCache
from .easycache import EasyCache
from .faster_cache import FasterCache
from .first_block import FirstBlockCache
from .fixed_interval import FixedInterval
from .fora import Fora
from .learned import Learned
from .lemica import LeMiCa
from .magcache import MagCache
from .no_cache import NoCache
from .oracle import Oracle
from .pab import PyramidAttentionBroadcast
from .registry import make_policy, register_policy, registered_policies
from .seacache import SeaCache
from .sencache import SenCache
from .signals import register_signal
from .stack import Stack
from .step_mask import StepMask
from .taylorseer import TaylorSeer
from .teacache import TeaCache

__all__ = [
    "CALL_SIGNALS",
    "SIGNALS",
    "register_call_signal",
    "register_signal",
    "CachePolicy",
    "Decision",
    "StepContext",
    "compute",
    "forecast",
    "reuse",
    "DBPrune",
    "DualBlockCache",
    "EasyCache",
    "FasterCache",
    "FirstBlockCache",
    "FixedInterval",
    "Fora",
    "LeMiCa",
    "Learned",
    "MagCache",
    "NoCache",
    "Oracle",
    "PyramidAttentionBroadcast",
    "SeaCache",
    "SenCache",
    "Stack",
    "StepMask",
    "TaylorSeer",
    "TeaCache",
    "make_policy",
    "register_policy",
    "registered_policies",
]
from .clusca import ClusCa  # noqa: E402,F401
from .duca import DuCa  # noqa: E402,F401
from .toca import ToCa  # noqa: E402,F401
