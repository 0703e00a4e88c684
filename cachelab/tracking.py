"""Where a job's results go: its output directory, a W&B run, and the summary of its sweep.

A job writes result.json, trace.csv and PNGs as soon as it finishes, and rewrites its sweep's
summary.csv / summary.md, so nothing is lost when a later job fails or the sweep is interrupted.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import netrc
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
PACKAGES = ("cachelab", "torch", "diffusers", "transformers", "numpy", "scikit-image", "hydra-core", "wandb")
TRACE_COLUMNS = ("prompt", "step", "branch", "timestep", "computed", "signal", "seconds")
SUMMARY_COLUMNS = ("job", "status", "policy", "threshold", "policy_params", "computed_steps", "steps", "speedup",
                   "ideal_speedup", "psnr", "ssim", "digit_accuracy", "reference_digit_accuracy", "error")


def provenance() -> dict:
    """Package versions and the git revision of the cachelab checkout (None when installed)."""
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"python": platform.python_version(), "versions": versions, "git": git_revision()}


def git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        def run(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        revision = run("rev-parse", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return revision + ("-dirty" if dirty else "") if revision else None


def save_job(directory: Path, result: dict, outcome=None, save_images: bool = True) -> None:
    """result.json, and with an outcome trace.csv and the PNGs."""
    directory.mkdir(parents=True, exist_ok=True)
    if outcome is not None:
        write_trace(directory / "trace.csv", outcome.traces)
        if save_images:
            save_pngs(directory, outcome.reference, outcome.cached)
    (directory / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def write_trace(path: Path, traces: list[list]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(TRACE_COLUMNS)
        for prompt, trace in enumerate(traces):
            for r in trace:
                writer.writerow([prompt, r.step, r.branch, r.timestep, int(r.computed), r.signal, f"{r.seconds:.6f}"])


def to_uint8(image: np.ndarray) -> np.ndarray:
    """One image (a video's first frame) as uint8 H x W x C."""
    image = image[0] if image.ndim == 4 else image
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def sample_grid(reference: np.ndarray, cached: np.ndarray, border: int = 2) -> np.ndarray:
    """One row per prompt: reference | cached | absolute difference (not rescaled)."""
    rows = []
    for r, c in zip(reference, cached):
        tiles = [to_uint8(r), to_uint8(c), to_uint8(np.abs(c - r))]
        def pad(t):
            return np.pad(t, ((border, border), (border, border), (0, 0)), constant_values=255)
        rows.append(np.concatenate([pad(t) for t in tiles], axis=1))
    return np.concatenate(rows, axis=0)


def save_pngs(directory: Path, reference: np.ndarray, cached: np.ndarray) -> None:
    from PIL import Image

    images = directory / "images"
    images.mkdir(exist_ok=True)
    for i, (r, c) in enumerate(zip(reference, cached)):
        for kind, image in (("reference", r), ("cached", c), ("difference", np.abs(c - r))):
            Image.fromarray(to_uint8(image)).save(images / f"{i:03d}_{kind}.png")
    Image.fromarray(sample_grid(reference, cached)).save(directory / "grid.png")


def wandb_configured() -> bool:
    """Whether the user set W&B up (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextlib.contextmanager
def wandb_run(logger, *, config: dict, name: str, group: str | None, directory: Path, quiet: bool):
    """A W&B run for one job (None with logger=none); offline unless W&B is configured; finished on exit."""
    if logger.name != "wandb":
        yield None
        return
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    mode = logger.mode or os.environ.get("WANDB_MODE") or ("online" if wandb_configured() else "offline")
    def start(mode):
        return wandb.init(
            project=logger.project, entity=logger.entity, group=logger.group or group, name=name, tags=list(logger.tags),
            config=config, dir=str(directory), mode=mode,
            settings=wandb.Settings(silent=quiet, console="off", init_timeout=30),
        )
    try:
        run = start(mode)
    except Exception as error:  # an unreachable or misconfigured server must not cost the job
        if mode != "online":
            raise
        log.warning("W&B online run failed to start (%s); logging offline instead", error)
        run = start("offline")
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()


def log_outcome(run, result: dict, outcome) -> None:
    import wandb

    run.summary.update(scalars(result))
    rows = [[prompt, r.step, r.branch, r.timestep, bool(r.computed), r.signal, r.seconds]
            for prompt, trace in enumerate(outcome.traces) for r in trace]
    run.log({
        "samples": wandb.Image(sample_grid(outcome.reference, outcome.cached), caption="reference | cached | |difference|"),
        "trace": wandb.Table(columns=list(TRACE_COLUMNS), data=rows),
    })


def scalars(result: dict) -> dict:
    """The result's numbers and names, nested dicts flattened with '/', non-finite numbers as None."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in scalars(value).items()})
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[key] = None if isinstance(value, float) and not math.isfinite(value) else value
    return flat


def summary_rows(sweep_dir: Path) -> list[dict]:
    rows = []
    for path in sorted(sweep_dir.glob("*/result.json"), key=lambda p: _job_number(p.parent.name)):
        result = json.loads(path.read_text())
        row = {column: result.get(column) for column in SUMMARY_COLUMNS}
        row.update(job=path.parent.name, status=result.get("status", "done"),
                   policy_params=json.dumps(result.get("policy_params")) if result.get("policy_params") else None)
        rows.append(row)
    return rows


def _job_number(name: str) -> tuple[int, str]:
    number = name.split("_", 1)[0]
    return (int(number) if number.isdigit() else -1, name)


def write_summary(sweep_dir: Path) -> list[dict]:
    """summary.csv and summary.md of every job of the sweep that has written its result.json."""
    rows = summary_rows(sweep_dir)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _replace(sweep_dir / "summary.csv", table.getvalue())
    _replace(sweep_dir / "summary.md", results_table(rows, with_job=True) + "\n")
    return rows


def _replace(path: Path, text: str) -> None:
    """Write through a temporary file, so a reader (or a parallel job) never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)


def results_table(rows: list[dict], *, with_job: bool = False, with_model: bool = False) -> str:
    """A markdown table (also readable in a terminal) of result rows."""
    columns = [("job", "job", str)] if with_job else []
    columns += [("model", "model", str)] if with_model else []
    columns += [
        ("policy", "policy", str), ("threshold", "threshold", "{:g}".format),
        ("computed", "computed_steps", lambda v: f"{v:.1f}"), ("of", "steps", str),
        ("speedup", "speedup", "{:.2f}x".format), ("ideal", "ideal_speedup", "{:.2f}x".format),
        ("PSNR dB", "psnr", "{:.1f}".format), ("SSIM", "ssim", "{:.4f}".format),
        ("digit acc", "digit_accuracy", "{:.0%}".format), ("ref acc", "reference_digit_accuracy", "{:.0%}".format),
    ]
    cells = [[title for title, _, _ in columns]]
    rows = [{**row, "policy": f"{row['policy']} (bound)"} if row.get("bound") else row for row in rows]
    cells += [["-" if row.get(key) is None else fmt(row[key]) for _, key, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


class SweepSummary(Callback):
    """Names sweep jobs after the swept keys; at the end prints the table of every job."""

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        from .config import SWEPT_KEYS_ENV

        overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = [o.key_or_group for o in overrides if o.is_sweep_override()]
        os.environ[SWEPT_KEYS_ENV] = ",".join(swept + list(config.hydra.sweeper.get("params") or {}))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir():
            rows = write_summary(sweep_dir)
            print(f"\n{results_table(rows, with_job=True)}\n\nsummary: {sweep_dir / 'summary.csv'}", flush=True)
