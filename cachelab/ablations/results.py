"""An experiment's committed results: one row per job of a finished sweep, compared and written alike.

`results.json` in the experiment's folder holds the rows (floats at full precision), the overrides the
sweep ran with and the speedup tolerance; `results.png` plots them; the README's block between
``BEGIN``/``END`` holds the markdown table. `python -m cachelab.reproduce` reads and writes them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import yaml

RESULTS_FILE = "results.json"
PLOT_FILE = "results.png"
#: Optional, beside results.json: published numbers drawn in a third panel with the rows,
#: ``{"x": row key, "y": row key, "source": "...", "series": {"name": [[x, y], ...], ...}}``, and
#: ``"compare": [series, ...]`` to draw only those of the rows.
PUBLISHED_FILE = "published.json"
BEGIN = "<!-- results: written by python -m cachelab.reproduce --write; do not edit by hand -->"
END = "<!-- end of results -->"
#: Row values that the same config reproduces exactly on the same CPU, torch build and code.
EXACT = ("decisions", "computed_steps", "psnr", "ssim", "metric_value")
#: Row values that are timings, compared within a relative tolerance.
TIMED = ("speedup",)


def sweep_rows(sweep_dir: Path) -> list[dict]:
    """One row per job of a finished sweep, in job order; a job that did not finish is an error."""
    swept = swept_keys(sweep_dir)
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir() and p.name.split("_", 1)[0].isdigit()),
                  key=lambda p: int(p.name.split("_", 1)[0]))
    if not jobs:
        raise ValueError(f"{sweep_dir} holds no sweep jobs")
    return [job_row(job, swept) for job in jobs]


def sweep_seconds(sweep_dir: Path) -> float:
    """How long a finished sweep ran: from its multirun.yaml to its last result.json."""
    finished = max(p.stat().st_mtime for p in sweep_dir.glob("*/result.json"))
    return finished - (sweep_dir / "multirun.yaml").stat().st_mtime


def swept_keys(sweep_dir: Path) -> list[str]:
    """The keys the sweep varied (its config's hydra.sweeper.params and command-line sweeps), in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    config = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
    keys = list(config["hydra"]["sweeper"].get("params") or {})
    overrides = OverridesParser.create().parse_overrides(config["hydra"]["overrides"]["task"])
    keys += [o.key_or_group for o in overrides if o.is_sweep_override()]
    return [key.lstrip("+~") for key in dict.fromkeys(keys)]


def job_row(job: Path, swept: list[str]) -> dict:
    result_path = job / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"status": "unfinished"}
    if result.get("status") != "done":
        raise ValueError(f"job {job.name} did not finish: {result.get('error', result['status'])}")
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    chosen = dict(o.lstrip("+~").split("=", 1) for o in overrides if o.lstrip("+~").split("=", 1)[0] in swept)
    psnr = result.get("psnr")
    row = dict(
        job=job.name, label=label(chosen), series=series(chosen) or result["policy"],
        policy=result["policy"], bound=bool(result.get("bound")), threshold=result.get("threshold"),
        computed_steps=result["computed_steps"], steps=result["steps"], speedup=result["speedup"],
        ideal_speedup=result["ideal_speedup"], psnr=None if psnr is None or math.isinf(psnr) else psnr,
        ssim=result["ssim"], decisions=decisions_digest(job / "trace.csv"),
    )
    metric = (result.get("metric") or {}).get("name")
    if metric:
        row.update(metric=metric, metric_format=result["metric"].get("format") or "{:.4g}", metric_value=result.get(metric),
                   reference_metric_value=result.get(f"reference_{metric}"))
    return row


def label(chosen: dict[str, str]) -> str:
    """The job's swept values, a variant by its own name: ``first_block_0.1``, ``cfg_decisions=shared,threshold=0.2``."""
    return ",".join(v.rsplit("/", 1)[-1] if k == "variant" else f"{k}={v}" for k, v in chosen.items())


def series(chosen: dict[str, str]) -> str:
    """The line a job belongs to in the plot: its swept values but the last ("" for one swept key); a
    variant named ``<series>_<point>`` (e.g. ``raw_input_9``) gives its series."""
    if "variant" in chosen:
        return re.sub(r"_[0-9.]+$", "", chosen["variant"].rsplit("/", 1)[-1])
    return ",".join(f"{k}={v}" for k, v in list(chosen.items())[:-1])


