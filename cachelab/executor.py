"""The step-loop executor: the one place that touches transformer blocks and steps.

It orchestrates; each concern has its own module: ``wiring`` patches the model and removes the patches,
``clock`` finds each call's step and CFG branch, ``state`` keeps each branch's policy copy and kept
outputs, ``units``/``unit_forward`` run block- and module-unit policies and account for block work,
``parallel`` keeps the ranks of context parallelism in step, ``policy_checks`` says what a policy cannot
have on a model.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import time
from typing import Any

import torch

from . import parallel, step_forward
from .calibration import measured, numbers_for
from .clock import Clock
from .guidance import Guidance
from .models.specs import Arguments, blocks_of, spec_for
from .policies.base import CALL_SIGNALS, CachePolicy, Decision, StepContext, compute
from .policy_checks import check_policy
from .state import Branch, Call, StepRecord
from .unit_forward import block_forward, module_forward
from .units import Costs, Kept, block_unit, combine, module_sites, timed
from .wiring import Patches

_ATTRIBUTE = "_cachelab_executor"
#: How the CFG branches of one step decide: each its own policy copy, or all as the first branch to call.
CFG_DECISIONS = ("separate", "shared")

__all__ = ["CFG_DECISIONS", "StepLoopExecutor", "StepRecord", "attach", "combine", "detach", "synchronize_device"]


class StepLoopExecutor:
    """Runs a ``CachePolicy`` on an unmodified diffusers transformer.

    It wraps the transformer's and its blocks' ``forward`` (and the modules' of a module-unit policy, and,
    when given, the scheduler's ``set_timesteps``/``step`` and the transformer's ``cache_context``) to know
    the step and the CFG branch of every call, computes the signals the policy asked for, runs the head
    blocks, asks the policy, then runs the remaining blocks or applies the branch's cached residual (and
    runs the policy's tail blocks, if any). A block- or module-unit policy is asked for every block or
    module instead. With ``cfg_decisions="shared"`` only the first branch to call the transformer at a step
    asks its policy; the step's other branches take its decision.
    """

    def __init__(self, transformer: torch.nn.Module, policy: CachePolicy, scheduler=None, num_steps: int | None = None,
                 synchronize: bool = False, cfg_decisions: str = "separate", pipeline=None):
        if not isinstance(policy, CachePolicy):
            raise TypeError(
                f"policy must be a CachePolicy instance such as FirstBlockCache(threshold=0.2), got {policy!r}"
            )
        if cfg_decisions not in CFG_DECISIONS:
            raise ValueError(f"cfg_decisions must be {' or '.join(map(repr, CFG_DECISIONS))}, got {cfg_decisions!r}")
        self.cfg_decisions = cfg_decisions
        self.transformer, self.scheduler, self.num_steps = transformer, scheduler, num_steps
        self.pipeline = pipeline  # read for whether it runs CFG in one batch (FasterCache's CFG part)
        self.synchronize = synchronize
        self.spec = spec_for(transformer)
        self.policy = policy.for_model(numbers_for(policy, self.spec.family, measured(transformer)), self.spec.family)
        self.blocks = blocks_of(transformer, self.spec)
        check_policy(self.policy, self.spec, self.blocks)
        self.sites = module_sites([b for b, _ in self.blocks], self.spec.module_roles, self.policy.roles) \
            if self.policy.unit == "module" else []
        self.costs = Costs()  # measured seconds of each block and module: the block-work accounting
        self._work_version = -1
        self.trace: list[StepRecord] = []
        self._branches: dict[str, Branch] = {}
        self._leaders: dict[tuple[int, str], tuple[str, Decision]] = {}  # (step, unit) -> (branch, decision) of its first call
        self._call: Call | None = None
        self.clock = Clock(scheduler is not None, self.reset)
        self._patches = Patches()
        self.reduction: parallel.Reduction | None = None  # under context parallelism: the ranks' sums and decisions
        self.rehearsal: dict[str, list[torch.Tensor]] | None = None
        part = self.policy.uncond_from_cond()
        self.guidance = None if part is None else Guidance(self, part)

    # -- wiring -------------------------------------------------------------------------------

    def install(self) -> "StepLoopExecutor":
        patch = self._patches.patch
        patch(self.transformer, "forward", self._transformer_forward)
        if hasattr(self.transformer, "cache_context"):
            patch(self.transformer, "cache_context", self._cache_context)
        for index, (block, _) in enumerate(self.blocks):
            patch(block, "forward", functools.partial(self._block_forward, index))
        for site in self.sites:
            patch(site.module, "forward", functools.partial(self._module_forward, site))
        if self.scheduler is not None:
            patch(self.scheduler, "set_timesteps", self._set_timesteps)
            patch(self.scheduler, "step", self._scheduler_step)
        return self

    def remove(self) -> None:
        self._patches.remove()

    def reset(self) -> None:
        """Start a new generation: fresh policy state and cache per branch, a new trace."""
        self.trace = []
        self._branches = {}
        self._leaders = {}
        self.clock.reset()
        if self.guidance is not None:
            self.guidance.reset()

    def _reduction(self) -> parallel.Reduction | None:
        """The context-parallel group's reduction, found at every call: parallelism may be enabled after attach."""
        group = parallel.group_of(self.transformer)
        if group is None:
            return None
        if self.reduction is None or self.reduction.group is not group:
            self.reduction = parallel.Reduction(group, width=max(8, 5 + self.policy.history))
        return self.reduction

    def timed(self, key: str, whole=lambda: True) -> timed:
        """Time a unit's work into ``costs`` (its first few computed calls only, where ``whole()``)."""
        call = self._call  # a call on half of a batched CFG batch is not a unit's whole cost
        return timed(self.costs, key, lambda: synchronize_device(self.transformer) if self.synchronize else None,
                     lambda: whole() and (call is None or call.batch_share == 1),
                     lambda: next(self.transformer.parameters()).device.type == "cpu")

    # -- wrappers -----------------------------------------------------------------------------

    def _set_timesteps(self, original, *args, **kwargs):
        self.reset()
        return original(*args, **kwargs)

    def _scheduler_step(self, original, *args, **kwargs):
        self.clock.step_ended()
        return original(*args, **kwargs)

    @contextlib.contextmanager
    def _cache_context(self, original, name: str, *args, **kwargs):
        self.clock.context_name, self.clock.loop = name, kwargs
        try:
            with original(name, *args, **kwargs):
                yield
        finally:
            self.clock.context_name, self.clock.loop = None, {}

    def _transformer_forward(self, original, *args, **kwargs):
        arguments = Arguments(self.transformer, args, kwargs, self.clock.loop)
        timestep = arguments[self.spec.timestep_argument]
        name = self.clock.branch(timestep)
        branch = self._branches.get(name)
        if branch is None:
            branch = self._branches[name] = Branch(copy.deepcopy(self.policy), self.policy.history)
            branch.policy.reset()
        context = StepContext(branch.step, self._steps_in_generation(), name, timestep, computed_steps=tuple(branch.computed_steps),
                              num_blocks=len(self.blocks), timestep_scale=self.spec.timestep_scale,
                              sigma=self.clock.loop.get("sigma"))
        call = self._call = Call(branch, context, following=self._decision_to_follow(name, branch.step))
        if call.following is None:
            for signal in set(self.policy.signals) & set(CALL_SIGNALS):
                context.signals[signal] = CALL_SIGNALS[signal](self.transformer, arguments)
        if self.synchronize:
            synchronize_device(self.transformer)
        start = time.perf_counter()
        try:
            result = original(*args, **kwargs) if self.guidance is None else self.guidance.run(call, original, args, kwargs)
            if self.synchronize:
                synchronize_device(self.transformer)
        finally:
            self._call = None
        seconds = time.perf_counter() - start
        self.trace.append(self._record(call, seconds, timestep))
        self._update_work()
        branch.step += 1
        self.clock.call_ended()
        return result

    def _record(self, call: Call, seconds: float, timestep) -> StepRecord:
        skipped = tuple(call.skipped)
        if self.policy.unit == "step":
            decision = call.decision or compute()
            return StepRecord(call.context.step, call.context.branch, decision.compute, decision.signal, seconds, timestep,
                              skipped_units=skipped, batch_share=call.batch_share)
        units = tuple((unit, decision.compute) for unit, decision in call.unit_decisions.items())
        return StepRecord(call.context.step, call.context.branch, not skipped, None, seconds, timestep,
                          unit=self.policy.unit, units=units, skipped_units=skipped, batch_share=call.batch_share)

    def _update_work(self) -> None:
        """Every record's share of block work from the unit costs measured so far (they settle after a few calls)."""
        stale = self._work_version != self.costs.version
        for record in self.trace if stale else self.trace[-1:]:
            record.work = record.batch_share * self.costs.work(len(self.blocks), record.skipped_units)
        self._work_version = self.costs.version

    def _decision_to_follow(self, branch: str, step: int, unit: str = "step") -> Decision | None:
        if self.cfg_decisions == "separate":
            return None
        leader = self._leaders.get((step, unit))
        return None if leader is None or leader[0] == branch else leader[1]

    def decide_step(self, call: Call, context: StepContext, following: Decision | None) -> Decision:
        """The decision of the call in flight (or of one of its units): the leader's under shared CFG decisions."""
        if self.rehearsal is not None:
            return compute()
        if following is not None:
            return following
        decision = parallel.ask(call.branch.policy, context, self._reduction())
        if self.cfg_decisions == "shared":
            self._leaders.setdefault((context.step, context.unit), (context.branch, decision))
        return decision

    def decide_unit(self, call: Call, unit: str, kept: Kept, signals: dict, block: int, role: str | None = None) -> Decision:
        """The decision for one block or module of the call in flight (``unit_forward`` asks it)."""
        following = self._decision_to_follow(call.context.branch, call.context.step, unit)
        context = dataclasses.replace(call.context, unit=unit, block=block, role=role, computed_steps=tuple(kept.steps),
                                      signals={} if following is not None else signals)
        decision = self.decide_step(call, context, following)
        call.unit_decisions[unit] = decision
        return decision

    def _steps_in_generation(self) -> int | None:
        if self.num_steps is not None:
            return self.num_steps
        timesteps = getattr(self.scheduler, "timesteps", None)
        return None if timesteps is None else len(timesteps)

    def _module_forward(self, site, original, *args, **kwargs):
        call = self._call
        return original(*args, **kwargs) if call is None else module_forward(self, call, site, original, args, kwargs)

    def _block_forward(self, index: int, original, *args, **kwargs):
        call = self._call
        if call is None:
            return original(*args, **kwargs)
        if self.policy.unit == "block":
            return block_forward(self, call, index, original, args, kwargs)
        if self.policy.unit == "module":  # its modules decide; the block runs around them
            stood_in = len(call.skipped)
            with self.timed(block_unit(index), whole=lambda: len(call.skipped) == stood_in):  # a block's cost: all of it
                return original(*args, **kwargs)
        return step_forward.block_forward(self, call, index, original, args, kwargs)

    def rehearse(self, generate) -> dict:
        """Run ``generate()`` (a pipeline call) computing every step, and return the residual of all
        blocks at every step, per branch (a block-unit policy: of each block, per branch and block unit);
        a ``rehearses`` policy (``Oracle``) plans the next generation from them."""
        if self.policy.head_blocks or self.policy.tail_blocks:
            raise ValueError(f"{self.policy!r} has head or tail blocks; a rehearsal records the residual of all blocks")
        self.rehearsal = {}
        try:
            generate()
            residuals = self.rehearsal
        finally:
            self.rehearsal = None
        if self.policy.rehearses:
            with parallel.reducing_over(parallel.group_of(self.transformer)):
                self.policy.plan(residuals)
        return residuals


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
    pipeline = target if target is not transformer else None
    executor = StepLoopExecutor(transformer, policy, scheduler, num_steps, synchronize, cfg_decisions, pipeline).install()
    transformer.__dict__[_ATTRIBUTE] = executor
    return executor


def detach(target) -> StepLoopExecutor | None:
    """Remove cachelab from a pipeline or transformer; returns the executor that was attached, if any."""
    transformer, _ = _components(target)
    executor = transformer.__dict__.pop(_ATTRIBUTE, None)
    if executor is not None:
        executor.remove()
    return executor
