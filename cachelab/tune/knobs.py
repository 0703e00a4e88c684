"""The knob of each policy that trades quality for speed, with its candidate values, safest first.

A policy declares its knob: ``tune_knob``, a classmethod ``(steps, blocks) -> Knob | Space | (key, values)`` for
a run of ``steps`` steps on a model of ``blocks`` blocks; the rules below make one in a line
(``tune_knob = interval_knob("interval")``). A policy that declares none and reads a threshold is tuned on it.
A policy with one knob is bisected over its values; dbcache's several knobs (Fn, Bn, warm-up, threshold)
form a `Space` searched by Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: Thresholds tried, safest (smallest) first: bisection reaches any of them in 4 trials.
THRESHOLDS = (0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class Knob:
    key: str      # the policy's argument
    values: tuple  # safest first: quality falls (and speed rises) along them


@dataclass(frozen=True)
class Space:
    """dbcache's knobs: head blocks (Fn), tail blocks (Bn), warm-up steps and the threshold (an index into THRESHOLDS)."""

    max_head: int
    max_tail: int
    max_warmup: int
    keys = ("compute_first", "compute_last", "warmup_steps", "threshold")

    def suggest(self, trial) -> dict:
        return dict(
            compute_first=trial.suggest_int("compute_first", 1, self.max_head),
            compute_last=trial.suggest_int("compute_last", 0, self.max_tail),
            warmup_steps=trial.suggest_int("warmup_steps", 0, self.max_warmup),
            threshold=THRESHOLDS[trial.suggest_int("threshold_index", 0, len(THRESHOLDS) - 1)],
        )

    def starts(self) -> list[dict]:
        """Trials to begin with: First Block Cache's shape (Fn=1, Bn=0, no warm-up) at a safe and a middle threshold."""
        return [dict(compute_first=1, compute_last=0, warmup_steps=0, threshold_index=index)
                for index in (THRESHOLDS.index(0.06), THRESHOLDS.index(0.12))]


def threshold_knob(key: str = "threshold") -> classmethod:
    """A policy's ``tune_knob``: ``key`` over THRESHOLDS."""
    def tune_knob(cls, steps: int, blocks: int) -> Knob:
        return Knob(key, THRESHOLDS)
    return classmethod(tune_knob)


def interval_knob(key: str) -> classmethod:
    """A policy's ``tune_knob``: ``key``, a recompute interval, over 2 .. steps / 2."""
    def tune_knob(cls, steps: int, blocks: int) -> Knob:
        return Knob(key, tuple(range(2, max(3, steps // 2 + 1))))
    return classmethod(tune_knob)


def budget_knob(key: str = "budget") -> classmethod:
    """A policy's ``tune_knob``: ``key``, computed steps, from all ``steps`` down to 1."""
    def tune_knob(cls, steps: int, blocks: int) -> Knob:
        return Knob(key, tuple(range(steps, 0, -1)))
    return classmethod(tune_knob)


def head_tail_space() -> classmethod:
    """A policy's ``tune_knob``: dbcache's `Space`, Fn up to blocks / 4, Bn up to blocks / 6, warm-up up to steps / 4."""
    def tune_knob(cls, steps: int, blocks: int) -> Space:
        return Space(max_head=max(1, blocks // 4), max_tail=max(0, blocks // 6), max_warmup=steps // 4)
    return classmethod(tune_knob)


def knob_for(policy: type, steps: int, blocks: int) -> Knob | Space | None:
    """The knob the policy class declares (``tune_knob``: a `Knob`, a `Space` or a ``(key, values)`` pair); a
    threshold for a policy that declares none and reads one; None when it has none."""
    declared: Callable[[int, int], Knob | Space | tuple | None] | None = getattr(policy, "tune_knob", None)
    if declared is None:
        return Knob("threshold", THRESHOLDS) if policy.uses_threshold else None
    knob = declared(steps, blocks)
    if isinstance(knob, tuple):
        key, values = knob
        return Knob(key, tuple(values))
    return knob
