"""Token-level caching: a ``unit = "token"`` policy chooses, per module and call, the tokens that compute.

The runtime (``TokenRunner``, built by the executor in place of ``ModuleRunner``) computes the module on those tokens
only and stands in for the others from their kept outputs, per token:

- token-wise modules (the feed-forward roles, cross attention: each query on its own) run on the chosen rows of
  their input (a gather), and their outputs are scattered into the kept ones;
- self and joint attention (role ``attn``): the chosen tokens' **queries** attend to the keys and values of **all**
  tokens (ToCa's and ClusCa's published setting, and the usual one): the module runs on its whole input (the
  projections of every token), and only its attention product is restricted to the chosen queries
  (``query_subset`` wraps the processor's ``dispatch_attention_fn`` or ``F.scaled_dot_product_attention``);
- text tokens (the text stream of joint blocks: Flux's ``ff_context`` and the text half of its joint attention,
  the text rows of Flux's and HunyuanVideo's single-stream blocks, CogView4's feed-forward called again on the
  text) always compute: a policy chooses among the image or video tokens only. A role the policy stands in for as
  a whole (``Decision(compute=False)``) stands in for its text modules too, as a module-level policy would.

Per unit and CFG branch the runtime keeps (``TokenState``): the newest value of each token's output (the stand-in's
base, updated by every partial call), each token's cache age (calls since it last computed, ToCa's cache index), and
what the policy's declared ``token_signals`` need: the input at each token's last computation (``input_change``), the
k-means labels of the tokens at the unit's last full computation (``clusters``, ClusCa). A linear or stateful
forecaster (``forecaster=...``) stands in per token as ``base + (forecast - newest full output)``: the forecast's
correction from the full computations added to each token's newest value (TaylorSeer's order-0 term refreshed by the
computed tokens, as ClusCa does); with ``reuse`` the stand-in is the base itself.

Accounting: a partial call is timed under its own cost key (``block3.ff/tokens12``) and recorded in the call's
skipped units as ``block3.ff<block3.ff/tokens12``: the work saved is the unit's measured full cost less the partial
call's measured cost, gathers, scatters and propagation included (``cachelab.engine.units.Costs.work``).

Context parallelism: each rank holds a shard of the tokens and chooses among its own; the role's compute/stand-in
decision is agreed over the ranks as every unit decision is, and a policy must choose the same number of tokens on
every rank (a fraction of equal shards does; Ulysses' all-to-all of the chosen queries needs it). Policies read
``signals["sharded"]`` to refuse what a shard cannot give (ToCa's spatial bonus assumes the whole image grid).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..forecasters import Reuse
from ..models.specs import Arguments, parameter_names
from .state import call_key
from .token_ops import add_streams, as_index, kmeans, nbytes_of, propagate, query_subset, replace_argument, rows_at
from .units import combine

#: In a call's skipped units, ``full<partial``: the unit ran on some tokens; saved = cost(full) - cost(partial).
PARTIAL = "<"
#: Token signals a policy may declare in ``token_signals`` (``count``, ``age``, ``sharded`` are always given).
TOKEN_SIGNALS = ("input", "kept", "input_change", "clusters")
#: Modules of the text stream in joint blocks: always computed in full.
TEXT_MODULES = ("ff_context", "txt_mlp")
#: Families whose joint attention (and single-stream blocks) put the text tokens before the image tokens.
TEXT_FIRST = {"flux": True, "qwen_image": True, "cogvideox": True, "cogview4": True, "sd3": False, "hunyuan_video": False}
#: Families whose single-stream blocks concatenate text and image tokens before their modules.
SINGLE_STREAM = ("flux", "hunyuan_video")


@dataclass
class TokenState:
    """One token unit's per-token store in one CFG branch."""

    base: object = None  # newest output of every token (a tensor, or a tuple whose first element is the image stream)
    age: torch.Tensor | None = None  # [B, N] calls since each token last computed
    inputs: torch.Tensor | None = None  # [B, N, D] each token's input at its last computation (input_change)
    labels: torch.Tensor | None = None  # [B, N] k-means labels at the last full computation (clusters)
    centroids: torch.Tensor | None = None
    generator: torch.Generator | None = field(default=None, repr=False)

    def nbytes(self) -> int:
        total = 0
        for value in (self.age, self.inputs, self.labels, self.centroids):
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
        return total


