"""The repository passes its linter (ruff, configured in pyproject.toml), so CI runs it with the tests."""

import subprocess
import sys

from test_runner_fixtures import REPO


def test_ruff_finds_nothing():
    done = subprocess.run([sys.executable, "-m", "ruff", "check", str(REPO)], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
