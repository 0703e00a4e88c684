"""Patching a model's attributes, and removing exactly those patches again.

cachelab wraps ``forward`` of the transformer and its blocks. diffusers wraps the same ``forward`` with
its hooks (context-parallel split and gather, offloading, layerwise casting), either before cachelab or
after it. cachelab's wrapper always goes innermost, around the module's own computation, so it sees what
the module itself sees (under context parallelism: the rank's shard) whichever of ``attach`` and
``enable_parallelism`` ran first. Removal finds the wrapper wherever it is now, in the attribute or inside
a diffusers hook chain installed later, and puts back what it replaced there, leaving the other hooks alone.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any


@dataclass
class _Patch:
    owner: Any
    name: str
    wrapper: Any
    original: Any  # what the wrapper calls: the attribute, or the innermost function of a hook chain
    own: Any  # the owner's own attribute before patching (None: it came from the class)


def _hook_chain(owner, name: str) -> list:
    """diffusers' hook references on ``owner.forward``, innermost first (empty when it has none)."""
    registry = getattr(owner, "_diffusers_hook", None) if name == "forward" else None
    return list(getattr(registry, "_fn_refs", None) or [])


def _slot(reference) -> str:
    return "original_forward" if getattr(reference, "original_forward", None) is not None else "forward"


class Patches:
    """The patches of one executor, in the order they were made."""

    def __init__(self):
        self._patches: list[_Patch] = []

    def patch(self, owner, name: str, wrapper) -> None:
        """Make ``owner.<name>`` call ``wrapper(original, *args, **kwargs)``."""
        chain = _hook_chain(owner, name)
        if chain:
            innermost = chain[0]
            original = getattr(innermost, _slot(innermost))
            wrapped = functools.update_wrapper(functools.partial(wrapper, original), original)
            setattr(innermost, _slot(innermost), wrapped)
            self._patches.append(_Patch(owner, name, wrapped, original, None))
            return
        original = getattr(owner, name)
        wrapped = functools.update_wrapper(functools.partial(wrapper, original), original)
        self._patches.append(_Patch(owner, name, wrapped, original, owner.__dict__.get(name)))
        setattr(owner, name, wrapped)

    def remove(self) -> None:
        """Undo every patch; raise, naming the attribute, where a wrapper can no longer be found."""
        lost = []
        for patch in reversed(self._patches):
            if not _unlink(patch):
                lost.append(f"{type(patch.owner).__name__}.{patch.name}")
        self._patches.clear()
        if lost:
            raise RuntimeError(
                f"cachelab could not remove its wrapper from {', '.join(lost)}: something replaced the attribute "
                "without calling the wrapper. The model may still run cachelab's code there; reload it."
            )


def _unlink(patch: _Patch) -> bool:
    owner, name = patch.owner, patch.name
    if owner.__dict__.get(name) is patch.wrapper:
        if patch.own is None:
            owner.__dict__.pop(name)
        else:
            setattr(owner, name, patch.own)
        return True
    for reference in _hook_chain(owner, name):
        for slot in ("forward", "original_forward"):
            if getattr(reference, slot, None) is patch.wrapper:
                setattr(reference, slot, patch.original)
                return True
    return False
