"""The step-loop executor: the one place that touches transformer blocks and steps."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from . import parallel
from .calibration import measured, numbers_for
from .models.specs import Arguments, BlockOutput, spec_for
from .policies.base import CALL_SIGNALS, SIGNALS, CachePolicy, Decision, StepContext, as_float, compute
from .wiring import Patches

_ATTRIBUTE = "_cachelab_executor"
_BRANCH_NAMES = ("cond", "uncond")
#: How the CFG branches of one step decide: each its own policy copy, or all as the first branch to call.
CFG_DECISIONS = ("separate", "shared")


@dataclass
class StepRecord:
    """One transformer call of a generation."""

    step: int
    branch: str
    computed: bool
    signal: float | None
    seconds: float
    raw_timestep: Any = field(default=None, repr=False)

    @property
    def timestep(self) -> float | None:
        return as_float(self.raw_timestep)


@dataclass
class _Branch:
    """One CFG branch's policy copy, step counter and kept residuals (newest first)."""

    policy: CachePolicy
    step: int = 0
    residuals: deque = field(default_factory=deque)  # (hidden, encoder or None) per kept computed step
    computed_steps: deque = field(default_factory=deque)


@dataclass
class _Call:
    branch: _Branch
    context: StepContext
    decision: Decision | None = None
    skipping: bool = False
    input_hidden: torch.Tensor | None = None
    reference: tuple = (None, None)
    following: Decision | None = None  # the step's leading branch's decision, under shared CFG decisions


