"""Context parallelism: 2 ranks over gloo (Ulysses degree 2) decide and generate as one process does.

The ranks run in one torchrun subprocess (tests/cp_worker.py, every scenario of tests/cp_scenarios.py);
a regression that makes them wait for each other fails on the subprocess timeout instead of blocking CI.
"""

import math
from pathlib import Path

import cp_scenarios
import pytest
import torch
from ranks import torchrun

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("cp")
    done = torchrun([str(HERE / "cp_worker.py"), str(out)], cwd=HERE)
    assert done.returncode == 0, done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def digits():
    return cp_scenarios.digits_pipeline()


def assert_like_one_process(ranks, name, alone):
    for rank in ranks:
        assert rank[name]["error"] is None, rank[name]["error"]
        assert rank[name]["decisions"] == alone["decisions"]
        assert torch.allclose(rank[name]["images"], alone["images"], atol=1e-5, rtol=0), \
            float((rank[name]["images"] - alone["images"]).abs().max())


@pytest.mark.parametrize("name", sorted(cp_scenarios.DIGITS_POLICIES))
def test_every_builtin_policy_decides_and_generates_as_one_process(ranks, digits, name):
    alone = cp_scenarios.run(digits, cp_scenarios.DIGITS_POLICIES[name]())
    assert_like_one_process(ranks, name, alone)
    if name != "no_cache":
        assert not all(computed for _, _, computed in alone["decisions"])  # the policy really skips here
    signals = [[s for s in rank[name]["signals"]] for rank in ranks]
    assert signals[0] == signals[1]  # reduced, bit for bit the same on both ranks
    for on_ranks, one in zip(signals[0], alone["signals"]):
        assert (on_ranks is None) == (one is None)
        assert one is None or on_ranks == pytest.approx(one, rel=1e-5)


@pytest.mark.parametrize("name", sorted(cp_scenarios.WAN_POLICIES))
def test_wan_splitting_inside_block_zero_runs_cfg_branches_as_one_process(ranks, wan, name):
    alone = cp_scenarios.run(wan, cp_scenarios.WAN_POLICIES[name](), wan=True)
    assert {branch for branch, _, _ in alone["decisions"]} == {"cond", "uncond"}
    assert not all(computed for _, _, computed in alone["decisions"])
    assert_like_one_process(ranks, f"wan_{name}", alone)


def test_a_threshold_between_the_ranks_own_signals_decides_as_one_process(ranks, digits):
    tie = ranks[0]["near_tie"]
    low, high = tie["local_changes"]
    assert low < tie["threshold"] < high  # unreduced, one rank would compute step 1 and the other skip it: a hang
    alone = cp_scenarios.run(digits, cp_scenarios.FirstBlockCache(threshold=tie["threshold"]))
    assert_like_one_process(ranks, "near_tie", alone)


def test_a_policy_reading_its_own_shard_cannot_hang_the_run(ranks):
    first, second = (rank["raw_local"] for rank in ranks)
    assert first["error"] is None and second["error"] is None
    assert first["decisions"] == second["decisions"]
    assert first["disagreements"] >= 1  # the ranks answered differently, and all computed
    assert torch.equal(first["images"], second["images"])


def test_a_policy_error_on_one_rank_ends_every_rank_with_it(ranks):
    for rank in ranks:
        assert "boom on one rank" in rank["raises_on_one_rank"]["error"]


@pytest.mark.parametrize("name", sorted(cp_scenarios.TOKEN_POLICIES))
def test_token_policies_choose_within_each_shard_and_the_ranks_agree(ranks, digits, name):
    """Each rank chooses the same number of its own tokens; the ranks' decisions per module agree, so they run in
    step and return the same images, close to one process's (which chooses among all tokens at once)."""
    first, second = (rank[f"tokens_{name}"] for rank in ranks)
    assert first["error"] is None and second["error"] is None, first["error"] or second["error"]
    assert first["decisions"] == second["decisions"] and torch.equal(first["images"], second["images"])
    alone = cp_scenarios.run(digits, cp_scenarios.TOKEN_POLICIES[name]())
    assert first["decisions"] == alone["decisions"]
    mse = float(((first["images"] - alone["images"]) ** 2).mean())
    assert mse == 0 or 10 * math.log10(1 / mse) > 30


def test_a_stand_in_that_fits_the_whole_sequence_is_refused_on_shards(ranks):
    for rank in ranks:
        assert "spatial bonus (s4) needs the whole token grid" in rank["toca_spatial_refused"]["error"]
        assert "the dmd stand-in fits the whole sequence" in rank["dmd_refused"]["error"]


def test_ranks_whose_policies_take_different_paths_fail_together(ranks):
    for rank in ranks:
        assert rank["diverging_paths"]["error"].startswith("RanksDiverged")


def test_a_decision_costs_one_scalar_message_per_reduction(ranks):
    first_block = ranks[0]["first_block"]
    calls = len(first_block["decisions"])
    assert first_block["messages"] == 2 * calls - 1  # one agreement per call, one relative L1 from the second on
    assert ranks[0]["fixed_interval"]["messages"] == calls


def test_attach_before_enable_parallelism_then_detach_restores_the_model(ranks, digits):
    alone = cp_scenarios.run(digits, cp_scenarios.DIGITS_POLICIES["first_block"]())
    uncached = cp_scenarios.run(digits, None)
    for rank in ranks:
        assert rank["attach_first"]["decisions"] == alone["decisions"]
        for name in ("attach_first_detached", "uncached_after_detach"):
            assert rank[name]["images"].shape == uncached["images"].shape
            assert torch.allclose(rank[name]["images"], uncached["images"], atol=1e-5, rtol=0)


def test_calibration_under_context_parallelism_measures_what_one_process_measures(ranks, digits):
    alone = cp_scenarios.calibration(digits)
    for rank in ranks:
        numbers = rank["calibration"]
        assert numbers["magcache"] == pytest.approx(alone["magcache"], rel=1e-5)
        assert numbers["teacache"] == pytest.approx(alone["teacache"], rel=1e-3, abs=1e-4)
        for budget, plan in alone["learned"].items():
            assert numbers["learned"][budget]["computed"] == plan["computed"]
            for step, weights in plan["weights"].items():
                assert numbers["learned"][budget]["weights"][step] == pytest.approx(weights, rel=1e-4, abs=1e-6)
