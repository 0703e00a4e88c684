"""Parity of the token rules with their published codes' rules, re-stated here from reading them (Shenyi-Z/ToCa
DiT-ToCa/cache_functions: force_scheduler, fresh_ratio_scheduler, score_evaluate, cache_cutfresh's
local_selection_with_bonus; kalinplus/Cache4Diffusion flux/clusca-flux: cal_type's counter,
select_one_fresh_index_per_cluster, propagation_update_cache), in the reference's own terms (steps counted down for
ToCa, loops instead of tensor ops), on random inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from cachelab.engine.tokens import kmeans, propagate
from cachelab.policies import StepContext
from cachelab.policies import token_rules as rules
from cachelab.policies.clusca import ClusCa
from cachelab.policies.duca import DuCa
from cachelab.policies.toca import ToCa


def reference_toca_full_steps(n, fresh_threshold, fresh_ratio):
    """ToCa's cal_type + force_scheduler, its steps counted down from n - 1."""
    full, threshold = [], None
    for t in range(n - 1, -1, -1):
        first = t == n - 1
        interval = fresh_threshold if first else threshold
        is_full = first or t % interval == 0
        if is_full:  # force_init calls force_scheduler at the full step
            w = 0.0 if fresh_ratio == 0 else 0.4
            threshold = round(fresh_threshold / (1 + w - 2 * w * t / n))
            if t in range(int(n * 0.2), int(n * 0.4)) and fresh_ratio != 0:
                threshold = 2
        full.append(is_full)
    return full


def context(step, n, block=0, role="ff", signals=None, blocks=28):
    return StepContext(step, n, "cond", signals=signals or {}, computed_steps=(0,) if step else (), unit=f"block{block}.{role}",
                       block=block, role=role, num_blocks=blocks)


@pytest.mark.parametrize("n, threshold, ratio", [(50, 4, 0.07), (28, 3, 0.3), (20, 5, 0.0)])
def test_toca_full_steps_match_the_reference(n, threshold, ratio):
    policy = ToCa(fresh_ratio=ratio, fresh_threshold=threshold)
    policy.reset()
    ours = [policy.kind(context(step, n)) == "full" for step in range(n)]
    assert ours == reference_toca_full_steps(n, threshold, ratio)


@pytest.mark.parametrize("schedule", rules.RATIO_SCHEDULES)
def test_toca_fresh_ratio_schedule_matches_the_reference(schedule):
    n, ratio = 50, 0.07
    for step in (1, 17, 40):
        t = n - 1 - step
        for layer in (0, 13, 27):
            for module in ("attn", "mlp"):
                if schedule == "constant":
                    expected = ratio
                elif schedule == "linear":
                    expected = ratio * (1 + 0.9 - 2 * 0.9 * t / n)
                elif schedule == "exp":
                    expected = ratio * (0.9 ** (t / n))
                else:
                    sw, lw = (2.0, -0.2) if schedule == "ToCa-ddim50" else (0.4, 0.8)
                    mf = (1 - 0.4 * 2.5) if module == "attn" else (1 + 0.6 * 2.5)
                    expected = ratio * (1 + lw - 2 * lw * layer / 27) * (1 + sw - 2 * sw * t / n) * mf
                assert rules.fresh_ratio(schedule, ratio, step, n, layer, 28, module) == pytest.approx(expected)


def test_spatial_bonus_matches_the_reference():
    score = torch.rand(2, 64)
    expected = score.clone()
    side = 8
    for b in range(2):
        for i in range(0, side, 2):
            for j in range(0, side, 2):
                cell = [(i + di) * side + (j + dj) for di in range(2) for dj in range(2)]
                best = max(cell, key=lambda k: score[b, k])  # ties: the first, as torch.max
                expected[b, best] = score[b, best] * 1.6
    assert torch.allclose(rules.local_selection_with_bonus(score, 0.6, 2), expected)
    assert torch.equal(rules.local_selection_with_bonus(score[:, :60], 0.6, 2), score[:, :60])  # no square grid: none


