"""Moved to ``cachelab.engine.compile``; this name stays for existing imports."""

from .engine.compile import *  # noqa: F401,F403
