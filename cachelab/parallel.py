"""Moved to ``cachelab.engine.parallel``; this name stays for existing imports."""

from .engine.parallel import *  # noqa: F401,F403
