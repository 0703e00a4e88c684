"""The tune's outputs: the table (sorted by speedup, winner marked), a config per policy with the command
that runs it, and tune.json."""

from __future__ import annotations

import shlex
from pathlib import Path

from omegaconf import OmegaConf

from ..tracking.results import replace_file, to_json
from .validation import setting_name


def rows(records: list[dict]) -> list[dict]:
    """One row per setting checked on the validation set, fastest first (those that missed and were
    not timed last); `winner` on the fastest that meets the target."""
    found = [{"policy": record["policy"] + (" (bound)" if record["bound"] else ""), **row}
             for record in records for row in record["validated"]]
    found.sort(key=lambda row: -(row.get("speedup") or 0))
    winner = next((row for row in found if row["meets"] and "(bound)" not in row["policy"]), None)
    for row in found:
        row["winner"] = row is winner
    return found


def table(found: list[dict], metric_name: str | None, metric_format: str) -> str:
    columns = [("", lambda r: "*" if r["winner"] else ""), ("policy", lambda r: r["policy"]),
               ("setting", lambda r: setting_name(r["setting"])), ("PSNR dB", lambda r: f"{r['psnr']:.2f}"),
               ("SSIM", lambda r: f"{r['ssim']:.4f}")]
    if metric_name:
        columns.append((metric_name, lambda r: "-" if r.get(metric_name) is None else metric_format.format(r[metric_name])))
    columns += [("computed", lambda r: f"{r['computed_fraction']:.0%}"),
                ("speedup", lambda r: "-" if r["speedup"] is None else f"{r['speedup']:.2f}x" + ("~" if r["timing_noisy"] else "")),
                ("ideal", lambda r: "-" if r["ideal_speedup"] is None else f"{r['ideal_speedup']:.2f}x"),
                ("target", lambda r: "meets" if r["meets"] else "MISSES")]
    cells = [[title for title, _ in columns]] + [[cell(row) for _, cell in columns] for row in found]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(text.ljust(width) for text, width in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    if any(row["timing_noisy"] for row in found):
        lines.append("~ timed while something else used the machine (timing_noisy): the speedup is unreliable")
    return "\n".join(lines)


def write_config(directory: Path, record: dict, config: dict, origin: str) -> str:
    """configs/<policy>.yaml: the validated run as a primary config over cachelab's own; returns the command."""
    row = record["validated"][record["use"]]
    name = record["policy"]
    directory.mkdir(parents=True, exist_ok=True)
    command = f"python -m cachelab config={shlex.quote(str((directory / f'{name}.yaml').resolve()))}"
    verdict = "meets" if row["meets"] else "MISSES"
    header = [
        f"# {name} {setting_name(row['setting'])}, tuned by: {origin}",
        f"# validated on this config's prompts and seeds: {row['psnr']:.2f} dB, SSIM {row['ssim']:.4f}, "
        f"{row['computed_fraction']:.0%} computed, {row['speedup']:.2f}x ({verdict} the target)",
        f"# run it: {command}",
        "defaults:",
        "  - config",
        f"  - override model: {config['model']['name']}",
        f"  - override policy: {name}",
        "  - _self_",
    ]
    body = OmegaConf.to_yaml(OmegaConf.create(config))
    replace_file(directory / f"{name}.yaml", "\n".join(header) + "\n" + body)
    return command


def write_tune_json(path: Path, tune: dict) -> None:
    replace_file(path, to_json(tune) + "\n")



def with_table(tune: dict) -> dict:
    """The tune with its rows and table made from its policies' records."""
    metric = tune.get("metric") or {}
    found = rows(tune["policies"])
    return {**tune, "rows": found, "table": table(found, metric.get("name"), metric.get("format") or "{:.4g}")}


def closing(tune: dict) -> str:
    """What a tune prints at the end: the table, then the command of each policy's setting."""
    lines = [tune["table"], "* the winner: the fastest setting that meets the target on the validation set", ""]
    for record in tune["policies"]:
        if record.get("skipped"):
            lines.append(f"{record['policy']}: skipped, it {record['skipped']}")
        elif record.get("command") is None:
            lines.append(f"{record['policy']}: no setting met the target on the tuning set")
        else:
            missed = "" if record["validated"][record["use"]]["meets"] else " (misses the target; the safest setting tried)"
            lines.append(f"{record['policy']}{missed}: {record['command']}")
    trials = tune["tuning"]["trials_run"]
    skipped = sum(bool(record.get("skipped")) for record in tune["policies"])
    left_out = f", {skipped} left out" if skipped else ""
    lines.append(f"\n{len(tune['policies']) - skipped} policies tuned{left_out} in {tune['seconds']:.0f} s ({trials} trials run)")
    return "\n".join(lines)
