"""Start local ranks for the context-parallel tests, never waiting forever for them."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest


def torchrun(args: list[str], cwd: Path, nproc: int = 2, timeout: float = 420) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node nproc args...``; kills the whole process group if it outlives ``timeout``."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", WANDB_MODE="offline", HF_HUB_OFFLINE="1")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        output, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, errors = process.communicate()
        pytest.fail(f"the ranks did not finish within {timeout} s (a hang?):\n{output[-2000:]}\n{errors[-2000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output, errors)
