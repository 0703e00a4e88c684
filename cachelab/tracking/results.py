"""A job's files: result.json (strict JSON, written last and atomically), trace.csv and the PNGs.

JSON has no infinity: a PSNR of identical images (infinite) is stored as ``null`` and read back as
``inf`` by `read_result`; any other non-finite number is stored as ``null`` too.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from .images import save_pngs

#: unit: the policy's unit; work: the call's computed share of block work; skipped_units: the blocks or modules
#: (by cost key, e.g. block3.attn) a block- or module-unit policy stood in for in that call.
TRACE_COLUMNS = ("prompt", "step", "branch", "timestep", "computed", "signal", "seconds", "unit", "work", "skipped_units")
RESULT_FILE = "result.json"


def save_job(directory: Path, result: dict, outcome=None, save_images: bool = True) -> None:
    """trace.csv and the PNGs of an outcome, then result.json: a folder with a result.json is finished."""
    directory.mkdir(parents=True, exist_ok=True)
    if outcome is not None:
        write_trace(directory / "trace.csv", outcome.traces)
        if save_images:
            save_pngs(directory, outcome.reference, outcome.cached)
    replace_file(directory / RESULT_FILE, to_json(result) + "\n")


def to_json(value) -> str:
    """Strict JSON (non-finite numbers as null)."""
    return json.dumps(finite(value), indent=2, default=str, allow_nan=False)


def finite(value):
    """`value` with every non-finite float, in dicts and lists too, replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def read_result(path: Path) -> dict:
    """A result.json, with the null PSNR of a finished run's identical images back as inf."""
    result = json.loads(Path(path).read_text())
    if result.get("status", "done") == "done":
        if "psnr" in result and result["psnr"] is None:
            result["psnr"] = math.inf
        if result.get("psnr_per_prompt"):
            result["psnr_per_prompt"] = [math.inf if p is None else p for p in result["psnr_per_prompt"]]
    return result


def finished_config(directory: Path) -> dict | None:
    """The config of the finished result in `directory` (None when there is none, or it failed)."""
    path = directory / RESULT_FILE
    try:
        result = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return None
    return result.get("config") if result.get("status") == "done" else None


def differing_keys(config: dict, other: dict) -> list[str]:
    """The dotted keys whose values differ between two configs (strict-JSON values compared)."""
    config, other = finite(config), finite(other)
    keys = []
    for key in sorted(set(config) | set(other)):
        mine, theirs = config.get(key), other.get(key)
        if isinstance(mine, dict) and isinstance(theirs, dict):
            keys += [f"{key}.{inner}" for inner in differing_keys(mine, theirs)]
        elif mine != theirs:
            keys.append(key)
    return keys


def trace_rows(traces: list[list]) -> list[list]:
    """One row of ``TRACE_COLUMNS`` per transformer call of every prompt's generation."""
    return [[prompt, r.step, r.branch, r.timestep, int(r.computed), r.signal, round(r.seconds, 6), r.unit, round(r.work, 4),
             " ".join(r.skipped_units)] for prompt, trace in enumerate(traces) for r in trace]


def write_trace(path: Path, traces: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(TRACE_COLUMNS)
        writer.writerows(trace_rows(traces))


def replace_file(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader (or a parallel job) never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)
