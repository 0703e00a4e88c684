"""A stateful stand-in per stream of a unit's output (a step or block keeps (hidden, text or None); a module its
output tensor or tuple), so that FoCa and DMD see one tensor at a time."""

from __future__ import annotations

from typing import Any, Callable


class PerStream:
    """Keeps one ``make()`` state per tensor of the unit's output; ``None`` entries stay ``None``."""

    def __init__(self, make: Callable[[], Any]):
        self.make, self.states, self.shape = make, None, None

    def keep(self, output, step: int) -> None:
        tensors = output if isinstance(output, (tuple, list)) else (output,)
        if self.states is None or len(self.states) != len(tensors):
            self.states, self.shape = [self.make() for _ in tensors], type(output) if isinstance(output, (tuple, list)) else None
        for state, tensor in zip(self.states, tensors):
            if tensor is not None:
                state.keep(tensor, step)

    def tensors(self) -> list:
        return [t for state in self.states or () for t in state.tensors()]

    def stand_in(self, step: int):
        values = [state.stand_in(step) if state.kept else None for state in self.states]
        return values[0] if self.shape is None else self.shape(values)
