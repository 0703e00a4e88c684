"""The blocks of a transformer call under a step-level policy: the head blocks run, the policy decides once, the
blocks up to the tail are computed (by the inner levels, if any; the residual of them kept) or stood in for."""

from __future__ import annotations

from ..models.specs import Arguments
from ..policies.signals import read_at
from .units import block_unit


class StepRunner:
    def __init__(self, blocks, spec, policy, decider, inner, rehearsal):
        self.blocks, self.spec, self.decider, self.inner, self.rehearsal = blocks, spec, decider, inner, rehearsal
        self.signals, self.head = policy.signals, policy.head_blocks
        self.tail_start = len(blocks) - policy.tail_blocks
        self.tail, self.caches = policy.tail_blocks, policy.caches

    def block(self, call, index: int, original, args, kwargs):
        block, output = call.blocks[index]
        if call.skipping and index < self.tail_start:
            arguments = Arguments(block, args, kwargs)
            return output.pack(arguments["hidden_states"], arguments["encoder_hidden_states"])
        if index == 0 or index == self.head:
            arguments = Arguments(block, args, kwargs)
            signals = () if call.following is not None else self.signals  # a follower's policy is not asked
        if index == 0:
            call.input_hidden = arguments["hidden_states"]
            for signal in read_at("first_block", signals):
                call.context.signals[signal.name] = signal.read(self.spec, block, arguments)
        if index == self.head:
            hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
            for signal in read_at("head", signals):
                call.context.signals[signal.name] = signal.read(hidden, call.input_hidden)
            call.decision = self.decider.ask(call, "step", call.context, call.following)
            if not call.decision.compute:
                call.skipping = True
                call.skipped += [block_unit(i) for i in range(self.head, self.tail_start)]
                return output.pack(*self._stand_in(call, hidden, encoder))
            call.reference = (hidden, encoder)
        storing = (self.caches or self.rehearsal.on) and not call.skipping
        if storing and self.tail and index == self.tail_start:
            arguments = Arguments(block, args, kwargs)
            self._store(call, arguments["hidden_states"], arguments["encoder_hidden_states"])
        call.inner = self.head <= index < self.tail_start
        result = self.inner.block(call, index, original, args, kwargs)
        if storing and not self.tail and index == len(self.blocks) - 1:
            self._store(call, *output.unpack(result))
        return result

    def _stand_in(self, call, hidden, encoder):
        kept = call.branch.kept_for("step", "step")
        if not kept.outputs:
            raise RuntimeError(
                f"{call.branch.policies['step']!r} chose to reuse at step {call.context.step} of branch "
                f"{call.context.branch!r}, but nothing is cached yet: a policy must compute before it reuses"
            )
        hidden_residual, encoder_residual = kept.stand_in(call.decision.weights, call.context.step, "the step")
        if encoder_residual is not None and encoder is not None:
            encoder = encoder + encoder_residual
        return hidden + hidden_residual, encoder

    def _store(self, call, hidden, encoder) -> None:
        """Keep the residual of the blocks between head and tail (and record it in a rehearsal)."""
        reference_hidden, reference_encoder = call.reference
        both = encoder is not None and reference_encoder is not None
        hidden_residual = hidden - reference_hidden
        self.rehearsal.record(call.context.branch, hidden_residual)
        call.branch.kept_for("step", "step").keep((hidden_residual, encoder - reference_encoder if both else None), call.context.step)
