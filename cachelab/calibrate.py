"""Measure what calibrated policies need for a model that has no published numbers.

TeaCache, the way its authors fit it: over full uncached generations, pair the relative L1 change of
the first block's modulated input (x) with that of the model output (y) at every step, then
``numpy.polyfit(x, y, degree)``. MagCache: per step, the mean ratio of the per-token norms of the
residual of all blocks to those of the previous step. The learned policy: the Gram matrix of those
residuals over the calibration generations gives, by least squares, each skipped step's forecast
weights, and by a dynamic programme the schedule of computed steps (``cachelab.schedules``)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from .executor import attach, detach
from .models.specs import Arguments
from .policies.base import CachePolicy, Decision, StepContext, compute, relative_l1
from .policies.learned import Learned
from .policies.no_cache import NoCache
from .schedules import Plan, best_plan, estimator, gram


class _ModulatedInputProbe(CachePolicy):
    """Computes every step and reports the modulated input's relative change as its signal."""

    signals = ("modulated_input",)
    caches = False

    def reset(self) -> None:
        self.previous = None

    def decide(self, ctx: StepContext) -> Decision:
        current, previous = ctx.signals["modulated_input"], self.previous
        self.previous = current
        return compute(None if previous is None else relative_l1(current, previous))


def _output_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output[0] if isinstance(output, tuple) else output.sample


