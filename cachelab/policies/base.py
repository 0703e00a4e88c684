"""The policy interface: what a cache policy sees at each step and what it may answer."""

from __future__ import annotations

import abc
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

#: Signals the executor can compute for a policy, before the policy decides.
#: ``head_residual``: image-stream output minus input of the first ``head_blocks`` blocks.
#: ``modulated_input``: the first block's modulated (AdaLN) input, from the model spec.
SIGNALS = ("head_residual", "modulated_input")


@dataclass
class StepContext:
    """What a policy knows about one transformer call."""

    step: int
    num_steps: int | None
    branch: str
    raw_timestep: Any = None
    signals: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def timestep(self) -> float | None:
        """The call's timestep as a float (read from the device only when asked for)."""
        return as_float(self.raw_timestep)

    @property
    def is_first(self) -> bool:
        return self.step == 0

    @property
    def is_last(self) -> bool:
        return self.num_steps is not None and self.step >= self.num_steps - 1


def as_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return float(value.flatten()[0])
    return float(value)


@dataclass(frozen=True)
class Decision:
    """Compute the blocks, or reuse the cached residual. ``signal`` is the value the policy compared."""

    compute: bool
    signal: float | None = None


def compute(signal: float | None = None) -> Decision:
    return Decision(True, signal)


def reuse(signal: float | None = None) -> Decision:
    return Decision(False, signal)


class CachePolicy(abc.ABC):
    """A caching rule. Subclasses set ``signals``/``head_blocks`` and implement ``decide``.

    The executor keeps one copy of the policy per CFG branch and calls ``reset()`` on it at the
    start of every generation, so a policy keeps its state in plain attributes and never sees
    another branch's calls.
    """

    name: ClassVar[str] = ""
    #: Which entries of ``SIGNALS`` this policy reads from ``StepContext.signals``.
    signals: ClassVar[tuple[str, ...]] = ()
    #: Blocks that always run before ``decide`` (1 for residual-based signals such as First Block Cache).
    head_blocks: ClassVar[int] = 0
    #: Last blocks that run on reused steps too; the cache then holds the residual of the blocks between.
    tail_blocks: ClassVar[int] = 0
    #: Whether the policy reads the top-level ``threshold`` of a config.
    uses_threshold: ClassVar[bool] = False
    #: False for policies that never reuse, so the executor stores no residuals for them.
    caches: ClassVar[bool] = True

    def reset(self) -> None:
        """Forget everything from the previous generation."""

    def for_model(self, spec) -> "CachePolicy":
        """The policy to run on a model of ``spec`` (a ``cachelab.models.ModelSpec``): a hook for
        model-dependent defaults such as TeaCache's coefficients. Must not modify ``self``."""
        return self

    @abc.abstractmethod
    def decide(self, ctx: StepContext) -> Decision:
        """Answer for one transformer call."""

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for records and configs."""
        return {}


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous|: the change measure of First Block Cache and TeaCache."""
    return ((current - previous).abs().mean() / previous.abs().mean()).item()


def check_number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> Any:
    """Validate a numeric hyper-parameter early, with a message that says what would work."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok_type:
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {kind} >= {minimum}, got {value!r}")
    return value
