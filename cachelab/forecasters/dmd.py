"""DMD (cache-dit 1.5.3's DMD calibrator): an exponential forecast, Y(t + k) = Phi (lambda^k * b), fitted by
dynamic mode decomposition (a Prony-style SVD fit) to the newest evenly spaced computed values of a sliding
window, per batch item; with fewer than 4 such values, a first-order Taylor expansion stands in."""

from __future__ import annotations

import torch

from .base import Forecaster, register_forecaster
from .streams import PerStream
from .taylor import FIRST_DERIVATIVE_STEP

MIN_SNAPSHOTS = 4  # two real degrees of freedom per complex pole: one oscillating mode needs 3 pairs
CUTOFF = 1e-4  # singular values below this share of the largest are dropped (automatic rank)


def fit(trajectory: torch.Tensor, ridge: float):
    """(Phi, eigenvalues, b) of the linear propagator of a (d, n) trajectory, oldest column first; None if degenerate."""
    before, after = trajectory[:, :-1], trajectory[:, 1:]
    try:
        u, s, vh = torch.linalg.svd(before, full_matrices=False)
    except RuntimeError:
        return None
    rank = max(1, min(int((s > s[0] * CUTOFF).sum().clamp(min=1)), s.numel()))
    u, s, v = u[:, :rank], s[:rank], vh[:rank].mH
    inverse = (1.0 / (s + ridge)).to(torch.complex128)
    reduced = (u.mH @ after @ v).to(torch.complex128) * inverse.unsqueeze(0)
    try:
        eigenvalues, vectors = torch.linalg.eig(reduced)
        modes = ((after @ v).to(torch.complex128) * inverse.unsqueeze(0)) @ vectors
        amplitudes = torch.linalg.lstsq(modes, trajectory[:, -1].to(torch.complex128).unsqueeze(1)).solution.squeeze(1)
    except RuntimeError:
        return None
    return modes, eigenvalues, amplitudes


class DMDStream:
    def __init__(self, window: int, ridge: float):
        self.window, self.ridge = window, ridge
        self.kept = False
        self.snapshots: list[tuple[int, torch.Tensor]] = []  # oldest first
        self.ladder: list[torch.Tensor] = []
        self.ladder_before: list[torch.Tensor] = []
        self.fitted = None

    def keep(self, value, step: int) -> None:
        if self.snapshots and self.snapshots[-1][1].shape != value.shape:
            self.__init__(self.window, self.ridge)
        self._taylor(value, step)
        self.snapshots = (self.snapshots + [(step, value)])[-self.window:]
        self.fitted = None
        self.kept = True

    def _taylor(self, value, step: int) -> None:
        """cache-dit's fallback ladder: the first derivative is taken against the value two computations back
        (the ladder before last), over the distance to the newest computed step."""
        ladder = [value]
        distance = step - self.snapshots[-1][0] if self.snapshots else 0
        if self.ladder_before and step >= FIRST_DERIVATIVE_STEP and distance > 0:
            ladder.append((value - self.ladder_before[0]) / distance)
        self.ladder_before, self.ladder = self.ladder, ladder

    def tensors(self) -> list:
        return [v for _, v in self.snapshots] + self.ladder + self.ladder_before

    def _even_tail(self) -> tuple[list[torch.Tensor], int]:
        steps = [s for s, _ in self.snapshots]
        if len(steps) < 2 or steps[-1] - steps[-2] <= 0:
            return [], 0
        spacing, start = steps[-1] - steps[-2], len(steps) - 2
        while start > 0 and steps[start] - steps[start - 1] == spacing:
            start -= 1
        return [v for _, v in self.snapshots[start:]], spacing

    def stand_in(self, step: int):
        values, spacing = self._even_tail()
        newest_step, newest = self.snapshots[-1]
        if len(values) < MIN_SNAPSHOTS:
            distance = step - newest_step
            return self.ladder[0] if len(self.ladder) == 1 else self.ladder[0] + self.ladder[1] * distance
        if self.fitted is None:
            batch = newest.shape[0] if newest.dim() > 1 else 1
            trajectories = torch.stack([v.reshape(batch, -1) for v in values], dim=-1).to(torch.float64)
            self.fitted = [fit(t, self.ridge) for t in trajectories]
        if any(f is None for f in self.fitted):
            return newest
        horizon = float((step - newest_step) / spacing)
        rows = [(modes @ (eigenvalues.pow(horizon) * amplitudes)).real for modes, eigenvalues, amplitudes in self.fitted]
        forecast = (torch.stack(rows) if newest.dim() > 1 else rows[0]).to(newest.dtype).reshape(newest.shape)
        return forecast if torch.isfinite(forecast).all() else newest


@register_forecaster("dmd")
class DMD(Forecaster):
    """``window`` (cache-dit's ``history``, 6) computed values are kept per stream; ``ridge`` regularises the fit.
    Its fit spans the whole sequence, so it is refused under context parallelism (each rank holds a shard)."""

    elementwise = False

    def __init__(self, window: int = 6, ridge: float = 1e-8):
        if not (isinstance(window, int) and window >= 2):
            raise ValueError(f"dmd's window must be an integer >= 2, got {window!r}")
        self.window, self.ridge = window, ridge

    def state(self):
        return PerStream(lambda: DMDStream(self.window, self.ridge))
