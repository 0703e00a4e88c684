"""Token-level caching (``unit = "token"``, ``cachelab.engine.tokens``): a policy that chooses every token gives the
uncached output (to float rounding), one that chooses none gives module-level reuse exactly, on every family (tiny
pipelines and tiny transformers), with CFG; the accounting records the partial units; what cannot work is refused."""

import pytest
import torch
from families import FAMILIES
from tiny import generate, run_cached

import cachelab
from cachelab.policies import CachePolicy, Decision, Fora, compute
from cachelab.policies.clusca import ClusCa
from cachelab.policies.duca import DuCa
from cachelab.policies.toca import ToCa

ALL_ROLES = ("attn", "cross_attn", "ff")


class Fraction(CachePolicy):
    """Computes everything at step 0 (and every ``every``-th step), then ``share`` of each module's tokens, drawn at
    random (``share`` 0: the whole module reused)."""

    unit = "token"

    def __init__(self, share, roles=ALL_ROLES, every=1000):
        self.share, self.roles, self.every = share, roles, every

    def reset(self):
        self.generator = torch.Generator().manual_seed(0)

    def decide(self, ctx):
        if ctx.step % self.every == 0 or not ctx.computed_steps:
            return compute()
        count, batch = ctx.signals["count"], ctx.signals["batch"]
        chosen = int(self.share * count)
        if chosen == 0:
            return Decision(False)
        return Decision(True, tokens=torch.stack([torch.randperm(count, generator=self.generator)[:chosen] for _ in range(batch)]))


class ReuseAfterFirst(CachePolicy):
    """The module-level policy that ``Fraction(0.0)`` must equal."""

    unit = "module"

    def __init__(self, roles=ALL_ROLES, every=1000):
        self.roles, self.every = roles, every

    def decide(self, ctx):
        return compute() if ctx.step % self.every == 0 or not ctx.computed_steps else Decision(False)


def run(pipe, policy, steps=6, **kwargs):
    return run_cached(pipe, policy, lambda: generate(pipe, steps=steps, **kwargs))


PIPES = ["flux", "wan", "sd3", "cogview4", "cogvideox"]


@pytest.mark.parametrize("name", PIPES)
def test_every_token_is_the_uncached_output_and_no_token_is_module_reuse(request, name):
    pipe = request.getfixturevalue(name)
    uncached = generate(pipe, steps=5)
    everything, executor = run(pipe, Fraction(1.0), steps=5)
    assert (everything - uncached).abs().max().item() <= 1e-5
    assert any("<" in unit for record in executor.trace for unit in record.skipped_units)  # the partial path ran
    nothing, executor = run(pipe, Fraction(0.0, every=3), steps=5)
    assert not torch.equal(nothing, uncached)
    if name != "cogview4":  # CogView4 calls its ff twice per block (image, then text): the module runner keeps one output
        module_level, _ = run(pipe, ReuseAfterFirst(every=3), steps=5)
        assert torch.equal(nothing, module_level)
    half, executor = run(pipe, Fraction(0.5, every=3), steps=5)
    assert torch.isfinite(half).all() and not torch.equal(half, nothing)


def test_cfg_branches_keep_their_own_tokens_and_shared_decisions_share_them(wan):
    uncached = generate(wan, steps=4, guidance_scale=5.0)
    for cfg_decisions in ("separate", "shared"):
        executor = cachelab.attach(wan, Fraction(1.0), cfg_decisions=cfg_decisions)
        try:
            images = generate(wan, steps=4, guidance_scale=5.0)
        finally:
            cachelab.detach(wan)
        assert {r.branch for r in executor.trace} == {"cond", "uncond"}
        assert (images - uncached).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_at_1_and_0(family):
    model, inputs = FAMILIES[family]()
    model.eval()

    def calls(policy):
        outputs = []
        executor = cachelab.attach(model, policy, num_steps=4) if policy is not None else None
        try:
            with torch.no_grad():
                for t in (900.0, 700.0, 500.0, 300.0):
                    outputs.append(model(**inputs, timestep=torch.tensor([t]), return_dict=False)[0])
        finally:
            if executor is not None:
                cachelab.detach(model)
        return torch.stack(outputs)

    uncached = calls(None)
    assert (calls(Fraction(1.0)) - uncached).abs().max().item() <= 1e-4
    assert torch.equal(calls(Fraction(0.0)), calls(ReuseAfterFirst()))


