"""What produced a result: Python and package versions, and the git revision of the checkout."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("cachelab", "torch", "diffusers", "transformers", "numpy", "scikit-image", "hydra-core", "wandb")


def provenance() -> dict:
    """Package versions and the git revision of the cachelab checkout (None when installed)."""
    versions = {}
    for package in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {"python": platform.python_version(), "versions": versions, "git": git_revision()}


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[2]
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
