"""Policies by name, so that configs and users can pick them."""

from __future__ import annotations

from typing import Callable

from .base import CachePolicy
from .configs import store_policy_config

_POLICIES: dict[str, type[CachePolicy]] = {}


def register_policy(name: str) -> Callable[[type[CachePolicy]], type[CachePolicy]]:
    """Class decorator: ``@register_policy("my_policy")`` makes ``make_policy("my_policy")`` work, and for a
    dataclass policy stores the Hydra config ``policy=my_policy`` generated from its fields (``.configs``)."""

    def add(cls: type[CachePolicy]) -> type[CachePolicy]:
        if not (isinstance(cls, type) and issubclass(cls, CachePolicy)):
            raise TypeError(f"register_policy({name!r}) expects a CachePolicy subclass, got {cls!r}")
        if name in _POLICIES and _POLICIES[name] is not cls:
            raise ValueError(f"a policy named {name!r} is already registered ({_POLICIES[name].__name__})")
        cls.name = name
        _POLICIES[name] = cls
        store_policy_config(cls)
        return cls

    return add


def registered_policies() -> dict[str, type[CachePolicy]]:
    return dict(_POLICIES)


def make_policy(name: str, **params) -> CachePolicy:
    """Build a registered policy by name; an unknown name lists the registered ones."""
    if name not in _POLICIES:
        raise ValueError(f"unknown cache policy {name!r}; registered policies: {', '.join(sorted(_POLICIES))}")
    return _POLICIES[name](**params)
