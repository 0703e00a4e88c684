"""FoCa (Zheng et al. 2025, arXiv 2508.16211), as cache-dit 1.5.3's ``FoCaCalibratorConfig`` runs it: a BDF2
prediction from the two newest values (computed or forecast) corrected by Heun's rule towards the newest
computed value; forecasts are chained over consecutive skipped steps."""

from __future__ import annotations

from .base import Forecaster, register_forecaster
from .streams import PerStream

#: Beyond this many steps from the newest computed one, the forecast is damped towards it (cache-dit's rule).
MAX_HORIZON = 3.0


class FoCaStream:
    def __init__(self):
        self.kept = False
        self.full = self.full_previous = self.newest = self.older = None
        self.full_step = None

    def keep(self, value, step: int) -> None:
        if self.newest is not None and value.shape != self.newest.shape:
            self.__init__()
        self.full_previous, self.full, self.full_step = self.full, value, step
        self.older, self.newest = self.newest, value
        self.kept = True

    def tensors(self) -> list:
        return [t for t in (self.full, self.full_previous, self.newest, self.older) if t is not None]

    def stand_in(self, step: int):
        if self.older is None or self.full_previous is None:
            return self.full
        elapsed = float(step - self.full_step)
        slope = (self.full - self.full_previous) + (self.newest - self.older)
        if elapsed <= MAX_HORIZON:
            forecast = self.full + (elapsed / 2.0) * slope
        else:
            damping = MAX_HORIZON / elapsed
            forecast = damping * (self.full + (MAX_HORIZON / 2.0) * slope) + (1.0 - damping) * self.full
        self.older, self.newest = self.newest, forecast
        return forecast


@register_forecaster("foca")
class FoCa(Forecaster):
    """BDF2 + Heun over the unit's own computed and forecast values; no knobs."""

    def state(self):
        return PerStream(FoCaStream)
