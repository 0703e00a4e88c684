"""The forward of one block (block-unit policies) or one module (module-unit policies) under the executor:
ask the policy for the unit, then compute it and keep its output, or stand in for it with kept outputs."""

from __future__ import annotations

from .guidance import cond_halves
from .models.specs import Arguments
from .units import ModuleSite, block_unit


def block_forward(executor, call, index: int, original, args, kwargs):
    """A block-unit policy's block: its residual (hidden and text streams) is what is kept and stood in."""
    block, output = executor.blocks[index]
    arguments = Arguments(block, args, kwargs)
    hidden, encoder = arguments["hidden_states"], arguments["encoder_hidden_states"]
    unit = block_unit(index)
    kept = call.branch.kept_for(unit)
    signals = {"block_input": hidden} if "block_input" in executor.policy.signals else {}
    decision = executor.decide_unit(call, unit, kept, signals, block=index)
    if not decision.compute:
        call.skipped.append(unit)
        hidden_residual, encoder_residual = kept.stand_in(decision.weights, f"block {index}")
        if encoder is not None and encoder_residual is not None:
            encoder = encoder + encoder_residual
        return output.pack(hidden + hidden_residual, encoder)
    with executor.timed(unit):
        result = original(*args, **kwargs)
    if executor.policy.caches or executor.rehearsal is not None:
        out_hidden, out_encoder = output.unpack(result)
        both = out_encoder is not None and encoder is not None
        kept.keep((out_hidden - hidden, out_encoder - encoder if both else None), call.context.step)
        if executor.rehearsal is not None:  # block residuals per branch and block, for per-block plans
            executor.rehearsal.setdefault(call.context.branch, {}).setdefault(unit, []).append(out_hidden - hidden)
    return result


def module_forward(executor, call, site: ModuleSite, original, args, kwargs):
    """A module-unit policy's module: its output is kept and stood in. The modules of one role in one block
    (Flux's ``ff`` and ``ff_context``) share one decision."""
    kept = call.branch.kept_for(site.key)
    decision = call.unit_decisions.get(site.unit)
    if decision is None:  # the role's first module in this block; decide_unit records the decision for the others
        decision = executor.decide_unit(call, site.unit, kept, {}, site.block, site.role)
    if not decision.compute:
        call.skipped.append(site.key)
        output = kept.stand_in(decision.weights, site.key)
        if executor.policy.keeps_stand_ins:
            kept.keep(output, call.context.step)
        return output
    with executor.timed(site.key):
        result = original(*args, **kwargs)
    if executor.policy.caches:
        kept.keep(cond_halves(result) if call.keeps_cond_half else result, call.context.step)
    return result
