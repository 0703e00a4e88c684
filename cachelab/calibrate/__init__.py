"""Measure what calibrated policies need on a model that has no published numbers, from a few uncached
generations (use prompts or seeds you will not evaluate on): TeaCache's coefficients, MagCache's ratios
and the learned policy's plans. ``python -m cachelab.calibrate`` does all three for any model."""

from .learned import learned_plans, uncached_runs
from .learned_blocks import learned_policy
from .lemica import lemica_policy, lemica_schedules
from .sencache import sencache_sensitivities
from .signals import magcache_ratios, signal_pairs, teacache_coefficients

__all__ = ["learned_plans", "learned_policy", "lemica_policy", "lemica_schedules", "magcache_ratios", "sencache_sensitivities",
           "signal_pairs", "teacache_coefficients", "uncached_runs"]
