"""The calibration store: the numbers a calibrated policy needs, by policy name.

A policy's published numbers per model family (``CachePolicy.published``) are the defaults; numbers
measured on one model instance (``use_calibration``) or shipped beside a saved pipeline in
``calibration.json`` (``use_calibration_file``) go on top. ``numbers_for`` is the one reader, so a new
calibrated policy only declares its ``calibrated`` arguments and, if any, its ``published`` numbers.

``calibration.json``: ``{"policies": {"<policy name>": {"<argument>": value, ...}, ...}, ...}``; other
top-level keys (how the numbers were measured) are kept for people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CALIBRATION_FILE = "calibration.json"
_MEASURED = "_cachelab_calibration"


def use_calibration(transformer, policy: str, **numbers) -> None:
    """Give this transformer instance numbers measured on it for ``policy`` (a registered policy name),
    e.g. ``use_calibration(pipe.transformer, "teacache", coefficients=[...])``."""
    transformer.__dict__.setdefault(_MEASURED, {}).setdefault(policy, {}).update(numbers)


def measured(transformer) -> dict[str, dict[str, Any]]:
    """The numbers measured on this transformer instance, by policy name."""
    return transformer.__dict__.get(_MEASURED, {})


def numbers_for(policy, family: str, measured_numbers: dict[str, dict] | None = None) -> dict[str, Any]:
    """What ``policy`` gets on a model of ``family``: its published numbers, then the measured ones."""
    return {**type(policy).published.get(family, {}), **(measured_numbers or {}).get(policy.name, {})}


def read_calibration(path) -> dict[str, dict[str, Any]]:
    """The per-policy numbers of a calibration file, or of ``calibration.json`` in a folder ({} when there is none)."""
    file = Path(path) / CALIBRATION_FILE if Path(path).is_dir() else Path(path)
    return json.loads(file.read_text())["policies"] if file.is_file() else {}


def use_calibration_file(transformer, path) -> None:
    """Apply the numbers of a calibration file (or of ``calibration.json`` beside a saved pipeline) to its transformer."""
    for policy, numbers in read_calibration(path).items():
        use_calibration(transformer, policy, **numbers)