class StepLoopExecutor:
    """Runs a ``CachePolicy`` on an unmodified diffusers transformer.

    It wraps the transformer's and its blocks' ``forward`` (and, when given, the scheduler's
    ``set_timesteps``/``step`` and the transformer's ``cache_context``) to know the step and the CFG
    branch of every call, computes the signals the policy asked for, runs the head blocks, asks the
    policy, then runs the remaining blocks or applies the branch's cached residual (and runs the
    policy's tail blocks, if any). With ``cfg_decisions="shared"`` only the first branch to call the
    transformer at a step asks its policy; the step's other branches take its decision.
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        policy: CachePolicy,
        scheduler=None,
        num_steps: int | None = None,
        synchronize: bool = False,
        cfg_decisions: str = "separate",
    ):
        if not isinstance(policy, CachePolicy):
            raise TypeError(
                f"policy must be a CachePolicy instance such as FirstBlockCache(threshold=0.2), got {policy!r}"
            )
        if cfg_decisions not in CFG_DECISIONS:
            raise ValueError(f"cfg_decisions must be {' or '.join(map(repr, CFG_DECISIONS))}, got {cfg_decisions!r}")
        self.cfg_decisions = cfg_decisions
        self.transformer, self.scheduler, self.num_steps = transformer, scheduler, num_steps
        self.synchronize = synchronize
        self.spec = spec_for(transformer)
        self.policy = policy.for_model(numbers_for(policy, self.spec.family, measured(transformer)), self.spec.family)
        self.blocks = self._collect_blocks()
        self._check_policy()
        self.trace: list[StepRecord] = []
        self._branches: dict[str, _Branch] = {}
        self._leaders: dict[int, tuple[str, Decision]] = {}  # step -> (branch, decision) of its first call
        self._call: _Call | None = None
        self._context_name: str | None = None
        self._calls_since_step = 0
        self._last_timestep: float | None = None
        self._patches = Patches()
        self.reduction: parallel.Reduction | None = None  # under context parallelism: the ranks' sums and decisions
        self._rehearsal: dict[str, list[torch.Tensor]] | None = None

    # -- wiring -------------------------------------------------------------------------------

    def _collect_blocks(self) -> list[tuple[torch.nn.Module, BlockOutput]]:
        blocks = []
        for list_name in self.spec.block_lists:
            for block in getattr(self.transformer, list_name, None) or []:
                output = self.spec.block_outputs.get(type(block).__name__)
                if output is None:
                    raise ValueError(
                        f"the {self.spec.family} spec does not know block class {type(block).__name__} "
                        f"in {type(self.transformer).__name__}.{list_name}; add it to the spec's block_outputs"
                    )
                blocks.append((block, output))
        if not blocks:
            raise ValueError(f"{type(self.transformer).__name__} has no blocks in {self.spec.block_lists}")
        return blocks

    def _check_policy(self) -> None:
        known = (*SIGNALS, *CALL_SIGNALS)
        unknown = set(self.policy.signals) - set(known)
        if unknown:
            raise ValueError(f"{self.policy!r} asks for unknown signals {sorted(unknown)}; known: {known}")
        if "modulated_input" in self.policy.signals and self.spec.modulated_input is None:
            raise ValueError(f"the {self.spec.family} spec defines no modulated input for {self.policy!r}")
        if not (isinstance(self.policy.history, int) and self.policy.history >= 1):
            raise ValueError(f"{self.policy!r} keeps history={self.policy.history!r} residuals; it must be an integer >= 1")
        head, tail = self.policy.head_blocks, self.policy.tail_blocks
        if head < 0 or tail < 0 or head + tail >= len(self.blocks):
            raise ValueError(
                f"{self.policy!r} wants {head} head and {tail} tail blocks; this model has {len(self.blocks)} "
                "blocks, and at least one must lie between them"
            )

    def install(self) -> "StepLoopExecutor":
        self._patch(self.transformer, "forward", self._transformer_forward)
        if hasattr(self.transformer, "cache_context"):
            self._patch(self.transformer, "cache_context", self._cache_context)
        for index, (block, _) in enumerate(self.blocks):
            self._patch(block, "forward", functools.partial(self._block_forward, index))
        if self.scheduler is not None:
            self._patch(self.scheduler, "set_timesteps", self._set_timesteps)
            self._patch(self.scheduler, "step", self._scheduler_step)
        return self

    def _patch(self, owner, name: str, wrapper) -> None:
        self._patches.patch(owner, name, wrapper)

    def remove(self) -> None:
        self._patches.remove()

    def _reduction(self) -> parallel.Reduction | None:
        """The context-parallel group's reduction, found at every call: parallelism may be enabled after attach."""
        group = parallel.group_of(self.transformer)
        if group is None:
            return None
        if self.reduction is None or self.reduction.group is not group:
            self.reduction = parallel.Reduction(group, width=max(8, 5 + self.policy.history))
        return self.reduction

    def reset(self) -> None:
        """Start a new generation: fresh policy state and cache per branch, a new trace."""
        self.trace = []
        self._branches = {}
        self._leaders = {}
        self._calls_since_step = 0
        self._last_timestep = None

    # -- wrappers -----------------------------------------------------------------------------

    def _set_timesteps(self, original, *args, **kwargs):
        self.reset()
        return original(*args, **kwargs)

    def _scheduler_step(self, original, *args, **kwargs):
        self._calls_since_step = 0
        return original(*args, **kwargs)

    @contextlib.contextmanager
    def _cache_context(self, original, name: str, *args, **kwargs):
        self._context_name = name
        try:
            with original(name, *args, **kwargs):
                yield
        finally:
            self._context_name = None

    def _branch_name(self, timestep) -> str:
        if self._context_name is not None:
            return self._context_name
        if self.scheduler is None:
            # No scheduler to mark steps: calls with the same timestep are the branches of one step.
            value = as_float(timestep)
            if self._last_timestep is not None and value > self._last_timestep:
                self.reset()
            if value != self._last_timestep:
                self._calls_since_step = 0
            self._last_timestep = value
        index = self._calls_since_step
        return _BRANCH_NAMES[index] if index < len(_BRANCH_NAMES) else f"call{index}"

    def _transformer_forward(self, original, *args, **kwargs):
        arguments = Arguments(self.transformer, args, kwargs)
        timestep = arguments[self.spec.timestep_argument]
        name = self._branch_name(timestep)
        branch = self._branches.get(name)
        if branch is None:
            history = self.policy.history
            branch = self._branches[name] = _Branch(copy.deepcopy(self.policy), 0, deque(maxlen=history), deque(maxlen=history))
            branch.policy.reset()
        context = StepContext(branch.step, self._steps_in_generation(), name, timestep,
                              computed_steps=tuple(branch.computed_steps))
        call = self._call = _Call(branch, context, following=self._decision_to_follow(name, branch.step))
        if call.following is None:
            for signal in set(self.policy.signals) & set(CALL_SIGNALS):
                context.signals[signal] = CALL_SIGNALS[signal](self.transformer, arguments)
        if self.synchronize:
            synchronize_device(self.transformer)
        start = time.perf_counter()
        try:
            result = original(*args, **kwargs)
            if self.synchronize:
                synchronize_device(self.transformer)
        finally:
            self._call = None
        seconds = time.perf_counter() - start
        decision = call.decision or compute()
        self.trace.append(StepRecord(context.step, name, decision.compute, decision.signal, seconds, timestep))
        branch.step += 1
        self._calls_since_step += 1
        return result

    def _decision_to_follow(self, branch: str, step: int) -> Decision | None:
        if self.cfg_decisions == "separate":
            return None
        leader = self._leaders.get(step)
        return None if leader is None or leader[0] == branch else leader[1]

    def _decide(self, call: _Call) -> Decision:
        if self._rehearsal is not None:
            return compute()
        if call.following is not None:
            return call.following
        decision = parallel.ask(call.branch.policy, call.context, self._reduction())
        if self.cfg_decisions == "shared":
            self._leaders.setdefault(call.context.step, (call.context.branch, decision))
        return decision

    def _steps_in_generation(self) -> int | None:
        if self.num_steps is not None:
            return self.num_steps
        timesteps = getattr(self.scheduler, "timesteps", None)
        return None if timesteps is None else len(timesteps)

    def _block_forward(self, index: int, original, *args, **kwargs):
        call = self._call
        if call is None:
            return original(*args, **kwargs)
        block, output = self.blocks[index]
        tail_start = len(self.blocks) - self.policy.tail_blocks
        if call.skipping and index < tail_start:
            arguments = Arguments(block, args, kwargs)
            return output.pack(arguments["hidden_states"], arguments["encoder_hidden_states"])
        head = self.policy.head_blocks
        if index == 0 or index == head:
            arguments = Arguments(block, args, kwargs)
            signals = () if call.following is not None else self.policy.signals  # a follower's policy is not asked
        if index == 0:
            call.input_hidden = arguments["hidden_states"]
            if "modulated_input" in signals:
                call.context.signals["modulated_input"] = self.spec.modulated_input(block, arguments)
        if index == head:
            hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
            if "head_residual" in signals:
                call.context.signals["head_residual"] = hidden - call.input_hidden
            call.decision = self._decide(call)
            if not call.decision.compute:
                call.skipping = True
                return output.pack(*self._reuse(call, hidden, encoder))
            call.reference = (hidden, encoder)
        storing = (self.policy.caches or self._rehearsal is not None) and not call.skipping
        if storing and self.policy.tail_blocks and index == tail_start:
            arguments = Arguments(block, args, kwargs)
            self._store(call, arguments["hidden_states"], arguments["encoder_hidden_states"])
        result = original(*args, **kwargs)
        if storing and not self.policy.tail_blocks and index == len(self.blocks) - 1:
            self._store(call, *output.unpack(result))
        return result

    def _reuse(self, call: _Call, hidden, encoder):
        kept = call.branch.residuals
        if not kept:
            raise RuntimeError(
                f"{self.policy!r} chose to reuse at step {call.context.step} of branch "
                f"{call.context.branch!r}, but nothing is cached yet: a policy must compute before it reuses"
            )
        weights = call.decision.weights
        if weights is None or len(weights) > len(kept):
            hidden_residual, encoder_residual = kept[0]
        else:
            hidden_residual = combine(weights, [h for h, _ in kept])
            encoder_residual = None if kept[0][1] is None else combine(weights, [e for _, e in kept])
        if encoder_residual is not None and encoder is not None:
            encoder = encoder + encoder_residual
        return hidden + hidden_residual, encoder

    def _store(self, call: _Call, hidden, encoder) -> None:
        reference_hidden, reference_encoder = call.reference
        both = encoder is not None and reference_encoder is not None
        hidden_residual = hidden - reference_hidden
        if self._rehearsal is not None:
            self._rehearsal.setdefault(call.context.branch, []).append(hidden_residual)
        call.branch.residuals.appendleft((hidden_residual, encoder - reference_encoder if both else None))
        call.branch.computed_steps.appendleft(call.context.step)

    def rehearse(self, generate) -> dict[str, list[torch.Tensor]]:
        """Run ``generate()`` (a pipeline call) computing every step, and return the residual of all
        blocks at every step, per branch; a ``rehearses`` policy (``Oracle``) plans the next generation
        from them."""
        if self.policy.head_blocks or self.policy.tail_blocks:
            raise ValueError(f"{self.policy!r} has head or tail blocks; a rehearsal records the residual of all blocks")
        self._rehearsal = {}
        try:
            generate()
            residuals = self._rehearsal
        finally:
            self._rehearsal = None
        if self.policy.rehearses:
            with parallel.reducing_over(parallel.group_of(self.transformer)):
                self.policy.plan(residuals)
        return residuals


