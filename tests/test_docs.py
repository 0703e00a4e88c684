"""The docs site builds with warnings as errors (mkdocs build --strict: guides, the generated policy catalogue and
config reference, the API reference), and every built-in policy states its parity status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachelab import registered_policies

ROOT = Path(__file__).resolve().parent.parent
BUILT_IN = {name: cls for name, cls in registered_policies().items() if cls.__module__.startswith("cachelab.policies.")}


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_every_built_in_policy_states_its_parity(name):
    cls = BUILT_IN[name]
    parity = cls.__dict__.get("parity", "")  # its own, not a parent's
    assert isinstance(parity, str) and parity.strip(), f"{cls.__name__} has no parity line"
    assert parity.startswith("none: no peer implementation") or "tests/test_" in parity, (
        f"{cls.__name__}.parity names no test that shows it: {parity!r}")


def test_the_docs_build_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    site = tmp_path / "site"
    catalogue = (site / "reference" / "policies" / "index.html").read_text()
    for name, cls in BUILT_IN.items():
        assert f"<code>{name}</code>" in catalogue and cls.__name__ in catalogue, name
    config = (site / "reference" / "config" / "index.html").read_text()
    assert "cfg_decisions" in config and "tune.seed" in config and "video_digits" in config
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "attach" in api and "register_signal" in api
    assert (site / "guides" / "writing-a-policy" / "index.html").is_file()
