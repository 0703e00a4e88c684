"""What the context-parallel tests run, on 2 ranks (cp_worker.py) and on one process (test_context_parallel.py)."""

import torch
import torch.distributed as dist

import cachelab
from cachelab import zoo
from cachelab.policies import (
    CachePolicy,
    DBPrune,
    DualBlockCache,
    FasterCache,
    FirstBlockCache,
    FixedInterval,
    Fora,
    Learned,
    MagCache,
    NoCache,
    Oracle,
    PyramidAttentionBroadcast,
    Stack,
    TaylorSeer,
    TeaCache,
    compute,
    reuse,
)
from cachelab.policies.base import relative_l1

DIGITS = [0, 3, 5, 8]
SEED = 7

#: Every built-in policy, set to skip a good share of the 28 steps of the digits model.
DIGITS_POLICIES = {
    "no_cache": NoCache,
    "first_block": lambda: FirstBlockCache(threshold=0.2),
    "first_block_taylor": lambda: FirstBlockCache(threshold=0.3, taylor_order=1),
    "teacache": lambda: TeaCache(threshold=0.2),
    "magcache": lambda: MagCache(threshold=0.12),
    "fixed_interval": lambda: FixedInterval(interval=3),
    "dbcache": lambda: DualBlockCache(threshold=0.12, compute_first=1, warmup_steps=0),
    "taylorseer": lambda: TaylorSeer(interval=4, order=1),
    "learned": lambda: Learned(budget=6),
    "oracle": lambda: Oracle(budget=6),
    "learned_blocks": lambda: Learned(budget=6, unit="block"),
    "dbprune": lambda: DBPrune(threshold=0.1, compute_first=1, warmup_steps=0),
    "pab": PyramidAttentionBroadcast,
    "fora": Fora,
    "faster_cache": FasterCache,
    "taylorseer_modules": lambda: TaylorSeer(interval=3, order=1, unit="module"),
    "first_block_foca": lambda: FirstBlockCache(threshold=0.2, forecaster="foca"),
    "taylorseer_modules_hermite": lambda: TaylorSeer(interval=3, order=1, unit="module", forecaster="hermite"),
    "stack_first_block_pab": lambda: Stack([FirstBlockCache(threshold=0.2), PyramidAttentionBroadcast()]),
    "stack_fixed_interval_dbprune": lambda: Stack([FixedInterval(interval=2), DBPrune(threshold=0.1, compute_first=1,
                                                                                       warmup_steps=0)]),
}
#: Token policies: each rank chooses among its own shard of the tokens, so the chosen set differs from one process's.
TOKEN_POLICIES = {"toca": lambda: cachelab.make_policy("toca", spatial_bonus=0.0), "duca": lambda: cachelab.make_policy("duca"),
                  "clusca": lambda: cachelab.make_policy("clusca")}
#: The tiny Wan: its context-parallel plan splits the sequence inside block 0's own hook; it runs CFG.
WAN_POLICIES = {
    "first_block": lambda: FirstBlockCache(threshold=0.4),
    "teacache": lambda: TeaCache(threshold=0.3, coefficients=[1.0, 0.0]),
    "faster_cache_cfg": lambda: FasterCache(unconditional_batch_skip_range=3, unconditional_batch_timestep_skip_range=(-1, 1000)),
}


def calibration(pipe) -> dict:
    """What ``python -m cachelab.calibrate`` measures, on two prompts."""
    from cachelab.calibrate.learned import learned_plans
    from cachelab.calibrate.signals import magcache_ratios, teacache_coefficients

    prompts = zoo.prompts_for([1, 6])

    def kwargs():
        return dict(generator=torch.Generator().manual_seed(SEED))

    return dict(teacache=teacache_coefficients(pipe, prompts, **kwargs()), magcache=magcache_ratios(pipe, prompts, **kwargs()),
                learned={b: p.to_json() for b, p in learned_plans(pipe, prompts, [4, 6], **kwargs()).items()})


def digits_pipeline():
    pipe = zoo.load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def wan_pipeline():
    import tiny

    pipe = tiny.wan_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, policy, *, wan: bool = False, executor=None) -> dict:
    """Decisions, signals, images (and the error, if any) of one generation, cached with ``policy`` or not."""
    attached = executor is None and policy is not None
    if attached:
        executor = cachelab.attach(pipe, policy)
    try:
        generator = torch.Generator().manual_seed(SEED)
        if wan:
            images = pipe("a photo of a cat", num_inference_steps=8, generator=generator, output_type="np",
                          height=16, width=16, num_frames=5, max_sequence_length=16).frames
        else:
            if executor is not None and executor.policy.rehearses:
                executor.rehearse(lambda: pipe(zoo.prompts_for(DIGITS), generator=torch.Generator().manual_seed(SEED)))
                generator = torch.Generator().manual_seed(SEED)
            images = pipe(zoo.prompts_for(DIGITS), generator=generator, output_type="np").images
        error = None
    except Exception as err:  # the scenarios that must fail on every rank record the error
        images, error = None, f"{type(err).__name__}: {err}"
    finally:
        if attached:
            cachelab.detach(pipe)
    trace = executor.trace if executor is not None else []
    return dict(
        images=None if images is None else torch.as_tensor(images),
        decisions=[(r.branch, r.step, r.computed) for r in trace],
        signals=[r.signal for r in trace], error=error,
        disagreements=getattr(executor and executor.reduction, "disagreements", 0),
        messages=getattr(executor and executor.reduction, "messages", 0),
    )


class LocalSignalProbe(CachePolicy):
    """Computes every step; keeps the relative L1 change of its OWN shard's head residual at step 1 (unreduced)
    in ``seen`` (the executor runs a copy of the policy)."""

    seen = {}
    signals = ("head_residual",)
    head_blocks = 1

    def reset(self):
        self.first = None

    def decide(self, ctx):
        residual = ctx.signals["head_residual"]
        if self.first is None:
            self.first = residual
        elif ctx.step == 1:
            self.seen["change"] = ((residual - self.first).abs().mean() / self.first.abs().mean()).item()
            self.seen["mean"] = residual.abs().mean().item()
        return compute()


class RawLocalPolicy(CachePolicy):
    """A user's policy that decides from its own shard's tensor, unreduced: the ranks disagree at step 1."""

    signals = ("head_residual",)
    head_blocks = 1

    def __init__(self, local_means):
        self.cut = sum(sorted(local_means)[:2]) / 2

    def decide(self, ctx):
        if ctx.step == 0:
            return compute()
        return reuse() if ctx.signals["head_residual"].abs().mean().item() > self.cut else compute()


class RaisesOnRank(CachePolicy):
    """Raises at step 3 on one rank only."""

    def __init__(self, rank_to_fail):
        self.rank_to_fail = rank_to_fail

    def decide(self, ctx):
        if ctx.step == 3 and dist.is_initialized() and dist.get_rank() == self.rank_to_fail:
            raise ValueError("boom on one rank")
        return compute()


class ReducesOnRank(CachePolicy):
    """Reduces a statistic (relative_l1) on one rank only, from step 2 on: the ranks' paths diverge."""

    signals = ("head_residual",)
    head_blocks = 1

    def __init__(self, rank_to_reduce):
        self.rank_to_reduce = rank_to_reduce

    def reset(self):
        self.previous = None

    def decide(self, ctx):
        current, previous, self.previous = ctx.signals["head_residual"], self.previous, ctx.signals["head_residual"]
        if previous is not None and ctx.step >= 2 and dist.get_rank() == self.rank_to_reduce:
            relative_l1(current, previous)
        return compute()
