"""One experiment across the ranks of torchrun (or srun tasks): the process group, diffusers' context
parallelism on the loaded transformer, and which rank writes.

    torchrun --nproc_per_node 2 -m cachelab parallel.ulysses_degree=2 ...

Every rank runs the uncached reference and the cached run under the same parallel config; only rank 0
writes results, images, W&B and tables. Config errors are found on every rank alike, before any
collective, so every rank exits with the same one-line error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class ParallelConfig:
    ulysses_degree: int = 1  # heads split over the ranks (all-to-all); runs with any attention backend
    ring_degree: int = 1  # sequence passed round the ranks; needs an attention backend that returns the log-sum-exp

    @property
    def degree(self) -> int:
        return self.ulysses_degree * self.ring_degree


def ranks_launched() -> int:
    """How many processes torchrun (WORLD_SIZE) or Slurm (SLURM_NTASKS, for srun tasks) started; 1 for a plain run."""
    for variable in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(variable):
            return int(os.environ[variable])
    return 1


def rank() -> int:
    """This process's rank among them (0 for a plain run)."""
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def is_writer() -> bool:
    return rank() == 0


def problems(parallel: ParallelConfig, device: str) -> list[str]:
    """What is wrong with running ``parallel`` here, in words a user can act on (empty when nothing)."""
    found = []
    for key in ("ulysses_degree", "ring_degree"):
        value = getattr(parallel, key)
        if not (isinstance(value, int) and value >= 1):
            found.append(f"parallel.{key} must be an integer >= 1, got {value!r}")
    if found or parallel.degree == 1:
        return found
    launched = ranks_launched()
    if launched == 1:
        found.append(f"parallel.ulysses_degree x parallel.ring_degree = {parallel.degree} needs that many processes: "
                     f"torchrun --nproc_per_node {parallel.degree} -m cachelab ...")
    elif launched != parallel.degree:
        found.append(f"parallel.ulysses_degree x parallel.ring_degree = {parallel.degree} must equal the "
                     f"{launched} processes launched (one generation runs across all of them): "
                     f"use degrees whose product is {launched}, or torchrun --nproc_per_node {parallel.degree}")
    if parallel.ring_degree > 1 and _resolved(device) == "cpu":
        found.append("parallel.ring_degree needs an attention backend that returns the log-sum-exp (flash or cuDNN "
                     "attention on GPUs); on the CPU use parallel.ulysses_degree")
    return found


def _resolved(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def model_problems(transformer, parallel: ParallelConfig) -> list[str]:
    """What the loaded model cannot do under ``parallel`` (found on every rank alike, before any collective)."""
    if parallel.degree == 1:
        return []
    if getattr(type(transformer), "_cp_plan", None) is None:
        return [f"{type(transformer).__name__} has no context-parallel plan in diffusers: run it with parallel degrees of 1"]
    heads = getattr(transformer.config, "num_attention_heads", None)
    if parallel.ulysses_degree > 1 and heads is not None and heads % parallel.ulysses_degree:
        return [f"parallel.ulysses_degree={parallel.ulysses_degree} must divide the model's {heads} attention heads"]
    return []


def start(parallel: ParallelConfig, device: str) -> None:
    """Join the process group of the launched ranks (nothing for a plain run)."""
    import torch

    dist = torch.distributed
    if parallel.degree == 1 or dist.is_initialized():
        return
    if "WORLD_SIZE" not in os.environ:  # srun tasks: torch's variables from Slurm's (submitit knows the master)
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export()
    cuda = _resolved(device).startswith("cuda")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if cuda else "gloo")


def enable(transformer, parallel: ParallelConfig) -> None:
    """diffusers' context parallelism on ``transformer`` over all launched ranks."""
    import torch
    from diffusers import ContextParallelConfig

    config = ContextParallelConfig(ulysses_degree=parallel.ulysses_degree, ring_degree=parallel.ring_degree)
    if torch.accelerator.device_count() > 0:
        transformer.enable_parallelism(config=config)
    else:
        _enable_without_accelerator(transformer, config)


def _enable_without_accelerator(transformer, config) -> None:
    """What ``enable_parallelism`` does, on a host without accelerators: diffusers picks the rank's device as
    ``rank % torch.accelerator.device_count()``, a division by zero there. The mesh and the split/gather
    hooks are diffusers' own; the device is the CPU."""
    import torch
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig as DiffusersParallelConfig

    dist = torch.distributed
    mesh = dist.device_mesh.init_device_mesh("cpu", mesh_shape=config.mesh_shape, mesh_dim_names=config.mesh_dim_names)
    resolved = DiffusersParallelConfig(context_parallel_config=config)
    resolved.setup(dist.get_rank(), dist.get_world_size(), torch.device("cpu"), mesh=mesh)
    transformer._parallel_config = resolved
    for module in transformer.modules():
        processor = getattr(module, "processor", None)
        if processor is not None and hasattr(processor, "_parallel_config"):
            processor._parallel_config = resolved
    apply_context_parallel(transformer, config, transformer._cp_plan)


def all_ranks(flag: bool) -> bool:
    """Whether ``flag`` holds on every rank (itself for a plain run): what ranks that must act alike go by."""
    return _reduced(0 if flag else 1) == 0


def rank_zero(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (itself for a plain run)."""
    return bool(_reduced(int(flag) if rank() == 0 else 0))


def _reduced(value: int) -> int:
    import torch

    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return value
    tensor = torch.tensor([value], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return int(tensor.item())


def hydra_overrides_for_other_ranks(argv: list[str]) -> list[str]:
    """Command-line overrides that send Hydra's output folder and logs of ranks other than 0 to a temporary
    folder: only rank 0 writes into outputs/ and multirun/."""
    if rank() == 0 or not any(arg.startswith("parallel.") for arg in argv):
        return []
    scratch = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cachelab-rank{rank()}")
    return ["hydra.output_subdir=null", f"hydra.run.dir={scratch}", f"hydra.sweep.dir={scratch}",
            "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
