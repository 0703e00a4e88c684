"""Re-run an experiment and compare it with its committed table, or write that table.

    python -m cachelab.reproduce experiments/<name>            # exit 0: reproduced; 1: the differing jobs are printed
    python -m cachelab.reproduce --write experiments/<name>    # run it, then write results.json, results.png, the README table

The folder's name is the experiment's (`conf/experiment/<name>.yaml`). The sweep runs as
`python -m cachelab experiment=<name>` with the overrides stored in results.json, into a temporary folder
(`--keep DIR` keeps it; `--from DIR` takes a finished sweep instead of running one). Decisions, computed
steps, PSNR, SSIM and the model's metric must match exactly (the same config gives the same images on the
same CPU, torch build and code); speedups, which are timings, within a relative tolerance (`--tolerance inf`:
not compared). The sweep computes its uncached references itself, in a reference store of its own: a shared
store (`cache_dir`) may hold references made by runs with another torch thread count, which round differently.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .ablations.results import differences, read_results, sweep_rows, sweep_seconds, write_results
from .config import config_dir

DEFAULT_TOLERANCE = 0.3


def experiment_name(folder: Path) -> str:
    """The experiment a folder holds results of: the folder's name, which must name a config."""
    configs = Path(config_dir()) / "experiment"
    name = folder.resolve().name
    if not (configs / f"{name}.yaml").is_file():
        known = ", ".join(sorted(p.stem for p in configs.glob("*.yaml")))
        raise ValueError(f"{folder} is not an experiment folder: no conf/experiment/{name}.yaml (experiments: {known})")
    return name


def run_sweep(name: str, overrides: list[str], sweep_dir: Path, store: Path) -> float | None:
    """Run the experiment's sweep into ``sweep_dir``, with ``store`` as its (new) reference store; its wall
    seconds (None when it failed)."""
    command = [sys.executable, "-m", "cachelab", f"experiment={name}", *overrides,
               f"hydra.sweep.dir={sweep_dir}", f"cache_dir={store}", "logger=none", "quiet=true"]
    print("running:", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        print(f"{done.stdout[-4000:]}\nthe sweep of {name} failed (exit status {done.returncode})", file=sys.stderr)
        return None
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    import torch

    return f"{cpu} ({os.cpu_count()} cores), torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cachelab.reproduce", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("folder", type=Path, help="experiments/<name>")
    parser.add_argument("overrides", nargs="*", help="with --write: config overrides, stored with the table")
    parser.add_argument("--write", action="store_true", help="write the folder's table instead of comparing with it")
    parser.add_argument("--tolerance", type=float, help=f"relative speedup tolerance (default: the table's, else {DEFAULT_TOLERANCE})")
    parser.add_argument("--keep", type=Path, help="run the sweep into this folder and keep it")
    parser.add_argument("--from", dest="source", type=Path, help="a finished sweep of the experiment, instead of running it")
    args = parser.parse_args(argv)
    try:
        name = experiment_name(args.folder)
        committed = None if args.write else read_results(args.folder)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    if args.overrides and not args.write:
        parser.error("overrides are only taken with --write; a comparison uses those stored in results.json")
    overrides = args.overrides if args.write else committed["overrides"]
    with tempfile.TemporaryDirectory(prefix=f"cachelab-{name}-") as scratch:
        sweep_dir = args.source or args.keep or Path(scratch) / "sweep"
        seconds = sweep_seconds(sweep_dir) if args.source else run_sweep(name, overrides, sweep_dir, Path(scratch) / "references")
        if seconds is None:
            return 1
        rows = sweep_rows(sweep_dir)
    if args.write:
        write_results(args.folder, dict(
            experiment=name, overrides=overrides, speedup_tolerance=args.tolerance or DEFAULT_TOLERANCE,
            sweep_seconds=seconds, machine=machine(), date=datetime.date.today().isoformat(), rows=rows))
        print(f"wrote {args.folder}: results.json, results.png and the README's table ({len(rows)} jobs)")
        return 0
    tolerance = args.tolerance if args.tolerance is not None else committed.get("speedup_tolerance", DEFAULT_TOLERANCE)
    found = differences(committed["rows"], rows, tolerance)
    if found:
        print(f"{name} does not reproduce its committed table ({len(found)} of {len(committed['rows'])} jobs differ):")
        print("\n".join(found))
        return 1
    print(f"{name} reproduces: {len(rows)} jobs, decisions, computed steps, PSNR and SSIM identical, "
          f"speedups within {tolerance:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
