"""The notebooks execute top to bottom on the embedded model, and what they print agrees with runs made here."""

import json
import re
from functools import cache
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

import cachelab
from cachelab import metrics, zoo

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("quickstart", "block_dynamics", "frontier")
CELL_TIMEOUT = 300  # seconds; a whole notebook takes 10-40 s on 2 shared CPU cores


@cache
def executed(name: str):
    """The notebook, executed from notebooks/ as Jupyter runs it; a cell that raises fails here (CellExecutionError)."""
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = NotebookClient(notebook, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return notebook


def printed(notebook, tag: str) -> str:
    """What the one cell tagged ``tag`` printed."""
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return "".join(output.text for output in cells[0].outputs if output.output_type == "stream" and output.name == "stdout")


def prompts_and_seed(notebook) -> tuple[list[int], int]:
    text = printed(notebook, "prompts")
    return [int(d) for d in re.findall(r"digit (\d)", text)], int(re.search(r"seed (\d+)", text).group(1))


def trace_of(pipe, digits, seed, policy):
    executor = cachelab.attach(pipe, policy)
    try:
        images = pipe(zoo.prompts_for(digits), generator=torch.Generator().manual_seed(seed), output_type="np").images
    finally:
        cachelab.detach(pipe)
    return images, executor.trace


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_holds_its_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code), "commit the notebook executed (notebooks/README.md)"
    assert any("image/png" in output.get("data", {}) for cell in code for output in cell.outputs)
    assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_every_cell(name):
    code = [cell for cell in executed(name).cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count is not None for cell in code)
    assert not [output for cell in code for output in cell.outputs if output.output_type == "error"]


def test_quickstart_counts_and_scores_as_an_independent_run(digits):
    notebook = executed("quickstart")
    prompts, seed = prompts_and_seed(notebook)
    computed = int(re.search(r"computed (\d+) of 28 transformer calls", printed(notebook, "computed-steps")).group(1))
    psnr = float(re.search(r"PSNR ([\d.]+) dB", printed(notebook, "quality")).group(1))

    reference, _ = trace_of(digits, prompts, seed, cachelab.NoCache())
    cached, trace = trace_of(digits, prompts, seed, cachelab.FirstBlockCache(threshold=0.2))
    assert computed == sum(record.computed for record in trace) < 28
    assert psnr == pytest.approx(metrics.psnr(reference, cached), abs=0.006)  # printed with 2 decimals


def test_block_dynamics_hooks_measure_what_the_policies_compare(digits):
    """The notebook's hook-recorded step-to-step changes are the signals cachelab's executor computes: First Block
    Cache at threshold 0 (it computes every step, comparing with the previous one) and TeaCache with the identity
    polynomial at threshold 0 (likewise, for the modulated input; its last step computes without a signal)."""
    notebook = executed("block_dynamics")
    prompts, seed = prompts_and_seed(notebook)
    rows = [line.split() for line in printed(notebook, "changes").splitlines()[1:]]
    steps = [int(row[0]) for row in rows]
    first_block, modulated = [float(row[1]) for row in rows], [float(row[2]) for row in rows]
    assert steps == list(range(1, 28))

    _, fbc_trace = trace_of(digits, prompts, seed, cachelab.FirstBlockCache(threshold=0.0))
    _, teacache_trace = trace_of(digits, prompts, seed, cachelab.TeaCache(threshold=0.0, coefficients=[1.0, 0.0]))
    assert all(record.computed for record in fbc_trace + teacache_trace)
    assert first_block == pytest.approx([record.signal for record in fbc_trace[1:]], abs=6e-5)  # printed with 4 decimals
    assert modulated[:-1] == pytest.approx([record.signal for record in teacache_trace[1:-1]], abs=6e-5)

    skipped = re.search(r"FBC 0.2: .* skips steps (\[[\d, ]*\])", printed(notebook, "fbc")).group(1)
    _, trace = trace_of(digits, prompts, seed, cachelab.FirstBlockCache(threshold=0.2))
    assert json.loads(skipped) == [record.step for record in trace if not record.computed]


def test_frontier_recomputes_the_recorded_verdict():
    """The notebook's own search for the fastest deployable cachelab row at >= 35 dB finds the row that
    experiments/frontier/frontier.py recorded for that target."""
    results = json.loads((ROOT / "experiments" / "frontier" / "results.json").read_text())
    row = next(target for target in results["targets"] if target["target"] == "a")["fastest"]
    expected = f"{row['curve']} {row['setting']}: {row['speedup']:.2f}x, {row['psnr']:.1f} dB"
    first_line = printed(executed("frontier"), "fastest-at-35").splitlines()[0]
    assert first_line == f"fastest deployable cachelab row at >= 35 dB: {expected}"


@pytest.mark.parametrize("tag, folder", [("per-block", "."), ("shapes", "shapes")])
def test_frontier_recomputes_the_per_block_verdicts(tag, folder):
    """Per-block against step-level learned at equal block work: for each budget the notebook's own interpolation
    gives the block work, PSNRs and verdict that experiments/frontier/frontier.py recorded (its target e)."""
    results = json.loads((ROOT / "experiments" / "frontier" / folder / "results.json").read_text())
    recorded = [target for target in results["targets"] if target["target"] == "e"]
    pattern = (r"budget (\d+): block work ([\d.]+), learned ([\d.]+) dB, learned per block (?:([\d.]+) dB \([^)]*\)|-): "
               r"(PASS|MISS) \(recorded: (PASS|MISS)\)")
    found = re.findall(pattern, printed(executed("frontier"), tag))
    assert len(found) == len(recorded) == 3
    for (budget, work, step, block, verdict, shown), target in zip(found, recorded):
        assert target["where"].endswith(f"budget {budget}")
        assert float(work) == pytest.approx(target["block_work_steps"], abs=0.006)  # printed with 2 decimals
        assert float(step) == pytest.approx(target["step_level"], abs=0.06)
        if target["per_block"] is None:
            assert block == ""
        else:
            assert float(block) == pytest.approx(target["per_block"], abs=0.06)
        assert verdict == shown == target["verdict"]
