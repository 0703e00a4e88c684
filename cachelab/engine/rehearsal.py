"""An uncached rehearsal of a generation: every unit computes, and the residual of the blocks is recorded at every
step, per branch (and per block unit for block-level policies), for policies that plan from it (the oracle)."""

from __future__ import annotations


class Rehearsal:
    def __init__(self):
        self.residuals: dict | None = None

    @property
    def on(self) -> bool:
        return self.residuals is not None

    def record(self, branch: str, residual, unit: str | None = None) -> None:
        if self.residuals is None:
            return
        if unit is None:
            self.residuals.setdefault(branch, []).append(residual)
        else:
            self.residuals.setdefault(branch, {}).setdefault(unit, []).append(residual)


def rehearse(rehearsal: Rehearsal, decider, generate) -> dict:
    """``generate()`` with every unit computing (``decider.rehearsing``), recording into ``rehearsal``: the residuals."""
    rehearsal.residuals, decider.rehearsing = {}, True
    try:
        generate()
        return rehearsal.residuals
    finally:
        rehearsal.residuals, decider.rehearsing = None, False
