"""Signals by name, each with where the runtime reads it; a new signal is one registered function.

Where a signal is read decides what its function receives:

- ``"call"``: ``fn(transformer, arguments)`` before any block runs (``arguments`` reads the call's arguments by name);
- ``"first_block"``: ``fn(spec, block, arguments)`` at the first block's input (the model spec knows the block);
- ``"head"``: ``fn(hidden, input_hidden)`` after a step-level policy's head blocks (their image-stream output and
  the call's first block input);
- ``"block"``: ``fn(hidden)`` at the image-stream input of each block a block-level policy decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

#: Where signals are read, outermost first.
WHERE = ("call", "first_block", "head", "block")


@dataclass(frozen=True)
class Signal:
    name: str
    where: str
    read: Callable


REGISTRY: dict[str, Signal] = {}
#: The ``"call"`` signals' functions by name (as earlier versions kept them).
CALL_SIGNALS: dict[str, Callable] = {}


def register_signal(name: str, where: str):
    """Decorator: make ``fn`` (its arguments as ``where`` says) available to policies as the signal ``name``."""
    if where not in WHERE:
        raise ValueError(f"a signal is read at one of {', '.join(WHERE)}; got where={where!r} for {name!r}")

    def decorate(fn):
        REGISTRY[name] = Signal(name, where, fn)
        if where == "call":
            CALL_SIGNALS[name] = fn
        return fn
    return decorate


def register_call_signal(name: str):
    """Decorator: make ``fn(transformer, arguments)`` available to policies as the signal ``name``."""
    return register_signal(name, "call")


def read_at(where: str, names) -> list[Signal]:
    """The signals among ``names`` read at ``where``."""
    return [REGISTRY[name] for name in names if name in REGISTRY and REGISTRY[name].where == where]


register_signal("call_input", "call")(lambda transformer, arguments: arguments["hidden_states"])
register_signal("modulated_input", "first_block")(lambda spec, block, arguments: spec.modulated_input(block, arguments))
register_signal("head_residual", "head")(lambda hidden, input_hidden: hidden - input_hidden)
register_signal("block_input", "block")(lambda hidden: hidden)

#: The built-in signals read inside the blocks (``head_residual``: the head blocks' image-stream residual;
#: ``modulated_input``: the first block's modulated (AdaLN) input, from the model spec; ``block_input``: the input
#: of the block a block-level policy decides).
SIGNALS = ("head_residual", "modulated_input", "block_input")
