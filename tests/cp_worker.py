"""One rank of a context-parallel test run (started by tests/test_context_parallel.py through torchrun).

Runs the scenarios of ``scenarios.CASES`` on the digits model (and one on the tiny Wan) under Ulysses
degree 2 over gloo, and writes this rank's decisions, signals, errors and images to ``<out>/rank<N>.pt``.
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

# diffusers computes rank % torch.accelerator.device_count(), which divides by zero without an accelerator.
torch.accelerator.device_count = lambda: 1
torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))

import cp_scenarios  # noqa: E402
from diffusers import ContextParallelConfig  # noqa: E402

import cachelab  # noqa: E402


def parallel(pipe, *, before=None):
    """Enable Ulysses degree 2 on the pipeline's transformer, running ``before(pipe)`` first if given."""
    if before is not None:
        before(pipe)
    pipe.transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=2))
    return pipe


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {}
    digits = cp_scenarios.digits_pipeline()
    parallel(digits)
    for name, make in cp_scenarios.DIGITS_POLICIES.items():
        results[name] = cp_scenarios.run(digits, make())
    for name, make in cp_scenarios.TOKEN_POLICIES.items():
        results[f"tokens_{name}"] = cp_scenarios.run(digits, make())
    results["near_tie"] = near_tie(digits)
    results["raw_local"] = cp_scenarios.run(digits, cp_scenarios.RawLocalPolicy(results["near_tie"]["local_means"]))
    results["raises_on_one_rank"] = cp_scenarios.run(digits, cp_scenarios.RaisesOnRank(rank_to_fail=1))
    results["toca_spatial_refused"] = cp_scenarios.run(digits, cachelab.make_policy("toca"))
    results["dmd_refused"] = cp_scenarios.run(digits, cp_scenarios.FirstBlockCache(threshold=0.2, forecaster="dmd"))
    results["diverging_paths"] = cp_scenarios.run(digits, cp_scenarios.ReducesOnRank(rank_to_reduce=0))
    results["uncached_after_detach"] = cp_scenarios.run(digits, None)
    results["calibration"] = cp_scenarios.calibration(digits)

    order = cp_scenarios.digits_pipeline()  # attach first, then enable parallelism, then detach
    executor = cachelab.attach(order, cp_scenarios.DIGITS_POLICIES["first_block"]())
    parallel(order)
    results["attach_first"] = cp_scenarios.run(order, None, executor=executor)
    cachelab.detach(order)
    results["attach_first_detached"] = cp_scenarios.run(order, None)

    wan = parallel(cp_scenarios.wan_pipeline())
    for name, make in cp_scenarios.WAN_POLICIES.items():
        results[f"wan_{name}"] = cp_scenarios.run(wan, make(), wan=True)
    torch.save(results, out / f"rank{rank}.pt")
    dist.destroy_process_group()


def near_tie(pipe) -> dict:
    """First Block Cache with a threshold between the two ranks' own-shard signals at step 1."""
    probe = cp_scenarios.LocalSignalProbe()
    cp_scenarios.run(pipe, probe)
    local = torch.tensor([probe.seen["change"], probe.seen["mean"]])
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, local)
    changes = sorted(float(g[0]) for g in gathered)
    threshold = (changes[0] + changes[1]) / 2
    result = cp_scenarios.run(pipe, cachelab.policies.FirstBlockCache(threshold=threshold))
    return dict(result, threshold=threshold, local_changes=changes, local_means=[float(g[1]) for g in gathered])


if __name__ == "__main__":
    main(Path(sys.argv[1]))