def test_toca_choice_is_the_reference_topk_of_score_age_and_bonus():
    n, count = 50, 64
    tokens, kept = torch.randn(1, count, 8), torch.randn(1, count, 8)
    age = torch.randint(0, 4, (1, count))
    policy = ToCa(fresh_ratio=0.3, ratio_schedule="constant")
    policy.reset()
    assert [policy.kind(context(step, n)) for step in (0, 1, 2)] == ["full", "full", "toca"]  # 48 % 6 == 0
    ctx = context(2, n, signals={"count": count, "batch": 1, "age": age, "input": tokens, "kept": kept, "sharded": False})
    decision = policy.decide(ctx)
    score = F.normalize(1 - F.cosine_similarity(tokens, kept, dim=-1), dim=-1, p=2) + 0.25 * age.float() / 4
    score = rules.local_selection_with_bonus(score, 0.6, 2)
    expected = score.argsort(dim=-1, descending=True)[:, : int(0.3 * count)]
    assert torch.equal(decision.tokens, expected)


def test_duca_alternates_aggressive_and_conservative_between_full_steps():
    policy = DuCa(interval=5, first_enhance=2)
    policy.reset()
    kinds = [policy.kind(context(step, 20)) for step in range(12)]
    # counter form: full at the first 2 steps and when the counter reaches interval - 1; after a full step,
    # aggressive (counter 0), conservative (1), aggressive (2), conservative (3) - no: counter 4 == interval - 1 -> full
    assert kinds == ["full", "full", "aggressive", "conservative", "aggressive", "conservative", "full",
                     "aggressive", "conservative", "aggressive", "conservative", "full"]


def test_clusca_full_steps_are_the_reference_counter():
    policy = ClusCa(interval=4, first_enhance=3)
    policy.reset()
    kinds = [policy.kind(context(step, 20)) == "full" for step in range(12)]
    counter, expected = 0, []
    for step in range(12):  # cal_type: first_enhance steps, then full when cache_counter == fresh_threshold - 1
        if step < 3 or counter == 3:
            counter = 0
            expected.append(True)
        else:
            counter += 1
            expected.append(False)
    assert kinds == expected


def test_one_token_per_cluster_is_the_reference_masked_argmax():
    labels = torch.randint(0, 5, (2, 40))
    generator = torch.Generator().manual_seed(3)
    chosen = rules.one_per_cluster(labels, 5, generator)
    weights = torch.rand((2, 40), generator=torch.Generator().manual_seed(3))
    for b in range(2):
        for k in range(5):
            members = [i for i in range(40) if labels[b, i] == k]
            expected = max(members, key=lambda i: weights[b, i]) if members else 0
            assert int(chosen[b, k]) == expected
            assert not members or int(labels[b, chosen[b, k]]) == k


def test_propagation_is_the_reference_update():
    base, labels = torch.randn(1, 12, 4), torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]])
    chosen, fresh = torch.tensor([[3, 7, 11]]), torch.randn(1, 3, 4)
    scattered = base.clone()
    scattered[0, chosen[0]] = fresh[0]
    ours = propagate(scattered, 0, 12, chosen, fresh, labels, 0.1)
    expected = scattered.clone()
    for i in range(12):
        cluster_fresh = sum(fresh[0, j] for j, c in enumerate(chosen[0]) if labels[0, c] == labels[0, i])
        expected[0, i] = cluster_fresh * 0.1 + scattered[0, i] * 0.9
    assert torch.allclose(ours, expected)


def test_kmeans_separates_separated_groups():
    torch.manual_seed(0)
    x = torch.cat([torch.randn(1, 20, 3) + 10, torch.randn(1, 20, 3) - 10], 1)
    labels, centroids = kmeans(x, 2, generator=torch.Generator().manual_seed(1))
    assert len(set(labels[0, :20].tolist())) == 1 and len(set(labels[0, 20:].tolist())) == 1
    assert labels[0, 0] != labels[0, 20] and centroids.shape == (1, 2, 3)
    assert math.isfinite(float(centroids.sum()))