def signal_pairs(pipe, prompts, **call_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) over every step after the first of every branch of one generation per prompt."""
    xs, ys = [], []
    outputs: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_hook(lambda module, args, out: outputs.append(_output_tensor(out)))
    executor = attach(pipe, _ModulatedInputProbe())
    try:
        for prompt in prompts:
            outputs.clear()
            pipe(prompt, **call_kwargs)
            previous: dict[str, torch.Tensor] = defaultdict(lambda: None)
            for record, output in zip(executor.trace, outputs):
                if previous[record.branch] is not None:
                    xs.append(record.signal)
                    ys.append(relative_l1(output, previous[record.branch]))
                previous[record.branch] = output
    finally:
        detach(pipe)
        hook.remove()
    return np.asarray(xs), np.asarray(ys)


def teacache_coefficients(pipe, prompts, degree: int = 4, **call_kwargs) -> list[float]:
    """Polynomial coefficients (highest degree first) for ``TeaCache(coefficients=...)``."""
    x, y = signal_pairs(pipe, prompts, **call_kwargs)
    if len(x) <= degree:
        raise ValueError(f"{len(x)} step pairs cannot fit a degree-{degree} polynomial; use more prompts or steps")
    return np.polyfit(x, y, degree).tolist()


def magcache_ratios(pipe, prompts, **call_kwargs) -> list[float]:
    """Per-step magnitude ratios for ``MagCache(mag_ratios=...)``, averaged over prompts and branches."""
    executor = attach(pipe, NoCache())
    (first, _), (last, last_output) = executor.blocks[0], executor.blocks[-1]
    inputs, residuals = [], []

    def keep_input(block, args, kwargs):
        inputs.append(Arguments(block, args, kwargs)["hidden_states"])

    def keep_residual(block, args, output):
        residuals.append(last_output.unpack(output)[0] - inputs[-1])

    hooks = [
        first.register_forward_pre_hook(keep_input, with_kwargs=True),
        last.register_forward_hook(keep_residual),
    ]
    per_step: dict[int, list[float]] = defaultdict(list)
    try:
        for prompt in prompts:
            residuals.clear()
            pipe(prompt, **call_kwargs)
            previous: dict[str, torch.Tensor] = {}
            for record, residual in zip(executor.trace, residuals):
                norm = torch.linalg.norm(residual.float(), dim=-1)
                before = previous.get(record.branch)
                ratio = 1.0 if before is None else (norm / (before + 1e-8)).mean().item()
                per_step[record.step].append(ratio)
                previous[record.branch] = norm
    finally:
        detach(pipe)
        for hook in hooks:
            hook.remove()
    return [float(np.mean(per_step[step])) for step in sorted(per_step)]


def residual_gram(pipe, prompts, **call_kwargs) -> np.ndarray:
    """The Gram matrix of the residual of all blocks between every pair of steps, summed over one
    uncached generation per prompt and over its CFG branches."""
    executor = attach(pipe, NoCache())
    total = None
    try:
        for prompt in prompts:
            for steps in executor.rehearse(lambda: pipe(prompt, **call_kwargs)).values():
                g = gram(steps)
                total = g if total is None else total + g
    finally:
        detach(pipe)
    return total


def learned_plans(pipe, prompts, budgets, history: int = 2, **call_kwargs) -> dict[int, Plan]:
    """For each budget, the schedule and forecast weights of ``Learned`` (see ``learned_policy``)."""
    g = residual_gram(pipe, prompts, **call_kwargs)
    fitted = estimator("fitted", history, g)
    return {budget: best_plan(g, budget, fitted, history) for budget in budgets}


def learned_policy(pipe, prompts, budget: int, history: int = 2, **call_kwargs) -> Learned:
    """A ready ``Learned`` policy for ``pipe``: ``budget`` computed steps chosen, and the forecast of each
    other step fitted (least squares over the last ``history`` computed residuals), on uncached
    generations of ``prompts`` with ``call_kwargs`` (use prompts or seeds you will not evaluate on)."""
    plan = learned_plans(pipe, prompts, [budget], history, **call_kwargs)[budget]
    return Learned(budget, plans={budget: plan})


def calibrate_model(run) -> dict:
    """``python -m cachelab.calibrate``: every calibrated policy's numbers for the run's model and prompts,
    in the layout of ``calibration.json`` (``cachelab.calibration``)."""
    from .runner import cpu_threads, loaded_pipeline, make_calls, prompts_and_digits

    prompts = prompts_and_digits(run)[0] * run.calibrate.generations
    arguments = make_calls(run, prompts[:1])[0].arguments
    setting = run.calibrate

    def kwargs():
        return dict(generator=torch.Generator("cpu").manual_seed(setting.seed), **arguments)

    with cpu_threads(run.threads):
        pipe = loaded_pipeline(run)
        pipe.set_progress_bar_config(disable=True)
        plans = learned_plans(pipe, prompts, setting.budgets, setting.history, **kwargs())
        numbers = {
            "teacache": {"coefficients": teacache_coefficients(pipe, prompts, **kwargs())},
            "magcache": {"mag_ratios": magcache_ratios(pipe, prompts, **kwargs())},
            "learned": {"plans": {str(budget): plan.to_json() for budget, plan in plans.items()}},
        }
    data = (f"model={run.model.name}: {len(prompts)} uncached generations ({setting.generations} per prompt) from "
            f"one generator seeded {setting.seed}, {run.steps} steps")
    return {"data": data, "prompts": sorted(set(prompts)), "policies": numbers}


def main() -> None:
    import json
    import sys
    from pathlib import Path

    import hydra
    from hydra.core.hydra_config import HydraConfig

    from .config import ConfigError, check_calibrate, config_dir, validate

    @hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
    def calibrate(cfg) -> None:
        try:
            run = validate(cfg)
            check_calibrate(run)
        except ConfigError as error:
            print(f"cachelab.calibrate: error: {error}", file=sys.stderr)
            sys.exit(2)
        numbers = calibrate_model(run)
        numbers["command"] = "python -m cachelab.calibrate " + " ".join(HydraConfig.get().overrides.task)
        out = Path(run.calibrate.out).expanduser()
        out = out if out.is_absolute() else Path(HydraConfig.get().runtime.output_dir) / out
        out.write_text(json.dumps(numbers, indent=2) + "\n")
        learned = numbers["policies"]["learned"]["plans"]
        print(f"learned plans (computed steps): " + "; ".join(f"{b}: {p['computed']}" for b, p in learned.items()))
        print(f"wrote {out}\nuse it: python -m cachelab model={run.model.name} policy=learned policy.budget=<one of "
              f"{', '.join(learned)}> calibration_file={out}")

    calibrate()


if __name__ == "__main__":
    main()
