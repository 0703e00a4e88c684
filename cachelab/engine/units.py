"""Units of caching below the step: one block, or a module role inside a block (attention, feed-forward),
what each unit keeps per CFG branch, and what each unit's work costs.

A step-unit policy (every policy before units existed) decides once per transformer call for the blocks
between its head and tail blocks. A block-unit policy decides for every block, a module-unit policy for
every module of its ``roles`` in every block (``ModelSpec.module_roles`` says where they are).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

import torch

#: step: one decision per call for a block range; block: one per block; module: one per (block, role); token: one per
#: (block, role), choosing which tokens of the module compute (``cachelab.engine.tokens``).
UNITS = ("step", "block", "module", "token")
#: Module roles a model spec can name: self (or joint) attention, cross attention, feed-forward.
ROLES = ("attn", "cross_attn", "ff")
_MEASUREMENTS = 3  # a unit is timed on its first computed calls only: its cost, without a sync at every call


def block_unit(index: int) -> str:
    return f"block{index}"


def module_unit(index: int, role: str) -> str:
    return f"block{index}.{role}"


@dataclass
class ModuleSite:
    """One module the executor wraps: its block, role and attribute inside the block."""

    block: int
    role: str
    attribute: str
    module: torch.nn.Module

    @property
    def unit(self) -> str:
        return module_unit(self.block, self.role)

    @property
    def key(self) -> str:
        """Where its outputs are kept: a role may hold several modules (Flux's ff and ff_context)."""
        return f"block{self.block}.{self.attribute}"


def module_sites(blocks, module_roles: dict[str, dict[str, tuple[str, ...]]], roles) -> list[ModuleSite]:
    """The modules of ``roles`` in every block, from the spec's per-block-class roles."""
    sites = []
    for index, block in enumerate(blocks):
        for role, attributes in module_roles.get(type(block).__name__, {}).items():
            if role in roles:
                sites += [ModuleSite(index, role, a, getattr(block, a)) for a in attributes
                          if isinstance(getattr(block, a, None), torch.nn.Module)]  # SD3's last block has no ff_context
    return sites


@dataclass
class Kept:
    """One unit's kept outputs in one branch (newest first) and the steps they were computed at: the one store of
    every unit (a step's residual of its blocks, a block's residual, a module's output). ``state``: the per-unit
    state of a stateful forecaster (``cachelab.forecasters``), which sees every kept output."""

    history: int
    state: object = None
    outputs: deque = field(init=False)
    steps: deque = field(init=False)

    def __post_init__(self):
        self.outputs, self.steps = deque(maxlen=self.history), deque(maxlen=self.history)

    def keep(self, output, step: int) -> None:
        self.outputs.appendleft(output)
        self.steps.appendleft(step)
        if self.state is not None:
            self.state.keep(output, step)

    def stand_in(self, weights, step: int, what: str):
        """``sum(w * output)`` over the newest ``len(weights)`` outputs; without weights (or with more weights than
        outputs kept) the stateful forecaster's stand-in for ``step``, else the newest output."""
        if not self.outputs:
            raise RuntimeError(f"a policy chose to reuse {what} before it was ever computed: compute a unit before reusing it")
        if weights is not None and len(weights) <= len(self.outputs):
            return combine(weights, list(self.outputs))
        return self.outputs[0] if self.state is None else self.state.stand_in(step)

    def nbytes(self) -> int:
        """Bytes of the tensors kept: the outputs and a stateful forecaster's own, each storage counted once."""
        held = list(_tensors(list(self.outputs))) + list(_tensors(self.state.tensors() if self.state is not None else []))
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held}.values())


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def combine(weights, values):
    """sum(w * v) over the first len(weights) values; values may be tensors or tuples of tensors (or None)."""
    first = values[0]
    if isinstance(first, (tuple, list)):
        return type(first)(combine(weights, [v[i] for v in values]) for i in range(len(first)))
    if first is None:
        return None
    total = first * weights[0]
    for weight, value in zip(weights[1:], values[1:]):
        total = total + value * weight
    return total


class Costs:
    """Measured seconds of each unit when it computes: the weights of the block-work accounting."""

    def __init__(self):
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.version = 0  # changes with every sample: work figures computed before are out of date

    def wants(self, unit: str) -> bool:
        return len(self.samples[unit]) < _MEASUREMENTS

    def add(self, unit: str, seconds: float) -> None:
        self.samples[unit].append(seconds)
        self.version += 1

    def of(self, unit: str) -> float:
        seconds = self.samples.get(unit)
        if seconds:
            return statistics.median(seconds)
        kind = unit.partition(".")[2] or "block"
        known = [statistics.median(s) for u, s in self.samples.items() if s and (u.partition(".")[2] or "block") == kind]
        return statistics.mean(known) if known else 1.0

    def work(self, blocks: int, skipped: list[str]) -> float:
        """The computed share of the block work of a call that skipped the units ``skipped``."""
        total = sum(self.of(block_unit(i)) for i in range(blocks))
        return max(0.0, 1.0 - sum(self.saved(unit) for unit in skipped) / total)

    def saved(self, unit: str) -> float:
        """The seconds a skipped unit saved. Token level (``cachelab.engine.tokens``): ``full<partial`` is a unit computed
        on some of its tokens, which saved its measured full cost less the measured cost of the partial call."""
        full, _, partial = unit.partition("<")
        return self.of(full) - self.of(partial) if partial else self.of(full)


_UNTIMED = contextlib.nullcontext()


class Timer:
    """Times units into ``costs``: ``timer(key, call, whole)`` (see ``timed``)."""

    def __init__(self, costs: Costs, synchronize, on_cpu):
        self.costs, self.synchronize, self.on_cpu = costs, synchronize, on_cpu

    def __call__(self, key: str, call=None, whole=lambda: True):
        """A call on half of a batched CFG batch is not a unit's whole cost. Once a unit has its samples, nothing."""
        if not self.costs.wants(key):
            return _UNTIMED
        return timed(self.costs, key, self.synchronize, lambda: whole() and (call is None or call.batch_share == 1), self.on_cpu)


class timed:
    """Context manager: adds the seconds of its body to ``costs`` for ``unit`` while it still wants samples
    (and ``whole()`` says, at the end, that all of the unit's work ran). ``on_cpu()``: the module runs on the
    CPU, where the process's CPU time is counted (wall time on a shared CPU also counts the time another
    program held the core, more of it in long units than in short ones); on an accelerator, wall time."""

    def __init__(self, costs: Costs, unit: str, synchronize, whole=lambda: True, on_cpu=lambda: False):
        self.costs, self.unit, self.synchronize, self.whole = costs, unit, synchronize, whole
        self.on = costs.wants(unit)
        if self.on:
            self.clock = time.process_time if on_cpu() else time.perf_counter

    def __enter__(self):
        if self.on:
            self.synchronize()
            self.start = self.clock()

    def __exit__(self, *exc):
        if self.on and exc[0] is None:
            self.synchronize()
            if self.whole():
                self.costs.add(self.unit, self.clock() - self.start)