class TokenRunner:
    """A token-unit policy's module: the interface of ``unit_forward.ModuleRunner``."""

    def __init__(self, policy, decider, timer, spec):
        self.decider, self.timer, self.spec = decider, timer, spec
        self.policy = policy
        self.wanted = tuple(getattr(policy, "token_signals", ()))
        unknown = set(self.wanted) - set(TOKEN_SIGNALS)
        if "attention_map" in unknown:
            raise ValueError(
                f"{policy!r}: the attention-map score needs the attention weights, and the {spec.family} model's attention "
                "processors compute attention with scaled_dot_product_attention (or diffusers' dispatch_attention_fn), which "
                "returns none; choose a score that works without them (score='similarity', 'norm', 'v_norm' or 'random')")
        if unknown:
            raise ValueError(f"{policy!r} asks for unknown token signals {sorted(unknown)}; known: {', '.join(TOKEN_SIGNALS)}")
        self.forecasts = not isinstance(policy.stand_in_rule, Reuse)
        self.text_length: int | None = None  # text tokens of the call in flight, seen at a joint module

    # -- the module ---------------------------------------------------------------------------------------------

    def module(self, call, site, original, args, kwargs):
        if not call.inner:
            return original(*args, **kwargs)
        arguments = Arguments(site.module, args, kwargs)
        name = "hidden_states" if "hidden_states" in parameter_names(type(site.module)) else parameter_names(type(site.module))[0]
        hidden = arguments[name]
        encoder = arguments["encoder_hidden_states"] if "encoder_hidden_states" in parameter_names(type(site.module)) else None
        key = call_key(call, site.key)  # a module called again in its block (CogView4's ff on text): key#1
        text = site.attribute in TEXT_MODULES or key != site.key
        if text:
            self.text_length = hidden.shape[1]
        elif encoder is not None and site.role == "attn":
            self.text_length = encoder.shape[1]
        rows = self._image_rows(site, hidden, encoder)
        kept = call.branch.kept_for(key, "token")
        state = _states(call.branch).setdefault(key, TokenState())
        decision = call.unit_decisions.get(site.unit)
        if decision is None:  # the role's first module in this block (the image one); ask_unit records it for the others
            signals = self._signals(state, hidden, rows)
            decision = self.decider.ask_unit(call, "token", site.unit, kept, signals, site.block, site.role)
        step = call.context.step
        if not decision.compute:
            call.skipped.append(key)
            return self._stand_in(kept, state, decision, step, key)
        tokens = None if text else decision.tokens
        if tokens is None:
            with self.timer(key, call):
                result = original(*args, **kwargs)
            self._keep_full(kept, state, result, hidden, rows, step)
            return result
        chosen = as_index(tokens, hidden.shape[0], hidden.device)
        if state.base is None:
            raise RuntimeError(f"a policy chose some tokens of {site.key} before the module ever computed them all: "
                               "compute a unit in full before choosing its tokens")
        partial = f"{site.key}/tokens{chosen.shape[1]}"
        call.skipped.append(f"{site.key}{PARTIAL}{partial}")
        with self.timer(partial, call):
            return self._partial(call, site, original, args, kwargs, name, hidden, encoder, rows, chosen, kept, state, decision)

    def _partial(self, call, site, original, args, kwargs, name, hidden, encoder, rows, chosen, kept, state, decision):
        offset, length = rows
        positions = chosen + offset  # rows of the module's input
        if length != hidden.shape[1]:  # a single-stream module: its text rows compute too
            text_rows = [r for r in range(hidden.shape[1]) if not offset <= r < offset + length]
            positions = torch.cat([torch.tensor(text_rows, device=hidden.device).expand(hidden.shape[0], -1), positions], 1)
        if site.role == "attn":
            joint = encoder is not None
            first = TEXT_FIRST.get(self.spec.family, True)
            queries = positions
            if joint:  # joint attention over [text, image] or [image, text]: every text query too
                count = encoder.shape[1]
                text_queries = torch.arange(count, device=hidden.device) + (0 if first else hidden.shape[1])
                queries = torch.cat([text_queries.expand(hidden.shape[0], -1), positions + (count if first else 0)], 1)
            with query_subset(site.module, queries):
                result = original(*args, **kwargs)
            fresh = rows_at(result, positions)
        else:
            gathered = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))
            new_args, new_kwargs = replace_argument(args, kwargs, name, gathered, site.module)
            fresh = original(*new_args, **new_kwargs)
        merged = self._merge(kept, state, decision, call.context.step, fresh, positions, chosen, rows, hidden)
        return merged

    # -- stores -------------------------------------------------------------------------------------------------

    def _keep_full(self, kept, state, result, hidden, rows, step) -> None:
        kept.keep(result, step)
        state.base = result
        offset, length = rows
        image = hidden[:, offset:offset + length]
        state.age = torch.zeros(image.shape[:2], dtype=torch.long, device=hidden.device)
        if "input_change" in self.wanted:
            state.inputs = image.detach().clone()
        if "clusters" in self.wanted:
            self._cluster(state, image)

    def _cluster(self, state, image) -> None:
        count = int(getattr(self.policy, "cluster_count", 16))
        if state.generator is None:
            state.generator = torch.Generator(device=image.device).manual_seed(int(getattr(self.policy, "seed", 0)))
        centroids = state.centroids if state.centroids is not None and state.centroids.shape[0] == image.shape[0] else None
        state.labels, state.centroids = kmeans(image, min(count, image.shape[1]), centroids, state.generator)

    def _delta(self, kept, decision, step, key):
        """The forecaster's correction (forecast - newest full output), or None for reuse."""
        if not self.forecasts or not kept.outputs:
            return None
        forecast = kept.stand_in(decision.weights, step, key)
        return combine((1.0, -1.0), [forecast, kept.outputs[0]])

    def _stand_in(self, kept, state, decision, step, key):
        if state.base is None:
            return kept.stand_in(decision.weights, step, key)  # raises: nothing kept yet
        delta = self._delta(kept, decision, step, key)
        return state.base if delta is None else add_streams(state.base, delta)

    def _merge(self, kept, state, decision, step, fresh, positions, chosen, rows, hidden):
        offset, length = rows
        base = state.base
        image_base = base[0] if isinstance(base, tuple) else base
        fresh_image = fresh[0] if isinstance(fresh, tuple) else fresh
        index = positions[..., None].expand(-1, -1, image_base.shape[-1])
        new_image = image_base.scatter(1, index, fresh_image.to(image_base.dtype))
        ratio = float(getattr(self.policy, "propagation_ratio", 0.0) or 0.0)
        if ratio > 0 and state.labels is not None:
            new_image = propagate(new_image, offset, length, chosen, fresh_image[:, -chosen.shape[1]:], state.labels, ratio)
        new_base = (new_image, *fresh[1:]) if isinstance(fresh, tuple) else new_image
        state.age = state.age + 1
        state.age.scatter_(1, chosen, 0)
        if state.inputs is not None:
            image = hidden[:, offset:offset + length]
            state.inputs = state.inputs.scatter(1, chosen[..., None].expand(-1, -1, image.shape[-1]),
                                                image.gather(1, chosen[..., None].expand(-1, -1, image.shape[-1])))
        delta = self._delta(kept, decision, step, "")
        if not self.forecasts and kept.outputs and kept.outputs[0] is base:
            kept.outputs[0] = new_base  # reuse: the base is the kept output, one copy
        state.base = new_base
        return new_base if delta is None else add_streams(new_base, delta)

    # -- signals ------------------------------------------------------------------------------------------------

    def _image_rows(self, site, hidden, encoder) -> tuple[int, int]:
        """(offset, count) of the image tokens among the rows of the module's input."""
        total = hidden.shape[1]
        single = (self.spec.family in SINGLE_STREAM and self.text_length and encoder is None
                  and (site.attribute == "proj_mlp" or site.role == "attn") and site.attribute not in TEXT_MODULES)
        if not single or self.text_length >= total:
            return 0, total
        if TEXT_FIRST.get(self.spec.family, True):
            return self.text_length, total - self.text_length
        return 0, total - self.text_length

    def _signals(self, state, hidden, rows) -> dict:
        offset, length = rows
        image = hidden[:, offset:offset + length]
        signals = {"count": length, "batch": hidden.shape[0], "age": state.age, "sharded": self.decider.reduction() is not None}
        if "input" in self.wanted:
            signals["input"] = image
        if "kept" in self.wanted and state.base is not None:
            base = state.base[0] if isinstance(state.base, tuple) else state.base
            signals["kept"] = base[:, offset:offset + length]
        if "input_change" in self.wanted and state.inputs is not None:
            signals["last_input"] = state.inputs
            signals["input_change"] = (image - state.inputs).norm(dim=-1) / state.inputs.norm(dim=-1).clamp_min(1e-12)
        if "clusters" in self.wanted:
            signals["clusters"] = state.labels
        return signals

    def nbytes(self, branches) -> int:
        """Bytes of the per-token bookkeeping (ages, inputs, labels) and of bases kept beside the full outputs."""
        total = 0
        for branch in branches:
            for key, state in _states(branch).items():
                total += state.nbytes()
                kept = branch.kept.get(key)
                if state.base is not None and (kept is None or not kept.outputs or kept.outputs[0] is not state.base):
                    total += nbytes_of(state.base)
        return total


def _states(branch) -> dict[str, TokenState]:
    """The branch's token states (a per-generation attribute: a new generation makes new branches)."""
    return branch.token_states
