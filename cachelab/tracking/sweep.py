"""A sweep's folder: job folders named after the swept keys, summary.csv / summary.md, the closing table.

The swept keys reach the job-folder resolver through a file in the sweep folder, written when the sweep
starts; it works for any launcher whose jobs can read the sweep folder (local processes, a cluster's
shared file system).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from .results import RESULT_FILE, finite, read_result, replace_file
from .tables import PERCEPTUAL, extra_metrics, results_table

SWEPT_KEYS_FILE = ".swept_keys"
SUMMARY_COLUMNS = ("job", "status", "policy", "threshold", "policy_params", "computed_steps", "steps", "computed_work", "speedup",
                   "ideal_speedup", "timing_noisy", "psnr", "ssim")


def job_dirname(task_overrides, sweep_dir: str) -> str:
    """A sweep job's folder name: its overrides of the swept keys only (all of them if the sweep folder
    does not say which keys were swept)."""
    keys_file = Path(sweep_dir) / SWEPT_KEYS_FILE
    keys = set(json.loads(keys_file.read_text())) if keys_file.is_file() else None
    chosen = [o for o in task_overrides if keys is None or o.split("=", 1)[0].lstrip("+~") in keys]
    return ",".join(chosen).replace("/", "_") or "job"


OmegaConf.register_new_resolver("cachelab_job_dirname", job_dirname, replace=True)
# hydra.sweep.dir: the folder of the sweep to resume, else a new one
OmegaConf.register_new_resolver("cachelab_sweep_dir", lambda resume, new: new if resume is None else resume, replace=True)


def summary_rows(sweep_dir: Path) -> list[dict]:
    """One row per job folder with a result.json, in job order; psnr of identical images is inf."""
    rows = []
    for path in sorted(sweep_dir.glob(f"*/{RESULT_FILE}"), key=lambda p: _job_number(p.parent.name)):
        result = read_result(path)
        row = {column: result.get(column) for column in SUMMARY_COLUMNS}
        row.update(job=path.parent.name, status=result.get("status", "done"), error=result.get("error"),
                   policy_params=json.dumps(result.get("policy_params")) if result.get("policy_params") else None)
        for name in extra_metrics([result]):
            row.update(metric=result["metric"], **{name: result.get(name), f"reference_{name}": result.get(f"reference_{name}")})
        if result.get("kept_mib") is not None:  # the memory the policy kept (results written before it have none)
            row["kept_mib"] = result["kept_mib"]
        for name, _, with_reference in PERCEPTUAL:
            row.update({key: result[key] for key in (name, f"reference_{name}" if with_reference else name) if key in result})
        rows.append(row)
    return rows


def _job_number(name: str) -> tuple[int, str]:
    number = name.split("_", 1)[0]
    return (int(number) if number.isdigit() else -1, name)


def write_summary(sweep_dir: Path) -> list[dict]:
    """summary.csv and summary.md of every job of the sweep that has written its result.json. The CSV
    leaves non-finite numbers empty (an infinite PSNR: identical images) and has a column per extra metric."""
    rows = summary_rows(sweep_dir)
    cells = [finite(metric_cells(row)) for row in rows]
    metrics = dict.fromkeys(key for row in cells for key in row if key not in (*SUMMARY_COLUMNS, "metric", "error"))
    columns = [*SUMMARY_COLUMNS, *metrics, "error"]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(cells)
    replace_file(sweep_dir / "summary.csv", table.getvalue())
    replace_file(sweep_dir / "summary.md", results_table(rows, with_job=True) + "\n")
    return rows


def metric_cells(row: dict) -> dict:
    """The row with a metric of several numbers (video_accuracy: digit, motion) as one column each (``name.key``)."""
    cells = {}
    for key, value in row.items():
        if key != "metric" and isinstance(value, dict):
            cells.update({f"{key}.{part}": number for part, number in value.items()})
        else:
            cells[key] = value
    return cells


class SweepSummary(Callback):
    """Records the swept keys for the job folders' names; at the end writes and prints the table of every job."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = [o.key_or_group for o in overrides if o.is_sweep_override()]
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        replace_file(sweep_dir / SWEPT_KEYS_FILE, json.dumps(swept + list(config.hydra.sweeper.get("params") or {})))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            print(f"\n{results_table(rows, with_job=True)}\n\nsummary: {sweep_dir / 'summary.csv'}", flush=True)