def combine(weights, tensors):
    """sum(w * t) over the first len(weights) tensors."""
    total = tensors[0] * weights[0]
    for weight, tensor in zip(weights[1:], tensors[1:]):
        total = total + tensor * weight
    return total


def synchronize_device(module: torch.nn.Module) -> None:
    """Wait for the module's CUDA device, so that wall time measures the work (a no-op on the CPU)."""
    device = next(module.parameters()).device
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _components(target) -> tuple[torch.nn.Module, Any]:
    transformer = getattr(target, "transformer", None)
    if transformer is not None:
        return transformer, getattr(target, "scheduler", None)
    if isinstance(target, torch.nn.Module):
        return target, None
    raise TypeError(f"attach expects a diffusers pipeline with a .transformer, or a transformer; got {type(target).__name__}")


def attach(
    target, policy: CachePolicy, *, num_steps: int | None = None, synchronize: bool = False,
    cfg_decisions: str = "separate",
) -> StepLoopExecutor:
    """Run ``policy`` on a diffusers pipeline (or a bare transformer); returns the executor, whose
    ``trace`` holds one record per transformer call of the last generation.

    ``num_steps`` tells a bare transformer how many steps a generation has (a pipeline's scheduler
    says so itself). ``synchronize=True`` waits for the GPU around every transformer call, so that
    the trace's ``seconds`` are the call's device time rather than its launch time.

    ``cfg_decisions``: ``"separate"`` (default) gives each CFG branch its own policy copy and decisions;
    ``"shared"`` lets the first branch to call the transformer at a step (``"cond"`` in diffusers'
    pipelines) ask its policy, and every other branch of that step takes the same decision (compute,
    reuse, or forecast with the same weights) applied to its own kept residuals, without computing
    signals or asking its own policy. A follower's trace record keeps its own branch and carries the
    leader's signal."""
    transformer, scheduler = _components(target)
    existing = transformer.__dict__.get(_ATTRIBUTE)
    if existing is not None:
        raise RuntimeError(
            f"{type(transformer).__name__} already runs {existing.policy!r}; call cachelab.detach() first"
        )
    if getattr(transformer, "is_cache_enabled", False):
        raise RuntimeError(
            f"{type(transformer).__name__} has a diffusers cache enabled; call transformer.disable_cache() first"
        )
    executor = StepLoopExecutor(transformer, policy, scheduler, num_steps, synchronize, cfg_decisions).install()
    transformer.__dict__[_ATTRIBUTE] = executor
    return executor


def detach(target) -> StepLoopExecutor | None:
    """Remove cachelab from a pipeline or transformer; returns the executor that was attached, if any."""
    transformer, _ = _components(target)
    executor = transformer.__dict__.pop(_ATTRIBUTE, None)
    if executor is not None:
        executor.remove()
    return executor
