"""The step-loop executor: the one place that touches transformer blocks and steps."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from .models.specs import Arguments, BlockOutput, spec_for
from .policies.base import SIGNALS, CachePolicy, Decision, StepContext, as_float, compute

_ATTRIBUTE = "_cachelab_executor"
_BRANCH_NAMES = ("cond", "uncond")


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
    policy: CachePolicy
    step: int = 0
    hidden_residual: torch.Tensor | None = None
    encoder_residual: torch.Tensor | None = None


@dataclass
class _Call:
    branch: _Branch
    context: StepContext
    decision: Decision | None = None
    skipping: bool = False
    input_hidden: torch.Tensor | None = None
    reference: tuple = (None, None)


class StepLoopExecutor:
    """Runs a ``CachePolicy`` on an unmodified diffusers transformer.

    It wraps the transformer's and its blocks' ``forward`` (and, when given, the scheduler's
    ``set_timesteps``/``step`` and the transformer's ``cache_context``) to know the step and the CFG
    branch of every call, computes the signals the policy asked for, runs the head blocks, asks the
    policy, then runs the remaining blocks or applies the branch's cached residual (and runs the
    policy's tail blocks, if any).
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        policy: CachePolicy,
        scheduler=None,
        num_steps: int | None = None,
        synchronize: bool = False,
    ):
        if not isinstance(policy, CachePolicy):
            raise TypeError(
                f"policy must be a CachePolicy instance such as FirstBlockCache(threshold=0.2), got {policy!r}"
            )
        self.transformer, self.scheduler, self.num_steps = transformer, scheduler, num_steps
        self.synchronize = synchronize
        self.spec = spec_for(transformer)
        self.policy = policy.for_model(self.spec)
        self.blocks = self._collect_blocks()
        self._check_policy()
        self.trace: list[StepRecord] = []
        self._branches: dict[str, _Branch] = {}
        self._call: _Call | None = None
        self._context_name: str | None = None
        self._calls_since_step = 0
        self._last_timestep: float | None = None
        self._patches: list[tuple[Any, str, Any]] = []

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
        unknown = set(self.policy.signals) - set(SIGNALS)
        if unknown:
            raise ValueError(f"{self.policy!r} asks for unknown signals {sorted(unknown)}; known: {SIGNALS}")
        if "modulated_input" in self.policy.signals and self.spec.modulated_input is None:
            raise ValueError(f"the {self.spec.family} spec defines no modulated input for {self.policy!r}")
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
        original = getattr(owner, name)
        own = owner.__dict__.get(name)
        self._patches.append((owner, name, own))
        setattr(owner, name, functools.update_wrapper(functools.partial(wrapper, original), original))

    def remove(self) -> None:
        for owner, name, own in reversed(self._patches):
            if own is None:
                owner.__dict__.pop(name, None)
            else:
                setattr(owner, name, own)
        self._patches.clear()

    def reset(self) -> None:
        """Start a new generation: fresh policy state and cache per branch, a new trace."""
        self.trace = []
        self._branches = {}
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
        timestep = Arguments(self.transformer, args, kwargs)[self.spec.timestep_argument]
        name = self._branch_name(timestep)
        branch = self._branches.get(name)
        if branch is None:
            branch = self._branches[name] = _Branch(copy.deepcopy(self.policy))
            branch.policy.reset()
        context = StepContext(branch.step, self._steps_in_generation(), name, timestep)
        call = self._call = _Call(branch, context)
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
        if index == 0:
            call.input_hidden = arguments["hidden_states"]
            if "modulated_input" in self.policy.signals:
                call.context.signals["modulated_input"] = self.spec.modulated_input(block, arguments)
        if index == head:
            hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
            if "head_residual" in self.policy.signals:
                call.context.signals["head_residual"] = hidden - call.input_hidden
            call.decision = call.branch.policy.decide(call.context)
            if not call.decision.compute:
                call.skipping = True
                return output.pack(*self._reuse(call, hidden, encoder))
            call.reference = (hidden, encoder)
        storing = self.policy.caches and not call.skipping
        if storing and self.policy.tail_blocks and index == tail_start:
            arguments = Arguments(block, args, kwargs)
            self._store(call, arguments["hidden_states"], arguments["encoder_hidden_states"])
        result = original(*args, **kwargs)
        if storing and not self.policy.tail_blocks and index == len(self.blocks) - 1:
            self._store(call, *output.unpack(result))
        return result

    def _reuse(self, call: _Call, hidden, encoder):
        branch = call.branch
        if branch.hidden_residual is None:
            raise RuntimeError(
                f"{self.policy!r} chose to reuse at step {call.context.step} of branch "
                f"{call.context.branch!r}, but nothing is cached yet: a policy must compute before it reuses"
            )
        if branch.encoder_residual is not None and encoder is not None:
            encoder = encoder + branch.encoder_residual
        return hidden + branch.hidden_residual, encoder

    def _store(self, call: _Call, hidden, encoder) -> None:
        reference_hidden, reference_encoder = call.reference
        call.branch.hidden_residual = hidden - reference_hidden
        both = encoder is not None and reference_encoder is not None
        call.branch.encoder_residual = encoder - reference_encoder if both else None


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
    target, policy: CachePolicy, *, num_steps: int | None = None, synchronize: bool = False
) -> StepLoopExecutor:
    """Run ``policy`` on a diffusers pipeline (or a bare transformer); returns the executor, whose
    ``trace`` holds one record per transformer call of the last generation.

    ``num_steps`` tells a bare transformer how many steps a generation has (a pipeline's scheduler
    says so itself). ``synchronize=True`` waits for the GPU around every transformer call, so that
    the trace's ``seconds`` are the call's device time rather than its launch time."""
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
    executor = StepLoopExecutor(transformer, policy, scheduler, num_steps, synchronize).install()
    transformer.__dict__[_ATTRIBUTE] = executor
    return executor


def detach(target) -> StepLoopExecutor | None:
    """Remove cachelab from a pipeline or transformer; returns the executor that was attached, if any."""
    transformer, _ = _components(target)
    executor = transformer.__dict__.pop(_ATTRIBUTE, None)
    if executor is not None:
        executor.remove()
    return executor
