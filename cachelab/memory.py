"""Peak memory of a block of work: CUDA's max allocated bytes on a GPU, the process's resident set on a CPU.

The CPU figure is sampled (every `interval` seconds, from /proc/self/statm; the process's lifetime peak
where /proc does not exist), so it is the whole process's memory, weights included: compare the
reference and the cached run, whose difference is what the cache holds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
from dataclasses import dataclass

import torch

MB = 2**20


@dataclass
class Peak:
    kind: str  # "cuda_max_allocated" or "cpu_rss"
    megabytes: float = 0.0


@contextlib.contextmanager
def peak_memory(device: torch.device | str, interval: float = 0.02):
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        peak = Peak("cuda_max_allocated")
        yield peak
        torch.cuda.synchronize(device)
        peak.megabytes = torch.cuda.max_memory_allocated(device) / MB
        return
    peak = Peak("cpu_rss", resident_megabytes())
    done = threading.Event()

    def sample():
        while not done.wait(interval):
            peak.megabytes = max(peak.megabytes, resident_megabytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.megabytes = max(peak.megabytes, resident_megabytes())


def resident_megabytes() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except OSError:  # no /proc: the lifetime peak (kilobytes on Linux, bytes on macOS)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / MB if sys.platform == "darwin" else peak / 1024