def decisions_digest(trace_csv: Path) -> str:
    """A hash of every call's computed flag, per prompt and branch, in trace order."""
    flags: dict[tuple[str, str], list[str]] = {}
    with trace_csv.open(newline="") as file:
        for record in csv.DictReader(file):
            flags.setdefault((record["prompt"], record["branch"]), []).append(record["computed"])
    text = ";".join(f"{prompt}:{branch}:{''.join(bits)}" for (prompt, branch), bits in flags.items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(committed: list[dict], fresh: list[dict], tolerance: float) -> list[str]:
    """One line per differing job: exact values unequal, or a speedup off by more than ``tolerance`` (relative)."""
    lines = []
    fresh_by_job = {row["job"]: row for row in fresh}
    for row in committed:
        other = fresh_by_job.pop(row["job"], None)
        if other is None:
            lines.append(f"{row['job']}: missing from the new run")
            continue
        found = [f"{key} {row.get(key)!r} -> {other.get(key)!r}" for key in EXACT
                 if row.get(key) != other.get(key)]
        found += [f"{key} {row[key]:.3f} -> {other[key]:.3f} (more than {tolerance:.0%} apart)" for key in TIMED
                  if abs(other[key] / row[key] - 1) > tolerance]
        if found:
            lines.append(f"{row['job']}: " + "; ".join(found))
    lines += [f"{job}: not in the committed table" for job in fresh_by_job]
    return lines


def read_results(folder: Path) -> dict:
    path = folder / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write it with python -m cachelab.reproduce --write {folder}")
    return json.loads(path.read_text())


def write_results(folder: Path, results: dict) -> None:
    """results.json, results.png and the README's results block."""
    (folder / RESULTS_FILE).write_text(json.dumps(results, indent=1, allow_nan=False) + "\n")
    published = folder / PUBLISHED_FILE
    published = json.loads(published.read_text()) if published.is_file() else None
    plot(results["rows"], folder / PLOT_FILE, results["experiment"], published)
    readme = folder / "README.md"
    block = f"{BEGIN}\n{markdown(results)}\n{END}"
    text = readme.read_text() if readme.is_file() else f"# {results['experiment']}\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = f"{text.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    readme.write_text(head + block + rest.split(END, 1)[1])


def markdown(results: dict) -> str:
    """The table of the rows and a line saying how they were made."""
    rows = results["rows"]
    metric = next((row["metric"] for row in rows if row.get("metric")), None)
    header = ["job", "policy", "threshold", "computed steps", "speedup", "ideal", "PSNR dB", "SSIM"]
    header += [metric.replace("_", " ")] if metric else []
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        cells = [row["label"] or row["job"], row["policy"] + (" (bound)" if row["bound"] else ""),
                 "-" if row["threshold"] is None else f"{row['threshold']:.4g}",
                 f"{row['computed_steps']:.2f} of {row['steps']}", f"{row['speedup']:.2f}x", f"{row['ideal_speedup']:.2f}x",
                 "inf" if row["psnr"] is None else f"{row['psnr']:.2f}", f"{row['ssim']:.4f}"]
        if metric:
            cells.append("-" if row.get("metric_value") is None else row["metric_format"].format(row["metric_value"]))
        lines.append("| " + " | ".join(cells) + " |")
    overrides = " ".join(results["overrides"])
    command = f"python -m cachelab experiment={results['experiment']}" + (f" {overrides}" if overrides else "")
    lines += ["", f"`{command}`: {len(rows)} jobs in {results['sweep_seconds']:.0f} s on {results['machine']} "
              f"({results['date']}). `python -m cachelab.reproduce` expects the decisions, computed steps, PSNR and "
              f"SSIM exactly and speedups within {results['speedup_tolerance']:.0%}.", "", f"![results]({PLOT_FILE})"]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str, published: dict | None = None) -> None:
    """PSNR and speedup against computed steps, one line per series; the published numbers beside, if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3 if published else 2, figsize=(15 if published else 10, 4))
    quality, speed = axes[:2]
    for name in dict.fromkeys(row["series"] for row in rows):
        points = sorted(((row["computed_steps"], row["psnr"], row["speedup"]) for row in rows if row["series"] == name),
                        key=lambda point: point[0])
        steps = [p[0] for p in points]
        finite = [(s, p[1]) for s, p in zip(steps, points) if p[1] is not None]  # identical images: no PSNR
        quality.plot([s for s, _ in finite], [p for _, p in finite], marker="o", label=name)
        speed.plot(steps, [p[2] for p in points], marker="o", label=name)
    quality.set(xlabel="computed steps per generation", ylabel="PSNR against uncached (dB)", title=title)
    speed.set(xlabel="computed steps per generation", ylabel="wall-time speedup", title="speed")
    if published:
        draw_published(axes[2], rows, published)
    for panel in axes:
        panel.grid(alpha=0.3)
    quality.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def draw_published(panel, rows: list[dict], published: dict) -> None:
    x, y = published["x"], published["y"]
    for name, points in published["series"].items():
        panel.plot(*zip(*points), linestyle="--", marker="s", label=f"{name} (published)")
    for name in published.get("compare") or dict.fromkeys(row["series"] for row in rows):
        points = sorted((row[x], row[y]) for row in rows if row["series"] == name and row[x] is not None)
        panel.plot(*zip(*points), marker="o", linewidth=2.5, label=f"{name} (this run)")
    panel.set(xlabel=x, ylabel=y, title=f"published: {published['source']}")
    panel.legend(fontsize=7)
