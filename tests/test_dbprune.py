"""cachelab's dbprune against cache-dit's own DBPruneConfig: per step the same number of pruned blocks, the
same per-block input changes compared (in block order), the same images; on the digits model and on a
tiny CogView4."""

import cache_dit
import pytest
import torch
from cache_dit import DBPruneConfig
from diffusers import FluxPipeline

import cachelab
from cachelab import zoo
from cachelab.policies import DBPrune

SETTINGS = [  # (cache-dit's keyword arguments, cachelab's)
    (dict(residual_diff_threshold=0.1, Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0),
     dict(threshold=0.1, compute_first=1, compute_last=0, warmup_steps=0)),
    (dict(residual_diff_threshold=0.05, Fn_compute_blocks=2, Bn_compute_blocks=2, max_warmup_steps=3, non_prune_block_ids=[5]),
     dict(threshold=0.05, compute_first=2, compute_last=2, warmup_steps=3, non_prune_blocks=[5])),
    (dict(residual_diff_threshold=0.04, Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=0,
          enable_dynamic_prune_threshold=True, dynamic_prune_threshold_relax_ratio=1.5),
     dict(threshold=0.04, compute_first=1, compute_last=0, warmup_steps=0, dynamic_threshold=True, dynamic_relax_ratio=1.5)),
]


def digits_call(pipe):
    return pipe(zoo.prompts_for([3, 8]), height=32, width=32, max_sequence_length=8,
                generator=torch.Generator().manual_seed(0), output_type="np").images


def cogview4_call(pipe):
    return pipe("a photo of a cat", height=32, width=32, num_inference_steps=12, guidance_scale=3.0,
                generator=torch.Generator().manual_seed(0), output_type="np").images


def cache_dit_run(make_pipe, call, settings):
    pipe = make_pipe()
    pipe.set_progress_bar_config(disable=True)
    cache_dit.enable_cache(pipe, cache_config=DBPruneConfig(**settings))
    try:
        images = call(pipe)
        stats = cache_dit.summary(pipe, logging=False)[-1]
    finally:
        cache_dit.disable_cache(pipe)
    pruned = {"cond": stats.pruned_blocks, "uncond": stats.cfg_pruned_blocks}
    changes = {branch: {int(step): [d for d in diffs if d >= 0] for step, diffs in by_step.items()}
               for branch, by_step in (("cond", stats.residual_diffs), ("uncond", stats.cfg_residual_diffs))}
    return pruned, {branch: {s: d for s, d in c.items() if d} for branch, c in changes.items()}, images


def cachelab_run(pipe, call, settings):
    executor = cachelab.attach(pipe, DBPrune(**settings))
    try:
        images = call(pipe)
    finally:
        cachelab.detach(pipe)
    branches = executor._branches
    pruned = {branch: [len(r.skipped_units) for r in executor.trace if r.branch == branch] for branch in ("cond", "uncond")}
    changes = {branch: branches[branch].policy.changes if branch in branches else {} for branch in ("cond", "uncond")}
    return pruned, changes, images, executor


def assert_same_pruning(expected, actual):
    (pruned, changes), (our_pruned, our_changes) = expected, actual
    assert our_pruned == pruned
    for branch, by_step in changes.items():
        assert our_changes[branch].keys() == by_step.keys()
        for step, values in by_step.items():
            assert our_changes[branch][step] == pytest.approx(values, rel=1e-5)


@pytest.fixture(scope="module")
def digits():
    pipe = FluxPipeline(**zoo.load_pipeline().components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("theirs, ours", SETTINGS)
def test_dbprune_prunes_the_blocks_cache_dit_prunes_on_digits(digits, theirs, ours):
    pruned, changes, images = cache_dit_run(lambda: FluxPipeline(**zoo.load_pipeline().components), digits_call, theirs)
    our_pruned, our_changes, our_images, executor = cachelab_run(digits, digits_call, ours)
    assert 0 < sum(pruned["cond"]) < 28 * len(executor.blocks)  # the setting prunes some blocks, not all
    assert_same_pruning((pruned, changes), (our_pruned, our_changes))
    assert abs(our_images - images).max() < 1e-5
    work = [r.work for r in executor.trace]
    assert min(work) < 1.0 and max(work) == 1.0


def test_dbprune_prunes_the_blocks_cache_dit_prunes_on_cogview4(cogview4):
    import tiny

    theirs = dict(residual_diff_threshold=0.1, Fn_compute_blocks=1, Bn_compute_blocks=0, max_warmup_steps=2)
    ours = dict(threshold=0.1, compute_first=1, compute_last=0, warmup_steps=2)
    pruned, changes, images = cache_dit_run(tiny.cogview4_pipeline, cogview4_call, theirs)
    our_pruned, our_changes, our_images, _ = cachelab_run(cogview4, cogview4_call, ours)
    assert sum(pruned["cond"]) > 0 and sum(pruned["uncond"]) > 0  # true CFG: two branches, each its own decisions
    assert_same_pruning((pruned, changes), (our_pruned, our_changes))
    assert abs(our_images - images).max() < 1e-5


def test_dbprune_settings_are_checked_early():
    with pytest.raises(ValueError, match="threshold must be a number >= 0"):
        DBPrune(threshold=-1.0)
    with pytest.raises(ValueError, match="non_prune_blocks entry must be an integer"):
        DBPrune(non_prune_blocks=["x"])
