"""SenCache's sensitivities (``cachelab.policies.sencache``) measured on a model by finite differences along uncached
generations, as the paper's calibration does: at every step s of a branch, alpha_x = ||f(x_{s+1}, t_s) - f(x_s, t_s)||
/ ||x_{s+1} - x_s|| (the latent moved as the sampler moved it, the timestep held) and alpha_t = ||f(x_s, t_{s+1}) -
f(x_s, t_s)|| / |t_{s+1} - t_s| (the timestep moved, the latent held); RMS norms, t = scheduler timestep / 1000;
averaged over the generations and branches, per step. Two extra transformer calls per step."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from ..engine.attach import attach, detach
from ..models.specs import spec_for
from ..policies.no_cache import NoCache
from ..policies.sencache import rms
from .signals import _output_tensor


def sencache_sensitivities(pipe, prompts, **call_kwargs) -> dict:
    """{"timesteps", "alpha_x", "alpha_t"} per step for ``SenCache(sensitivities=...)``, from one uncached generation
    per prompt with ``call_kwargs``. The pipeline must pass ``hidden_states`` and the timestep by keyword."""
    transformer = pipe.transformer
    spec = spec_for(transformer)
    key = spec.timestep_argument
    calls: list[tuple[dict, torch.Tensor]] = []

    def keep_call(module, args, kwargs):
        calls.append((dict(kwargs), None))

    def keep_output(module, args, kwargs, output):
        calls[-1] = (calls[-1][0], _output_tensor(output).detach())

    generations = []  # per generation: (branch, step) of every call, and its keyword arguments and output
    executor = attach(pipe, NoCache())
    hooks = [transformer.register_forward_pre_hook(keep_call, with_kwargs=True),
             transformer.register_forward_hook(keep_output, with_kwargs=True)]
    try:
        for prompt in prompts:
            calls.clear()
            pipe(prompt, **call_kwargs)
            generations.append(([(record.branch, record.step) for record in executor.trace], list(calls)))
    finally:
        for hook in hooks:
            hook.remove()
        detach(pipe)
    per_step: dict[int, list[tuple[float, float, float]]] = defaultdict(list)
    for branches, recorded in generations:  # the extra calls run on the plain transformer
        for index, (branch, step) in enumerate(branches):
            later = next((j for j in range(index + 1, len(branches)) if branches[j][0] == branch), None)
            if later is not None:
                per_step[step].append(_finite_differences(transformer, spec, key, recorded[index], recorded[later]))
    steps = sorted(per_step)
    means = [np.mean(per_step[s], axis=0) for s in steps]
    return {"timesteps": [float(m[0]) for m in means], "alpha_x": [float(m[1]) for m in means],
            "alpha_t": [float(m[2]) for m in means]}


def _finite_differences(transformer, spec, key, call, later) -> tuple[float, float, float]:
    (kwargs, output), (later_kwargs, _) = call, later
    if "hidden_states" not in kwargs or key not in kwargs:
        raise ValueError(f"sencache_sensitivities needs the transformer called with hidden_states= and {key}= by keyword")
    x, x_next = kwargs["hidden_states"], later_kwargs["hidden_states"]
    t = float(torch.as_tensor(kwargs[key]).flatten()[0]) * spec.timestep_scale / 1000.0
    t_next = float(torch.as_tensor(later_kwargs[key]).flatten()[0]) * spec.timestep_scale / 1000.0
    with torch.no_grad():
        moved_x = _output_tensor(transformer(**{**kwargs, "hidden_states": x_next}))
        moved_t = _output_tensor(transformer(**{**kwargs, key: later_kwargs[key]}))
    dx, dt = rms(x_next - x), abs(t_next - t)
    alpha_x = rms(moved_x - output) / dx if dx > 0 else 0.0
    alpha_t = rms(moved_t - output) / dt if dt > 0 else 0.0
    return t, alpha_x, alpha_t
