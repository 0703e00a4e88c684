"""Moved to ``cachelab.engine.executor`` and ``cachelab.engine.attach``; this name stays for existing imports."""

from .engine.attach import attach, detach  # noqa: F401
from .engine.executor import *  # noqa: F401,F403
