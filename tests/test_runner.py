"""One run in-process on a tiny saved FluxPipeline: result keys, decisions, the reference store."""

import numpy as np
import pytest
from test_runner_fixtures import composed, saved_tiny_flux, tiny_overrides

from cachelab.config import validate
from cachelab.runner import make_calls, reference_key, run_experiment, run_prompts

RESULT_KEYS = {"policy", "model", "threshold", "speedup", "ideal_speedup", "psnr", "ssim", "computed_fraction",
               "computed_fraction_per_branch", "reference_from_store", "reference_peak_memory_mb", "cached_peak_memory_mb",
               "peak_memory_kind"}


@pytest.fixture(scope="module")
def overrides(tmp_path_factory):
    return tiny_overrides(saved_tiny_flux(tmp_path_factory), tmp_path_factory.mktemp("reference_store"))


def run(overrides, *extra):
    return run_experiment(validate(composed([*overrides, *extra])))


def test_fixed_interval_run_measures_what_it_skipped(overrides):
    outcome = run(overrides, "policy=fixed_interval", "policy.interval=2")
    result = outcome.result
    assert RESULT_KEYS <= set(result)
    assert result["threshold"] is None and result["policy_params"] == {"interval": 2, "warmup_steps": 0}
    # steps 0 and 2 by the interval, step 3 as the last one: 3 of 4 computed
    assert result["computed_fraction"] == pytest.approx(0.75) and result["computed_steps"] == pytest.approx(3)
    assert [[r.computed for r in trace] for trace in outcome.traces] == [[True, False, True, True]] * 2
    assert result["speedup"] > 0 and result["ideal_speedup"] > 1 and 0 < result["skip_cost"] < 1
    assert np.isfinite(result["psnr"]) and 0 < result["ssim"] < 1
    assert outcome.reference.shape == outcome.cached.shape == (2, 32, 32, 3)
    assert "metric" not in result and "digit_accuracy" not in result  # the tiny model brings no metric of its own
    assert result["peak_memory_kind"] == "cpu_rss" and result["cached_peak_memory_mb"] > 10
    assert result["torch_threads"] == 1 and result["machine_load"] >= 0 and isinstance(result["timing_noisy"], bool)


def test_the_reference_is_computed_once_and_reused(overrides):
    first = run(overrides, "policy=none", "seed=7")
    second = run(overrides, "policy=first_block", "threshold=0.2", "seed=7")
    assert not first.result["reference_from_store"] and second.result["reference_from_store"]
    np.testing.assert_array_equal(first.reference, second.reference)
    assert second.result["reference_drift"] == 0.0
    # an uncached policy through the executor reproduces the reference exactly
    assert first.result["psnr"] == float("inf") and first.result["computed_fraction"] == 1.0


def test_reference_key_depends_on_what_changes_the_images(overrides):
    def key(*extra):
        run_config = validate(composed([*overrides, *extra]))
        return reference_key(run_config, make_calls(run_config, run_prompts(run_config)), "cpu")

    assert key() == key("policy=teacache", "threshold=0.3")  # the policy does not change the reference
    assert len({key(), key("steps=5"), key("seed=1"), key("prompts=['a cat']"), key("guidance=2.0"),
                key("compile=true")}) == 6


def test_compile_true_runs_compiled_blocks_with_the_decisions_of_eager_mode(overrides):
    eager = run(overrides, "policy=first_block", "threshold=0.2", "seed=3", "model.dtype=float32")
    compiled = run(overrides, "policy=first_block", "threshold=0.2", "seed=3", "model.dtype=float32", "compile=true")
    assert getattr(compiled_pipeline().transformer.transformer_blocks[0].forward, "_cachelab_compiled", False)
    assert [[r.computed for r in t] for t in compiled.traces] == [[r.computed for r in t] for t in eager.traces]
    np.testing.assert_allclose(compiled.cached, eager.cached, atol=1e-4)
    assert not compiled.result["reference_from_store"]  # compiled references are kept apart from eager ones


def compiled_pipeline():
    from cachelab.runner import _loaded

    (pipe,) = _loaded.values()
    return pipe


def test_a_run_reports_the_memory_its_policy_kept_and_a_stack_names_its_levels(overrides):
    from cachelab.tracking.tables import reference_row, results_table

    result = run(overrides, "policy=first_block", "policy.taylor_order=1", "stack=[pab]").result
    assert result["policy"] == "first_block+pab"
    per_unit = result["kept_mib_per_unit"]
    assert per_unit["step"] > 0 and per_unit["module"] > 0
    assert result["kept_mib"] >= max(per_unit.values())
    table = results_table([reference_row(result), result])
    assert "kept MiB" in table.splitlines()[0] and f"{result['kept_mib']:.2f}" in table
