"""Quality/speed Pareto plots and tables from finished runs and sweeps.

    python -m cachelab.report multirun/ outputs/ --out pareto.png [--speed ideal_speedup]

Reads every ``result.json`` below the given folders and groups the runs by setting: model, resolution,
steps, prompts and seed (only runs of one setting are comparable). For each setting it prints a table
sorted by speed with the runs on that setting's Pareto front marked, and draws a panel of PSNR against
speedup, one line per policy. Bounds (the oracle, which knows the uncached result) are marked "(bound)",
drawn dotted and kept off the front.
"""

from __future__ import annotations

import argparse
import hashlib
import math
from pathlib import Path

from .tracking.results import read_result
from .tracking.tables import results_table


def load_results(folders: list[Path]) -> list[dict]:
    """Every finished run's result.json below ``folders`` (failed jobs are left out), each with ``job``:
    its folder's path below the given folder, or the folder's own name for a result.json directly in it."""
    results = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("result.json")):
            result = read_result(path)
            if result.get("status", "done") == "done":
                below = path.parent.relative_to(folder)
                job = below.as_posix() if below.parts else path.parent.resolve().name
                results.append({**result, "job": job})
    return results


def setting(result: dict) -> tuple:
    """What runs must share to be compared: model, height, width, steps, prompts (and their number), seed.
    Keys that an older result.json lacks count as None."""
    config = result.get("config") or {}
    prompts = result.get("prompts")
    return (result.get("model"), config.get("height"), config.get("width"), result.get("steps"),
            None if prompts is None else tuple(prompts), result.get("num_prompts"), result.get("seed"))


def by_setting(results: list[dict]) -> dict[str, list[dict]]:
    """The runs grouped by `setting`, each group named after it ("digits 32x32, 8 steps, 3 prompts, seed 0"),
    in order of name; settings that differ only in the prompts' wording get a short hash of them."""
    groups: dict[tuple, list[dict]] = {}
    for result in results:
        groups.setdefault(setting(result), []).append(result)
    plain = {key: setting_name(key) for key in groups}
    shared = {name for name in plain.values() if list(plain.values()).count(name) > 1}
    names = {key: f"{name}, prompts #{hashlib.sha1(repr(key).encode()).hexdigest()[:6]}" if name in shared else name
             for key, name in plain.items()}
    return {names[key]: groups[key] for key in sorted(groups, key=names.get)}


def setting_name(key: tuple) -> str:
    model, height, width, steps, prompts, num_prompts, seed = key
    parts = [f"{model or 'model ?'}" + (f" {height}x{width}" if height and width else "")]
    if steps is not None:
        parts.append(f"{steps} steps")
    count = len(prompts) if prompts is not None else num_prompts
    if count is not None:
        parts.append(f"{count} prompt" + ("" if count == 1 else "s"))
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def pareto_front(results: list[dict], speed: str = "speedup", quality: str = "psnr") -> list[dict]:
    """The runs that no other run beats on both speed and quality."""
    def dominated(a, b):
        return b[speed] >= a[speed] and b[quality] >= a[quality] and (b[speed], b[quality]) != (a[speed], a[quality])

    return [a for a in results if not any(dominated(a, b) for b in results)]


def deployable(results: list[dict]) -> list[dict]:
    """The runs of policies that could be deployed (not bounds such as the oracle)."""
    return [r for r in results if not r.get("bound")]


def plot(results: list[dict], path: Path, speed: str = "speedup", quality: str = "psnr") -> None:
    """One panel per setting (`by_setting`), titled with its name: a line per policy and the setting's own
    Pareto front. Runs of different settings never share a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_setting(results)
    columns = min(len(groups), 2)
    rows = math.ceil(len(groups) / columns)
    figure, panels = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for axes, (name, runs) in zip(panels.flat, groups.items()):
        _plot_setting(axes, runs, speed, quality)
        axes.set_title(name, fontsize=10)
    for axes in list(panels.flat)[len(groups):]:
        axes.remove()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _plot_setting(axes, results: list[dict], speed: str, quality: str) -> None:
    finite = [r for r in results if math.isfinite(r[quality])]
    for policy in sorted({r["policy"] for r in finite}):
        runs = sorted((r for r in finite if r["policy"] == policy), key=lambda r: r[speed])
        bound = any(r.get("bound") for r in runs)
        axes.plot([r[speed] for r in runs], [r[quality] for r in runs], "o:" if bound else "o-",
                  label=f"{policy} (bound)" if bound else policy)
    front = sorted(pareto_front(deployable(finite), speed, quality), key=lambda r: r[speed])
    if front:
        axes.plot([r[speed] for r in front], [r[quality] for r in front], "k--", lw=1, label="Pareto front")
    axes.set_xlabel(speed.replace("_", " "))
    axes.set_ylabel(f"{quality.upper()} vs uncached" + (" (dB)" if quality == "psnr" else ""))
    axes.grid(alpha=0.3)
    if finite:
        axes.legend()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="output or sweep folders holding result.json files")
    parser.add_argument("--out", type=Path, default=Path("pareto.png"), help="the plot (PNG)")
    parser.add_argument("--speed", default="speedup", choices=("speedup", "ideal_speedup"))
    args = parser.parse_args(argv)
    results = load_results(args.folders)
    if not results:
        parser.error(f"no finished result.json below {', '.join(map(str, args.folders))}")
    tables = []
    for name, runs in by_setting(results).items():
        front = {id(r) for r in pareto_front(deployable(runs), args.speed)}
        rows = sorted(runs, key=lambda r: r[args.speed])
        for row in rows:
            row["job"] = ("* " if id(row) in front else "  ") + row["job"]
        tables.append(f"## {name}\n\n{results_table(rows, with_job=True, with_model=True)}")
    plot(results, args.out, args.speed)
    print("\n\n".join(tables))
    print(f"\n* on the Pareto front of {args.speed} and PSNR among the runs of the same model, resolution, steps, "
          f"prompts and seed (bounds left out); plot: {args.out}, one panel each")


if __name__ == "__main__":
    main()
