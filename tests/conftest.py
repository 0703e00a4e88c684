import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tiny  # noqa: E402

# Tiny models gain nothing from a second thread, and two threads slow down badly when anything else
# shares the cores.
torch.set_num_threads(1)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def flux():
    return _quiet(tiny.flux_pipeline())


@pytest.fixture(scope="session")
def cogview4():
    return _quiet(tiny.cogview4_pipeline())


@pytest.fixture(scope="session")
def sd3():
    return _quiet(tiny.sd3_pipeline())


@pytest.fixture(scope="session")
def wan():
    return _quiet(tiny.wan_pipeline())


@pytest.fixture(scope="session")
def cogvideox():
    return _quiet(tiny.cogvideox_pipeline())


@pytest.fixture(scope="session")
def digits():
    from cachelab import zoo

    return _quiet(zoo.load_pipeline())
