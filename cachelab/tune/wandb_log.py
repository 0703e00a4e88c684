"""The tune's W&B run: the table of validated settings and the winner."""

from __future__ import annotations

from ..tracking.results import finite
from .validation import setting_name

COLUMNS = ("winner", "policy", "setting", "psnr", "ssim", "computed_fraction", "speedup", "meets")


def log_tune(tracker, tune: dict) -> None:
    import wandb

    data = [finite([row["winner"], row["policy"], setting_name(row["setting"]),
                    *(row[key] for key in COLUMNS[3:])]) for row in tune["rows"]]
    tracker.log({"tune": wandb.Table(columns=list(COLUMNS), data=data)})
    winner = next((row for row in tune["rows"] if row["winner"]), None)
    tracker.summary.update(finite(dict(
        seconds=tune["seconds"], winner=winner["policy"] if winner else None,
        winner_setting=setting_name(winner["setting"]) if winner else None,
        winner_speedup=winner["speedup"] if winner else None, winner_psnr=winner["psnr"] if winner else None)))
