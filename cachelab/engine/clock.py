"""Where a transformer call falls in a generation: its CFG branch, and when a new generation starts.

A pipeline's ``cache_context`` names the branch when the pipeline enters one; otherwise calls are
counted since the scheduler's last ``step`` (or, with no scheduler, since the timestep changed): the
first call of a step is ``"cond"``, the second ``"uncond"``.
"""

from __future__ import annotations

import contextlib

from ..policies.base import as_float

BRANCH_NAMES = ("cond", "uncond")


class Clock:
    def __init__(self, has_scheduler: bool, new_generation):
        self.has_scheduler = has_scheduler
        self.new_generation = new_generation
        self.context_name: str | None = None
        self.loop: dict = {}  # what the pipeline's cache_context said besides the name (step_index, sigma)
        self.reset()

    # -- wrappers of the scheduler's set_timesteps and step and the transformer's cache_context --

    def set_timesteps(self, original, *args, **kwargs):
        self.new_generation()
        return original(*args, **kwargs)

    def scheduler_step(self, original, *args, **kwargs):
        self.step_ended()
        return original(*args, **kwargs)

    @contextlib.contextmanager
    def cache_context(self, original, name: str, *args, **kwargs):
        self.context_name, self.loop = name, kwargs
        try:
            with original(name, *args, **kwargs):
                yield
        finally:
            self.context_name, self.loop = None, {}

    def reset(self) -> None:
        self.calls_since_step = 0
        self.last_timestep: float | None = None

    def step_ended(self) -> None:
        self.calls_since_step = 0

    def call_ended(self) -> None:
        self.calls_since_step += 1

    def branch(self, timestep) -> str:
        if self.context_name is not None:
            return self.context_name
        if not self.has_scheduler:
            # No scheduler to mark steps: calls with the same timestep are the branches of one step.
            value = as_float(timestep)
            if self.last_timestep is not None and value > self.last_timestep:
                self.new_generation()
            if value != self.last_timestep:
                self.calls_since_step = 0
            self.last_timestep = value
        index = self.calls_since_step
        return BRANCH_NAMES[index] if index < len(BRANCH_NAMES) else f"call{index}"
