"""What stands in for a skipped unit (the stand-in axis of a policy): ``reuse``, ``taylor`` (cache-dit's
convention), ``taylor_diffusers`` (diffusers' divided differences), ``hermite`` (HiCache), ``foca`` and ``dmd``
(cache-dit's calibrators). Linear stand-ins are weights over a unit's kept outputs; ``foca`` and ``dmd`` keep
state of their own per unit and CFG branch."""

from .base import FORECASTERS, Forecaster, LinearForecaster, make_forecaster, register_forecaster
from .dmd import DMD
from .foca import FoCa
from .linear import Hermite, Reuse, Taylor, TaylorDiffusers, hermite_weights

__all__ = ["DMD", "FORECASTERS", "FoCa", "Forecaster", "Hermite", "LinearForecaster", "Reuse", "Taylor", "TaylorDiffusers",
           "hermite_weights", "make_forecaster", "register_forecaster"]
