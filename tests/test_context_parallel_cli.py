"""`torchrun --nproc_per_node 2 -m cachelab parallel.ulysses_degree=2 ...`: one result, written by rank 0,
with the decisions and PSNR of the one-process run; config errors end every rank with one line."""

import json
from pathlib import Path

import pytest
from ranks import torchrun
from test_runner_fixtures import run_cli

FAST = ["policy=first_block", "threshold=0.2", "num_prompts=2", "timing.prompts=1", "timing.repeats=1", "timing.warmup=0",
        "logger=none", "quiet=true"]


def only_result(folder):
    results = list(folder.rglob("result.json"))
    assert len(results) == 1, results
    return json.loads(results[0].read_text()), results[0].parent


def test_two_ranks_write_one_result_equal_to_one_process(tmp_path):
    common = [*FAST, f"cache_dir={tmp_path / 'cache'}"]
    parallel = torchrun(["-m", "cachelab", "parallel.ulysses_degree=2", *common, f"hydra.run.dir={tmp_path / 'cp'}"], cwd=tmp_path)
    assert parallel.returncode == 0, parallel.stderr[-3000:]
    alone = run_cli([*common, f"hydra.run.dir={tmp_path / 'one'}"], cwd=tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]

    (cp, cp_dir), (one, one_dir) = only_result(tmp_path / "cp"), only_result(tmp_path / "one")
    assert cp["config"]["parallel"] == {"ulysses_degree": 2, "ring_degree": 1}
    assert (cp_dir / "trace.csv").read_text().count("\n") == (one_dir / "trace.csv").read_text().count("\n")
    assert [row.split(",")[:4] for row in (cp_dir / "trace.csv").read_text().splitlines()] == \
        [row.split(",")[:4] for row in (one_dir / "trace.csv").read_text().splitlines()]
    assert cp["computed_steps"] == one["computed_steps"] and cp["computed_steps"] < 28
    assert cp["psnr"] == pytest.approx(one["psnr"], abs=0.05)
    assert parallel.stdout.count("| first_block") == 1  # the table, from rank 0 only


@pytest.mark.parametrize("args, nproc, message", [
    (["parallel.ulysses_degree=2"], 1, "needs that many processes: torchrun --nproc_per_node 2"),
    (["parallel.ulysses_degree=4"], 2, "must equal the 2 processes launched"),
    (["parallel.ulysses_degree=1", "parallel.ring_degree=2"], 2, "on the CPU use parallel.ulysses_degree"),
    (["parallel.ulysses_degree=two"], 1, "parallel.ulysses_degree"),
])
def test_a_parallel_config_error_is_one_line_and_exit_2_on_every_rank(tmp_path, args, nproc, message):
    if nproc == 1:
        done = run_cli([*args, *FAST], cwd=tmp_path)
    else:
        done = torchrun(["-m", "cachelab", *args, *FAST], cwd=tmp_path, nproc=nproc, timeout=120)
        assert "exitcode  : 2" in done.stderr  # torchrun's report: every rank ended with 2
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("cachelab: error:")]
    assert len(errors) == 1 and message in errors[0], done.stderr[-2000:]
    assert "cachelab/" not in done.stderr  # no rank's traceback (torchrun prints its own report)
    assert not list(tmp_path.rglob("result.json"))


def test_heads_the_ulysses_degree_does_not_divide_are_named():
    from cachelab import zoo
    from cachelab.launch import ParallelConfig, model_problems

    transformer = zoo.load_pipeline().transformer
    heads = transformer.config.num_attention_heads
    assert model_problems(transformer, ParallelConfig(ulysses_degree=heads)) == []
    assert model_problems(transformer, ParallelConfig(ulysses_degree=3)) == [
        f"parallel.ulysses_degree=3 must divide the model's {heads} attention heads"]


def test_the_context_parallel_benchmark_reports_scalar_sized_synchronisation(tmp_path):
    script = Path(__file__).parents[1] / "experiments" / "benchmarks" / "context_parallel.py"
    done = torchrun([str(script), "--tiny", "--repeats", "1", "--out", str(tmp_path / "cp.json")], cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads((tmp_path / "cp.json").read_text())
    assert figures["ranks"] == 2 and set(figures["rows"]) == {"first_block 0.2", "teacache 0.2"}
    for row in figures["rows"].values():
        assert 0 < row["computed"] < row["calls"]
        assert 1 <= row["messages_per_call"] <= 2 and row["message_bytes"] <= 128  # a few scalars, no activations
        assert row["speedup_parallel"] > 0 and row["speedup_one_process"] > 0 and row["sync_ms_per_call"] > 0
    assert "| first_block 0.2 |" in done.stdout
