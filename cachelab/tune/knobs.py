"""The knob of each policy that trades quality for speed, with its candidate values, safest first.

A policy with one knob is bisected over its values; dbcache's several knobs (Fn, Bn, warm-up, threshold)
form a `Space` searched by Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def knob_for(policy_name: str, uses_threshold: bool, steps: int, blocks: int) -> Knob | Space | None:
    """The policy's knob (None when cachelab knows none for it)."""
    if policy_name == "dbcache":
        return Space(max_head=max(1, blocks // 4), max_tail=max(0, blocks // 6), max_warmup=steps // 4)
    if policy_name in ("fixed_interval", "taylorseer", "fora"):
        return Knob("interval", tuple(range(2, max(3, steps // 2 + 1))))
    if policy_name in ("pab", "faster_cache"):
        return Knob("spatial_attention_block_skip_range", tuple(range(2, max(3, steps // 2 + 1))))
    if policy_name in ("learned", "oracle"):
        return Knob("budget", tuple(range(steps, 0, -1)))
    if uses_threshold:
        return Knob("threshold", THRESHOLDS)
    return None
