"""Attaching the runtime to a pipeline or transformer, and detaching it."""

from __future__ import annotations

from ..policies.base import CachePolicy
from .executor import _ATTRIBUTE, StepLoopExecutor, _components


def attach(
    target, policy: CachePolicy | list, *, num_steps: int | None = None, synchronize: bool = False,
    cfg_decisions: str = "separate", text_kv: bool = False,
) -> StepLoopExecutor:
    """Run ``policy`` on a diffusers pipeline (or a bare transformer); returns the executor, whose
    ``trace`` holds one record per transformer call of the last generation. A list of policies (one per unit:
    step, block, module) runs them as a ``Stack``: each decides inside what the one outside it computes.

    ``num_steps`` tells a bare transformer how many steps a generation has (a pipeline's scheduler
    says so itself). ``synchronize=True`` waits for the GPU around every transformer call, so that
    the trace's ``seconds`` are the call's device time rather than its launch time.

    ``cfg_decisions``: ``"separate"`` (default) gives each CFG branch its own policy copy and decisions;
    ``"shared"`` lets the first branch to call the transformer at a step (``"cond"`` in diffusers'
    pipelines) ask its policy, and every other branch of that step takes the same decision (compute,
    reuse, or forecast with the same weights) applied to its own kept residuals, without computing
    signals or asking its own policy. A follower's trace record keeps its own branch and carries the
    leader's signal.

    ``text_kv=True`` adds the exact text K/V cache (``cachelab.engine.text_kv``) under the policy: the keys and
    values of cross-attention over the text encoder's states are computed once per generation and CFG branch."""
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
    executor = StepLoopExecutor(transformer, policy, scheduler, num_steps, synchronize, cfg_decisions, pipeline, text_kv).install()
    transformer.__dict__[_ATTRIBUTE] = executor
    return executor


def detach(target) -> StepLoopExecutor | None:
    """Remove cachelab from a pipeline or transformer; returns the executor that was attached, if any."""
    transformer, _ = _components(target)
    executor = transformer.__dict__.pop(_ATTRIBUTE, None)
    if executor is not None:
        executor.remove()
    return executor
