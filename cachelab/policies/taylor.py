"""Where earlier versions kept Taylor forecasting; it now lives in ``cachelab.forecasters.taylor``."""

from ..forecasters.taylor import FIRST_DERIVATIVE_STEP, taylor_weights

__all__ = ["FIRST_DERIVATIVE_STEP", "taylor_weights"]
