"""Markdown tables (also readable in a terminal) of result rows."""

from __future__ import annotations

import math

# Perceptual figures (cachelab.perceptual): key, format, whether the uncached images have one too.
PERCEPTUAL = (("lpips", "{:.4f}", False), ("clip_score", "{:.2f}", True), ("image_reward", "{:.3f}", True),
              ("fid", "{:.2f}", False), ("fid_clip", "{:.2f}", False))


def results_table(rows: list[dict], *, with_job: bool = False, with_model: bool = False) -> str:
    """One line per row; the models' extra metrics (`result["metric"]`) get a column each, cached and reference."""
    columns = [("job", "job", str)] if with_job else []
    columns += [("model", "model", str)] if with_model else []
    columns += [
        ("policy", "policy", str), ("threshold", "threshold", "{:g}".format),
        ("computed", "computed_steps", lambda v: f"{v:.1f}"), ("of", "steps", str),
        ("work", "computed_work", "{:.0%}".format),
        ("speedup", "speedup", "{:.2f}x".format), ("ideal", "ideal_speedup", "{:.2f}x".format),
        ("PSNR dB", "psnr", "{:.1f}".format), ("SSIM", "ssim", "{:.4f}".format),
    ]
    columns += [("kept MiB", "kept_mib", "{:.2f}".format)] if any(row.get("kept_mib") is not None for row in rows) else []
    for name, fmt in extra_metrics(rows).items():
        columns += [(name, name, fmt.format), (f"reference {name}", f"reference_{name}", fmt.format)]
    for name, fmt, with_reference in PERCEPTUAL:  # python -m cachelab.perceptual's figures, where the rows have them
        if any(row.get(name) is not None for row in rows):
            columns += [(name, name, fmt.format)]
            columns += [(f"reference {name}", f"reference_{name}", fmt.format)] if with_reference else []
    cells = [[title for title, _, _ in columns]]
    rows = [{**row, "policy": f"{row['policy']} (bound)"} if row.get("bound") else row for row in rows]
    cells += [["-" if row.get(key) is None else fmt(row[key]) for _, key, fmt in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def extra_metrics(rows: list[dict]) -> dict[str, str]:
    """The extra metrics the rows carry: name -> format string, in order of first appearance."""
    found = {}
    for row in rows:
        metric = row.get("metric")
        if isinstance(metric, dict) and metric.get("name"):
            found.setdefault(metric["name"], metric.get("format") or "{:.4g}")
    return found


def reference_row(result: dict) -> dict:
    """The uncached reference as a row beside `result`."""
    row = dict(policy="none (reference)", computed_steps=result["steps"], steps=result["steps"], computed_work=1.0, speedup=1.0,
               ideal_speedup=1.0, psnr=math.inf, ssim=1.0, metric=result.get("metric"),
               kept_mib=None if result.get("kept_mib") is None else 0.0)
    name = (result.get("metric") or {}).get("name")
    if name:
        row[name] = result.get(f"reference_{name}")
    return row
