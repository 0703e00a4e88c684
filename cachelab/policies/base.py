"""The policy interface: what a cache policy sees at each step and what it may answer."""

from __future__ import annotations

import abc
import copy
import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from ..engine import parallel
from ..forecasters import Forecaster, LinearForecaster, Reuse, make_forecaster
from .signals import CALL_SIGNALS, SIGNALS, register_call_signal, register_signal  # noqa: F401 (their home until now)


@dataclass
class StepContext:
    """What a policy knows about one transformer call."""

    step: int
    num_steps: int | None
    branch: str
    raw_timestep: Any = None
    signals: dict[str, torch.Tensor] = field(default_factory=dict)
    #: Steps whose residuals the executor keeps for this branch and unit (at most ``history``), newest first.
    computed_steps: tuple[int, ...] = ()
    #: What is decided: ``"step"``, or a unit of a block- or module-unit policy (``"block3"``, ``"block3.attn"``).
    unit: str = "step"
    block: int | None = None  # the block of a block or module unit, counted over all block lists
    role: str | None = None  # the module role of a module unit (``cachelab.units.ROLES``)
    num_blocks: int | None = None
    timestep_scale: float = 1.0  # the model spec's: scheduler timestep / the transformer's timestep argument
    #: With CFG and a policy whose ``uncond_from_cond`` is set: whether this step's unconditional output is built
    #: from the conditional one instead of computed (``None``: no CFG seen).
    uncond_built: bool | None = None
    #: The scheduler's sigma at this step, where the pipeline says it (Wan's ``cache_context``); else ``None``.
    sigma: float | None = None

    @property
    def timestep(self) -> float | None:
        """The call's timestep as a float (read from the device only when asked for)."""
        return as_float(self.raw_timestep)

    @property
    def scheduler_timestep(self) -> float | None:
        """The scheduler's timestep (0-1000 for diffusers' flow-matching pipelines), whatever the model is passed."""
        value = self.timestep
        return None if value is None else value * self.timestep_scale

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
    """Compute the blocks, or stand in for them with the kept residuals. ``weights`` (newest kept residual
    first) make the stand-in a linear combination of the kept residuals, a forecast; ``None`` reuses the
    newest one. A forecast that asks for more residuals than are kept falls back to reusing the newest.

    ``signal`` (the trace's ``signal`` column) is the value the policy compared with its threshold at this
    call, whatever that value is for the policy (each policy's docstring says); ``None`` when it compared
    none: the policy has no threshold, or decided without one (first step, warm-up)."""

    compute: bool
    signal: float | None = None
    weights: tuple[float, ...] | None = None
    #: Token-level policies: the indices of the tokens to compute (the others stood in for); None: all of them.
    tokens: Any = None


def compute(signal: float | None = None) -> Decision:
    return Decision(True, signal)


def reuse(signal: float | None = None) -> Decision:
    return Decision(False, signal)


def forecast(weights, signal: float | None = None) -> Decision:
    """Skip the blocks and apply ``sum(w * residual)`` over the kept residuals, newest first."""
    return Decision(False, signal, tuple(float(w) for w in weights))


@dataclass(frozen=True)
class UncondFromCond:
    """When the unconditional output is built from the conditional one, and the bands' weights."""

    skip_range: int  # the uncond pass runs every skip_range steps (and at the first)
    timestep_skip_range: tuple[float, float]  # only while the scheduler's timestep lies strictly inside
    low_weight_range: tuple[float, float]  # the low band's weight is alpha_low strictly inside, else 1
    high_weight_range: tuple[float, float]
    alpha_low: float
    alpha_high: float

    def skips(self, step: int, timestep: float) -> bool:
        low, high = self.timestep_skip_range
        return step > 0 and low < timestep < high and step % self.skip_range != 0

    def weights(self, timestep: float) -> tuple[float, float]:
        inside = [low < timestep < high for low, high in (self.low_weight_range, self.high_weight_range)]
        return (self.alpha_low if inside[0] else 1.0), (self.alpha_high if inside[1] else 1.0)


#: Field metadata for a dataclass policy's constructor argument that ``params()`` leaves out of records.
NOT_RECORDED = {"recorded": False}
#: ... and for one that records carry only once it is set to something else than its default (the stand-in knobs,
#: which came after records existed: a record of a policy at its defaults stays as it was).
RECORDED_WHEN_SET = {"recorded": False, "when_set": True}


