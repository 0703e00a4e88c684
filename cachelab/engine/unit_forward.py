"""The forward of one block (block-level policies) or one module (module-level policies): ask the level's policy
for the unit, then compute it and keep its output, or stand in for it with kept outputs. ``WholeBlocks`` runs a
block as it is (with a module level inside, it times the block only when all of its modules ran)."""

from __future__ import annotations

from ..models.specs import Arguments
from ..policies.signals import read_at
from .guidance import cond_halves
from .state import call_key
from .units import ModuleSite, block_unit


class WholeBlocks:
    def __init__(self, timer):
        self.timer = timer

    def block(self, call, index: int, original, args, kwargs):
        stood_in = len(call.skipped)
        with self.timer(block_unit(index), call, whole=lambda: len(call.skipped) == stood_in):
            return original(*args, **kwargs)


class BlockRunner:
    """A block-level policy's block: its residual (hidden and text streams) is what is kept and stood in."""

    def __init__(self, policy, decider, timer, rehearsal):
        self.decider, self.timer, self.rehearsal = decider, timer, rehearsal
        self.signals, self.caches = read_at("block", policy.signals), policy.caches
        self.whole = WholeBlocks(timer)

    def block(self, call, index: int, original, args, kwargs):
        if not call.inner:
            return self.whole.block(call, index, original, args, kwargs)
        block, output = call.blocks[index]
        arguments = Arguments(block, args, kwargs)
        hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
        unit = block_unit(index)
        kept = call.branch.kept_for(unit, "block")
        decision = self.decider.ask_unit(call, "block", unit, kept, {s.name: s.read(hidden) for s in self.signals}, index)
        if not decision.compute:
            call.skipped.append(unit)
            hidden_residual, encoder_residual = kept.stand_in(decision.weights, call.context.step, f"block {index}")
            if encoder is not None and encoder_residual is not None:
                encoder = encoder + encoder_residual
            return output.pack(hidden + hidden_residual, encoder)
        result = self.whole.block(call, index, original, args, kwargs)
        if self.caches or self.rehearsal.on:
            out_hidden, out_encoder = output.unpack(result)
            both = out_encoder is not None and encoder is not None
            kept.keep((out_hidden - hidden, out_encoder - encoder if both else None), call.context.step)
            self.rehearsal.record(call.context.branch, out_hidden - hidden, unit)  # per block, for per-block plans
        return result


class ModuleRunner:
    """A module-level policy's module: its output is kept and stood in. The modules of one role in one block
    (Flux's ``ff`` and ``ff_context``) share one decision."""

    def __init__(self, policy, decider, timer):
        self.decider, self.timer = decider, timer
        self.caches, self.keeps_stand_ins = policy.caches, policy.keeps_stand_ins

    def module(self, call, site: ModuleSite, original, args, kwargs):
        if not call.inner:
            return original(*args, **kwargs)
        key = call_key(call, site.key)
        kept = call.branch.kept_for(key, "module")
        decision = call.unit_decisions.get(site.unit)
        if decision is None:  # the role's first module in this block; ask_unit records the decision for the others
            decision = self.decider.ask_unit(call, "module", site.unit, kept, {}, site.block, site.role)
        if not decision.compute:
            call.skipped.append(key)
            output = kept.stand_in(decision.weights, call.context.step, key)
            if self.keeps_stand_ins:
                kept.keep(output, call.context.step)
            return output
        with self.timer(key, call):
            result = original(*args, **kwargs)
        if self.caches:
            kept.keep(cond_halves(result) if call.keeps_cond_half else result, call.context.step)
        return result