def test_the_work_counts_partial_units_at_their_measured_cost(flux):
    _, executor = run(flux, Fraction(0.25, roles=("ff",)), steps=6)
    partial = [r for r in executor.trace if r.step > 0]
    assert all(any("<" in u for u in r.skipped_units) for r in partial)
    costs = executor.costs
    for unit in partial[0].skipped_units:
        full, _, part = unit.partition("<")
        assert costs.samples[full] and costs.samples[part]  # both measured, not assumed proportional
    assert all(r.work != 1.0 for r in partial) and executor.trace[0].work == 1.0


def test_text_tokens_always_compute(flux):
    """A partial call computes Flux's ff_context in full: its output equals the uncached call's at step 1."""
    seen = {}

    def record(module, args, output):
        seen.setdefault("rows", []).append(output.shape[1])

    block = flux.transformer.transformer_blocks[0]
    handle = block.ff_context.register_forward_hook(record)
    try:
        run(flux, Fraction(0.25, roles=("ff",)), steps=3)
    finally:
        handle.remove()
    assert len(set(seen["rows"])) == 1  # the text stream's every row, at every step


@pytest.mark.parametrize("policy", [ToCa(fresh_ratio=0.3), DuCa(interval=4, fresh_ratio=0.5), ClusCa(cluster_count=4, interval=4),
                                    ToCa(fresh_ratio=0.3, score="norm", forecaster="taylor"),
                                    ClusCa(cluster_count=4, forecaster="reuse")],
                         ids=["toca", "duca", "clusca", "toca_norm_taylor", "clusca_reuse"])
@pytest.mark.parametrize("name", ["flux", "wan"])
def test_the_token_policies_run_with_cfg(request, name, policy):
    pipe = request.getfixturevalue(name)
    kwargs = {"guidance_scale": 5.0} if name == "wan" else {}
    uncached = generate(pipe, steps=8, **kwargs)
    images, executor = run(pipe, policy, steps=8, **kwargs)
    assert torch.isfinite(images).all() and 0 < (images - uncached).abs().max().item() < 0.5
    assert any("<" in u for r in executor.trace for u in r.skipped_units)
    assert executor.module_runner.nbytes(executor._branches.values()) > 0 or policy.name == "duca"


def test_toca_at_ratio_1_is_uncached(flux):
    uncached = generate(flux, steps=6)
    images, _ = run(flux, ToCa(fresh_ratio=1.0, ratio_schedule="constant", fresh_threshold=100, spatial_bonus=0), steps=6)
    assert (images - uncached).abs().max().item() <= 1e-5


def test_a_stack_nests_tokens_inside_computed_steps(flux):
    from cachelab.policies import FixedInterval

    images, executor = run(flux, [FixedInterval(interval=2), ToCa(fresh_ratio=0.3)], steps=8)
    assert torch.isfinite(images).all() and executor.trace[0].unit == "step+token"
    assert any(not r.computed and not r.units for r in executor.trace)


def test_the_attention_map_score_is_refused(flux):
    with pytest.raises(ValueError, match="attention-map score needs the attention weights"):
        cachelab.attach(flux, ToCa(score="attention"))
    cachelab.detach(flux) if getattr(flux.transformer, "_cachelab_executor", None) else None


def test_settings_are_checked():
    with pytest.raises(ValueError, match="fresh_ratio must be"):
        ToCa(fresh_ratio=1.5)
    with pytest.raises(ValueError, match="ratio_schedule must be one of"):
        ToCa(ratio_schedule="cosine")
    with pytest.raises(ValueError, match="no attention maps"):
        DuCa(score="attention")
    with pytest.raises(ValueError, match="cluster_count must be an integer >= 1"):
        ClusCa(cluster_count=0)


def test_fora_is_untouched_by_the_token_runtime(flux):
    images, executor = run(flux, Fora(interval=2), steps=4)
    assert torch.isfinite(images).all()