@dataclass(eq=False, repr=False)
class Forecasts:
    """The stand-in knobs of the built-in triggers: ``forecaster`` (a name in ``cachelab.forecasters.FORECASTERS``
    or a ``Forecaster``) stands in for every unit the trigger skips, ``forecaster_order`` is the order of the
    Taylor and Hermite expansions. Keyword-only, so the triggers' positional arguments stay as they were."""

    forecaster: Any = field(default="reuse", kw_only=True, metadata=RECORDED_WHEN_SET)
    forecaster_order: int = field(default=1, kw_only=True, metadata=RECORDED_WHEN_SET)


class CachePolicy(abc.ABC):
    """A caching rule. Subclasses set ``signals``/``head_blocks`` and implement ``decide``.

    The executor keeps one copy of the policy per CFG branch and calls ``reset()`` on it at the
    start of every generation, so a policy keeps its state in plain attributes and never sees
    another branch's calls.

    The built-in policies are dataclasses (``@dataclass(eq=False, repr=False)``: identity equality
    and this class's repr stay) whose fields are their settings, validated in ``__post_init__``;
    ``params()`` and ``for_model`` read the fields. A plain subclass with its own ``__init__`` works too.
    """

    name: ClassVar[str] = ""
    #: Where it decides (``cachelab.units.UNITS``): once per call ("step"), per block, or per module of ``roles``.
    unit: ClassVar[str] = "step"
    #: Module-unit policies: the module roles they decide for (the others always run).
    roles: ClassVar[tuple[str, ...]] = ("attn", "cross_attn", "ff")
    #: The signals (``cachelab.policies.signals``, by name) this policy reads from ``StepContext.signals``.
    signals: ClassVar[tuple[str, ...]] = ()
    #: Blocks that always run before ``decide`` (1 for residual-based signals such as First Block Cache).
    head_blocks: ClassVar[int] = 0
    #: Last blocks that run on reused steps too; the cache then holds the residual of the blocks between.
    tail_blocks: ClassVar[int] = 0
    #: Whether the policy reads the top-level ``threshold`` of a config.
    uses_threshold: ClassVar[bool] = False
    #: False for policies that never reuse, so the executor stores no residuals for them.
    caches: ClassVar[bool] = True
    #: How many computed residuals the executor keeps per branch (forecasting policies want more than 1).
    history: ClassVar[int] = 1
    #: Module-unit policies: keep stand-ins too, as if computed (FasterCache extrapolates from its last outputs).
    keeps_stand_ins: ClassVar[bool] = False

    #: True for policies that plan a generation from an uncached rehearsal of it (``executor.rehearse``).
    rehearses: ClassVar[bool] = False
    #: True for bounds that know the uncached result (the oracle): reports mark them, they are not deployable.
    bound: ClassVar[bool] = False
    #: Constructor arguments that a calibration fills in when they are left None (TeaCache's coefficients).
    calibrated: ClassVar[tuple[str, ...]] = ()
    #: Published values of ``calibrated`` arguments per model family: the calibration store's defaults.
    published: ClassVar[dict[str, dict[str, Any]]] = {}
    #: The peer implementation it matches and the test that shows it; "none: no peer implementation; ..." where none exists.
    parity: ClassVar[str] = ""

    def reset(self) -> None:
        """Forget everything from the previous generation."""

    def plan(self, residuals: dict[str, list[torch.Tensor]]) -> None:
        """For ``rehearses`` policies: the residual of all blocks at every step of an uncached
        generation, per branch, recorded by ``executor.rehearse`` before the generation to run."""
        raise NotImplementedError(f"{type(self).__name__} does not plan from a rehearsal")

    def for_model(self, numbers: dict[str, Any], family: str) -> "CachePolicy":
        """The policy to run on a model of ``family`` whose calibration holds ``numbers`` for this policy
        (``cachelab.calibration.numbers_for``): the ``calibrated`` arguments left None come from them.
        Must not modify ``self``."""
        missing = [key for key in self.calibrated if getattr(self, key) is None]
        if not missing:
            return self
        absent = [key for key in missing if numbers.get(key) is None]
        if absent:
            raise ValueError(self.uncalibrated(absent, family))
        return self._with_settings(**{key: numbers[key] for key in missing})

    def _with_settings(self, **changes) -> "CachePolicy":
        """A new policy with the settings ``changes``, ``self`` untouched: ``dataclasses.replace`` (which
        validates again) for a dataclass policy, else a shallow copy with the attributes set."""
        if dataclasses.is_dataclass(self):
            return dataclasses.replace(self, **changes)
        policy = copy.copy(self)
        for key, value in changes.items():
            setattr(policy, key, value)
        return policy

    def check_steps(self, steps: int) -> None:
        """Raise ValueError, saying what would work, if this policy cannot run generations of ``steps`` steps."""

    def uncalibrated(self, missing: list[str], family: str) -> str:
        """The error for a model whose calibration lacks ``missing`` arguments."""
        return (f"{type(self).__name__} has no calibrated {', '.join(missing)} for the {family} family; "
                f"pass them to {type(self).__name__}(...) (policy.<name>=... on the command line)")

    @abc.abstractmethod
    def decide(self, ctx: StepContext) -> Decision:
        """Answer for one transformer call."""

    @property
    def stand_in_rule(self) -> Forecaster:
        """The policy's stand-in (``cachelab.forecasters``), from its ``forecaster`` knob; ``reuse`` without one."""
        rule = self.__dict__.get("_stand_in_rule")
        if rule is None:
            value = getattr(self, "forecaster", "reuse")
            rule = value if isinstance(value, Forecaster) else make_forecaster(value, getattr(self, "forecaster_order", 1))
            self.__dict__["_stand_in_rule"] = rule
        return rule

    def skip(self, ctx: StepContext, signal: float | None = None) -> Decision:
        """Stand in for the unit with the policy's forecaster: a linear one's weights over the unit's kept outputs,
        or (``reuse``, and stateful forecasters such as ``foca`` and ``dmd``, which the runtime runs) no weights."""
        rule = self.stand_in_rule
        if isinstance(rule, LinearForecaster) and not isinstance(rule, Reuse) and ctx.computed_steps:
            return Decision(False, signal, rule.cached_weights(ctx.computed_steps, ctx.step))
        return reuse(signal)

    def observe_output(self, ctx: StepContext, output: torch.Tensor) -> None:
        """Step-level policies: the output of the call ``ctx`` described (the transformer's sample, as the runtime
        sees it: the rank's shard under context parallelism), after the call ran or was stood in for."""

    def uncond_from_cond(self):
        """Where the pipeline runs CFG: an ``UncondFromCond`` saying at which steps the executor
        builds the unconditional output from the conditional one instead of computing it; ``None``: never."""
        return None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def params(self) -> dict[str, Any]:
        """The constructor arguments, for records and configs: a dataclass policy's init fields (less
        those marked ``NOT_RECORDED``); nothing for a plain subclass unless it overrides this."""
        if not dataclasses.is_dataclass(self):
            return {}
        fields = sorted(dataclasses.fields(self), key=lambda f: bool(f.metadata.get("when_set")))  # the stand-in knobs last
        return {f.name: getattr(self, f.name) for f in fields if f.init and _recorded(f, getattr(self, f.name))}


def _recorded(field_: dataclasses.Field, value: Any) -> bool:
    if field_.metadata.get("when_set"):
        return value != field_.default
    return field_.metadata.get("recorded", True)


def relative_l1(current: torch.Tensor, previous: torch.Tensor) -> float:
    """mean|current - previous| / mean|previous|: the change measure of First Block Cache and TeaCache.
    Under context parallelism its two sums are added over the ranks (``cachelab.parallel``), so every
    rank gets the one-process value of the whole sequence."""
    if not parallel.reducing():
        return ((current - previous).abs().mean() / previous.abs().mean()).item()
    sums = parallel.reduce_sums(torch.stack([(current - previous).abs().sum(), previous.abs().sum()]))
    return float(sums[0] / sums[1])


def check_number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> Any:
    """Validate a numeric hyper-parameter early, with a message that says what would work."""
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real) and not isinstance(value, bool)
    if not ok_type:
        raise ValueError(f"{name} must be {kind} >= {minimum:g}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be {kind} >= {minimum:g}, got {value!r}")
    return value
