"""experiments/benchmarks/gpu.py --tiny: every row, sane numbers, the replayed and diffusers decisions."""

import importlib.util
import json
import math
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "experiments" / "benchmarks" / "gpu.py"
POLICIES = ("FirstBlockCache", "TeaCache", "MagCache", "TaylorSeer")


def test_tiny_gpu_benchmark_measures_every_row(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gpu_benchmark", SCRIPT)
    gpu = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    gpu.main(["--tiny", "--repeats", "1", "--out", str(tmp_path / "gpu.json")])
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows, steps = result["rows"], result["setting"]["steps"]
    assert set(rows) == {"plain", "NoCache", *POLICIES, "diffusers FirstBlockCache", "cachelab FirstBlockCache"}
    assert all(math.isfinite(row["seconds"]) and row["seconds"] > 0 and row["peak_mib"] is None for row in rows.values())
    assert rows["plain"]["computed"] == rows["NoCache"]["computed"] == steps
    for name in POLICIES:
        row = rows[name]
        assert 0 < row["computed"] < steps
        assert row["ideal_speedup"] > 0 and row["speedup"] > 0  # their sizes are the script's to report: timings are noisy
    for name in ("FirstBlockCache", "TeaCache"):
        assert rows[name]["decisions"] == gpu.SCHEDULES[name]
    ours, theirs = rows["cachelab FirstBlockCache"], rows["diffusers FirstBlockCache"]
    assert ours["decisions"] == theirs["decisions"] and 0 < theirs["computed"] < steps
    assert ours["same_decisions_in_every_pass"] and ours["decisions_agree"]
    assert len(result["goals"]) == 2 + len(POLICIES)
    assert all(math.isfinite(goal["value"]) for goal in result["goals"].values())
    table = (tmp_path / "gpu.md").read_text()
    assert all(f"| {name} |" in table for name in rows) and table in capsys.readouterr().out
