"""The blocks of a transformer call under a step-unit policy (every policy that decides once per call)."""

from __future__ import annotations

from .models.specs import Arguments
from .units import block_unit, combine


def block_forward(executor, call, index: int, original, args, kwargs):
    """A block under a step-unit policy: the head blocks run, the policy decides once, the blocks up to the
    tail are computed (the residual of them kept) or stood in for with the branch's kept residuals."""
    block, output = executor.blocks[index]
    tail_start = len(executor.blocks) - executor.policy.tail_blocks
    if call.skipping and index < tail_start:
        arguments = Arguments(block, args, kwargs)
        return output.pack(arguments["hidden_states"], arguments["encoder_hidden_states"])
    head = executor.policy.head_blocks
    if index == 0 or index == head:
        arguments = Arguments(block, args, kwargs)
        signals = () if call.following is not None else executor.policy.signals  # a follower's policy is not asked
    if index == 0:
        call.input_hidden = arguments["hidden_states"]
        if "modulated_input" in signals:
            call.context.signals["modulated_input"] = executor.spec.modulated_input(block, arguments)
    if index == head:
        hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
        if "head_residual" in signals:
            call.context.signals["head_residual"] = hidden - call.input_hidden
        call.decision = executor.decide_step(call, call.context, call.following)
        if not call.decision.compute:
            call.skipping = True
            call.skipped += [block_unit(i) for i in range(head, tail_start)]
            return output.pack(*_reuse(executor, call, hidden, encoder))
        call.reference = (hidden, encoder)
    storing = (executor.policy.caches or executor.rehearsal is not None) and not call.skipping
    if storing and executor.policy.tail_blocks and index == tail_start:
        arguments = Arguments(block, args, kwargs)
        store(executor, call, arguments["hidden_states"], arguments["encoder_hidden_states"])
    with executor.timed(block_unit(index)):
        result = original(*args, **kwargs)
    if storing and not executor.policy.tail_blocks and index == len(executor.blocks) - 1:
        store(executor, call, *output.unpack(result))
    return result


def _reuse(executor, call, hidden, encoder):
    kept = call.branch.residuals
    if not kept:
        raise RuntimeError(
            f"{executor.policy!r} chose to reuse at step {call.context.step} of branch "
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


def store(executor, call, hidden, encoder) -> None:
    """Keep the residual of the blocks between head and tail (and record it in a rehearsal)."""
    reference_hidden, reference_encoder = call.reference
    both = encoder is not None and reference_encoder is not None
    hidden_residual = hidden - reference_hidden
    if executor.rehearsal is not None:
        executor.rehearsal.setdefault(call.context.branch, []).append(hidden_residual)
    call.branch.residuals.appendleft((hidden_residual, encoder - reference_encoder if both else None))
    call.branch.computed_steps.appendleft(call.context.step)
