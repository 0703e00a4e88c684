"""Quality/speed Pareto plots and tables from finished runs and sweeps.

    python -m cachelab.report multirun/ outputs/ --out pareto.png [--speed ideal_speedup]

Reads every ``result.json`` below the given folders, prints one table of all runs sorted by speed
with the Pareto-optimal ones marked, and plots PSNR against speedup, one line per policy. Bounds (the
oracle, which knows the uncached result) are marked "(bound)", drawn dotted and kept off the front.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .tracking import results_table


def load_results(folders: list[Path]) -> list[dict]:
    """Every finished run's result.json below ``folders`` (failed jobs are left out)."""
    results = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("result.json")):
            result = json.loads(path.read_text())
            if result.get("status", "done") == "done":
                results.append({**result, "job": str(path.parent.relative_to(folder)) or path.parent.name})
    return results


def pareto_front(results: list[dict], speed: str = "speedup", quality: str = "psnr") -> list[dict]:
    """The runs that no other run beats on both speed and quality."""
    def dominated(a, b):
        return b[speed] >= a[speed] and b[quality] >= a[quality] and (b[speed], b[quality]) != (a[speed], a[quality])

    return [a for a in results if not any(dominated(a, b) for b in results)]


def deployable(results: list[dict]) -> list[dict]:
    """The runs of policies that could be deployed (not bounds such as the oracle)."""
    return [r for r in results if not r.get("bound")]


def plot(results: list[dict], path: Path, speed: str = "speedup", quality: str = "psnr") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [r for r in results if math.isfinite(r[quality])]
    figure, axes = plt.subplots(figsize=(6, 4))
    for policy in sorted({r["policy"] for r in finite}):
        runs = sorted((r for r in finite if r["policy"] == policy), key=lambda r: r[speed])
        bound = any(r.get("bound") for r in runs)
        axes.plot([r[speed] for r in runs], [r[quality] for r in runs], "o:" if bound else "o-",
                  label=f"{policy} (bound)" if bound else policy)
    front = sorted(pareto_front(deployable(finite), speed, quality), key=lambda r: r[speed])
    axes.plot([r[speed] for r in front], [r[quality] for r in front], "k--", lw=1, label="Pareto front")
    axes.set_xlabel(speed.replace("_", " "))
    axes.set_ylabel(f"{quality.upper()} vs uncached" + (" (dB)" if quality == "psnr" else ""))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="output or sweep folders holding result.json files")
    parser.add_argument("--out", type=Path, default=Path("pareto.png"), help="the plot (PNG)")
    parser.add_argument("--speed", default="speedup", choices=("speedup", "ideal_speedup"))
    args = parser.parse_args(argv)
    results = load_results(args.folders)
    if not results:
        parser.error(f"no finished result.json below {', '.join(map(str, args.folders))}")
    front = {id(r) for r in pareto_front(deployable(results), args.speed)}
    rows = sorted(results, key=lambda r: r[args.speed])
    for row in rows:
        row["job"] = ("* " if id(row) in front else "  ") + row["job"]
    plot(results, args.out, args.speed)
    print(results_table(rows, with_job=True))
    print(f"\n* on the Pareto front of {args.speed} and PSNR (bounds left out); plot: {args.out}")


if __name__ == "__main__":
    main()
