"""The step-loop executor: the one place that touches transformer blocks and steps.

It wires the parts together once, at attach: ``wiring`` patches the model and removes the patches, ``clock`` finds
each call's step and CFG branch, ``state`` keeps each branch's policy copies and kept outputs, ``decisions`` asks
the policies, ``step_forward``/``unit_forward`` run the units of each level, ``units`` accounts for block work,
``parallel`` keeps the ranks of context parallelism in step, ``policy_checks`` says what a policy cannot have.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

from ..calibration import measured, numbers_for
from ..models.specs import Arguments, blocks_of, spec_for
from ..policies.base import CachePolicy, StepContext
from ..policies.signals import read_at
from ..policies.stack import Stack
from . import parallel
from .clock import Clock
from .decisions import CFG_DECISIONS, Decider
from .guidance import Guidance, sample
from .policy_checks import check_policy, check_shardable
from .rehearsal import Rehearsal, rehearse
from .state import Branch, Call, Level, StepRecord, kept_bytes, merge_peaks
from .step_forward import StepRunner
from .text_kv import TextKV
from .unit_forward import BlockRunner, ModuleRunner, WholeBlocks
from .units import Costs, Timer, combine, module_sites
from .wiring import Patches

_ATTRIBUTE = "_cachelab_executor"

__all__ = ["CFG_DECISIONS", "StepLoopExecutor", "StepRecord", "combine", "synchronize_device"]


class StepLoopExecutor:
    """Runs a ``CachePolicy`` (or a ``Stack`` of them, one per unit) on an unmodified diffusers transformer.

    It wraps the transformer's and its blocks' ``forward`` (and the modules' of a module-level policy, and, when
    given, the scheduler's ``set_timesteps``/``step`` and the transformer's ``cache_context``) to know the step and
    the CFG branch of every call. A step-level policy's signals are computed, its head blocks run, it decides, and
    the blocks up to its tail are computed or stood in for; inside computed blocks a block-level policy decides per
    block and a module-level policy per module. With ``cfg_decisions="shared"`` only the first branch to call the
    transformer at a step asks its policies; the step's other branches take its decisions.
    """

    def __init__(self, transformer: torch.nn.Module, policy: CachePolicy, scheduler=None, num_steps: int | None = None,
                 synchronize: bool = False, cfg_decisions: str = "separate", pipeline=None, text_kv: bool = False):
        if isinstance(policy, (list, tuple)):
            policy = Stack(list(policy))
        if not isinstance(policy, CachePolicy):
            raise TypeError(f"policy must be a CachePolicy instance such as FirstBlockCache(threshold=0.2), got {policy!r}")
        self.transformer, self.scheduler, self.num_steps, self.synchronize = transformer, scheduler, num_steps, synchronize
        self.spec = spec_for(transformer)
        second = getattr(pipeline, "transformer_2", None)  # Wan 2.2: a second expert for the low-noise steps
        self.experts = [transformer] + ([second] if isinstance(second, torch.nn.Module) else [])
        self.expert_blocks = [blocks_of(expert, self.spec) for expert in self.experts]
        self.blocks = self.expert_blocks[0]
        policies = [self._for_model(p) for p in (policy.policies if isinstance(policy, Stack) else [policy])]
        for level in policies:
            check_policy(level, self.spec, self.blocks)
        text_kv = text_kv or (isinstance(policy, Stack) and policy.text_kv)
        self.policy = Stack(policies, text_kv=text_kv) if isinstance(policy, Stack) else policies[0]
        self.levels = {p.unit: Level(p.unit, p) for p in policies}
        inner = self.levels.get("module") or self.levels.get("token")
        roles = inner.policy.roles if inner else ()
        self.expert_sites = [module_sites([b for b, _ in blocks], self.spec.module_roles, roles) if roles else []
                             for blocks in self.expert_blocks]
        self.sites = self.expert_sites[0]
        self.costs = Costs()  # measured seconds of each block and module: the block-work accounting
        self.timer = Timer(self.costs, lambda: synchronize_device(transformer) if synchronize else None,
                           lambda: next(transformer.parameters()).device.type == "cpu")
        self.reduction: parallel.Reduction | None = None  # under context parallelism: the ranks' sums and decisions
        self.decider = Decider(self.levels, cfg_decisions, self._reduction)
        self.rehearsal_state = Rehearsal()
        self.clock = Clock(scheduler is not None, self.reset)
        parts = [part for part in (p.uncond_from_cond() for p in policies) if part is not None]
        self.guidance = Guidance(parts[0], self.clock, pipeline, transformer, self.spec, len(self.blocks)) if parts else None
        self.runner = self._runners()
        self.text_kv = TextKV(self.spec, self.expert_blocks, self._branch_in_flight) if text_kv else None
        self._patches, self._work_version = Patches(), -1
        self._call: Call | None = None
        self.reset()

    def _branch_in_flight(self) -> str | None:
        return None if self._call is None else self._call.context.branch

    def _for_model(self, policy: CachePolicy) -> CachePolicy:
        return policy.for_model(numbers_for(policy, self.spec.family, measured(self.transformer)), self.spec.family)

    def _runners(self):
        """The runner of the outermost level, each level's runner computing its units with the next one in."""
        inner = WholeBlocks(self.timer)
        if "block" in self.levels:
            inner = BlockRunner(self.levels["block"].policy, self.decider, self.timer, self.rehearsal_state)
        self.module_runner = None
        if "module" in self.levels:
            self.module_runner = ModuleRunner(self.levels["module"].policy, self.decider, self.timer)
        elif "token" in self.levels:
            from .tokens import TokenRunner

            self.module_runner = TokenRunner(self.levels["token"].policy, self.decider, self.timer, self.spec)
        if "step" in self.levels:
            return StepRunner(self.blocks, self.spec, self.levels["step"].policy, self.decider, inner, self.rehearsal_state)
        return inner

    @property
    def cfg_decisions(self) -> str:
        return "shared" if self.decider.shared else "separate"

    def install(self) -> "StepLoopExecutor":
        patch = self._patches.patch
        for expert, (transformer, blocks, sites) in enumerate(zip(self.experts, self.expert_blocks, self.expert_sites)):
            patch(transformer, "forward", functools.partial(self._transformer_forward, expert))
            if hasattr(transformer, "cache_context"):
                patch(transformer, "cache_context", self.clock.cache_context)
            for index, (block, _) in enumerate(blocks):
                patch(block, "forward", functools.partial(self._block_forward, index))
            for site in sites:
                patch(site.module, "forward", functools.partial(self._module_forward, site))
        if self.text_kv is not None:
            self.text_kv.install(patch)
        if self.scheduler is not None:
            patch(self.scheduler, "set_timesteps", self.clock.set_timesteps)
            patch(self.scheduler, "step", self.clock.scheduler_step)
        return self

    def remove(self) -> None:
        self._patches.remove()

    def reset(self) -> None:
        """Start a new generation: fresh policy state and kept outputs per branch, a new trace."""
        self.trace: list[StepRecord] = []
        self._branches: dict[str, Branch] = {}
        self.kept_peak: dict[str, int] = {}  # the most bytes kept at once in this generation, per unit kind and in total
        self.decider.reset()
        self.clock.reset()
        for part in (self.guidance, self.text_kv):
            if part is not None:
                part.reset()

    def _reduction(self) -> parallel.Reduction | None:
        """The context-parallel group's reduction, found at every call: parallelism may be enabled after attach."""
        group = parallel.group_of(self.transformer)
        if group is None:
            return None
        if self.reduction is None or self.reduction.group is not group:
            check_shardable([level.policy for level in self.levels.values()])
            self.reduction = parallel.Reduction(group, width=max(8, 6 + max(level.history for level in self.levels.values())))
        return self.reduction

    def _transformer_forward(self, expert: int, original, *args, **kwargs):
        arguments = Arguments(self.transformer, args, kwargs, self.clock.loop)
        timestep = arguments[self.spec.timestep_argument]
        name = self.clock.branch(timestep)
        key = name if expert == 0 else (name, expert)  # each expert's state apart
        branch = self._branches.get(key)
        refresh = False
        if branch is None:  # an expert joining mid-generation counts the steps the other one made, and computes
            steps = sum(b.step for k, b in self._branches.items() if (k if isinstance(k, str) else k[0]) == name)
            branch = self._branches[key] = Branch(self.levels, step=steps)
            refresh = steps > 0
        context = StepContext(branch.step, self._steps_in_generation(), name, timestep,
                              computed_steps=tuple(branch.kept_for("step", "step").steps) if "step" in self.levels else (),
                              num_blocks=len(self.blocks), timestep_scale=self.spec.timestep_scale, sigma=self.clock.loop.get("sigma"))
        call = self._call = Call(branch, context, following=self.decider.following(name, branch.step),
                                 blocks=self.expert_blocks[expert], refresh=refresh)
        if call.following is None and "step" in self.levels:
            for signal in read_at("call", self.levels["step"].policy.signals):
                context.signals[signal.name] = signal.read(self.experts[expert], arguments)
        if self.synchronize:
            synchronize_device(self.transformer)
        start = time.perf_counter()
        try:
            result = original(*args, **kwargs) if self.guidance is None else self.guidance.run(call, original, args, kwargs)
            if self.synchronize:
                synchronize_device(self.transformer)
        finally:
            self._call = None
        if "step" in self.levels:
            branch.policies["step"].observe_output(context, sample(result))
        self.trace.append(StepRecord.of_call(call, time.perf_counter() - start, timestep, list(self.levels), expert))
        self._update_kept_peak()
        self._update_work()
        branch.step += 1
        self.clock.call_ended()
        return result

    def _update_work(self) -> None:
        """Every record's share of block work from the unit costs measured so far (they settle after a few calls)."""
        stale = self._work_version != self.costs.version
        for record in self.trace if stale else self.trace[-1:]:
            record.work = record.batch_share * self.costs.work(len(self.blocks), record.skipped_units)
        self._work_version = self.costs.version

    def _steps_in_generation(self) -> int | None:
        if self.num_steps is not None:
            return self.num_steps
        timesteps = getattr(self.scheduler, "timesteps", None)
        return None if timesteps is None else len(timesteps)

    def _module_forward(self, site, original, *args, **kwargs):
        call = self._call
        return original(*args, **kwargs) if call is None else self.module_runner.module(call, site, original, args, kwargs)

    def _block_forward(self, index: int, original, *args, **kwargs):
        call = self._call
        return original(*args, **kwargs) if call is None else self.runner.block(call, index, original, args, kwargs)

    def _update_kept_peak(self) -> None:
        now = self.kept_bytes()
        merge_peaks(self.kept_peak, {**now, "total": sum(now.values())})

    def kept_bytes(self) -> dict[str, int]:
        """Bytes kept now, per unit kind over all branches (and ``token``'s bookkeeping, the text K/V cache's)."""
        extra = {}
        if "token" in self.levels:
            extra["token"] = self.module_runner.nbytes(self._branches.values())
        if self.text_kv is not None:
            extra["text_kv"] = self.text_kv.nbytes()
        return kept_bytes(self._branches.values(), self.levels, extra)

    def rehearse(self, generate) -> dict:
        """Run ``generate()`` (a pipeline call) computing every step, and return the residual of all blocks at every
        step, per branch (a block-level policy: of each block, per branch and block unit); a ``rehearses`` policy
        (``Oracle``) plans the next generation from them."""
        if self.policy.head_blocks or self.policy.tail_blocks or isinstance(self.policy, Stack):
            raise ValueError(f"{self.policy!r} has head or tail blocks or is a stack; a rehearsal records the residual of all blocks")
        residuals = rehearse(self.rehearsal_state, self.decider, generate)
        if self.policy.rehearses:
            with parallel.reducing_over(parallel.group_of(self.transformer)):
                self.policy.plan(residuals)
        return residuals

    @property
    def rehearsal(self):
        return self.rehearsal_state.residuals


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
