"""Moved to ``cachelab.engine.units``; this name stays for existing imports."""

from .engine.units import *  # noqa: F401,F403
