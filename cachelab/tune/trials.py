"""Trials on the tuning set: a setting's cached images against the stored uncached ones, no timing.

A trial stops early once its PSNR or SSIM bar can no longer be met, whatever the remaining prompts give
(PSNR: their MSE is at least 0; SSIM: at most 1). A policy that reads no signal decides the same whatever the
images, so its trials run ``batch`` prompts per pipeline call (fewer, larger calls: on a CPU the fixed cost of
a small model's call is most of its time). Each trial's figures are kept in
``<tune folder>/trials/<policy>/<key>.json``, keyed by everything they depend on (the bars too, for the
early stop), so a resumed tune reads finished trials back instead of running them again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..config import RunConfig, metric_options
from ..policies import make_policy
from ..runner import Passes
from ..tracking.results import replace_file, to_json


class TrialBench:
    """The tuning run's pipeline, calls and uncached reference (from the reference store), loaded once."""

    def __init__(self, run: RunConfig, folder: Path, bars: dict[str, float], batch: int | None = 1):
        """``batch``: prompts per call for a policy that reads no signal; None: all of them on a CPU, else 1."""
        from ..engine.attach import attach, detach
        from ..policies import NoCache
        from ..runner import loaded_pipeline, make_calls, reference_images, reference_key, run_prompts

        self.run, self.folder, self.bars = run, folder, bars
        self.perceptual = list(run.metrics)  # the perceptual figures its targets need (computed for every trial)
        self.prompts = run_prompts(run)
        self.calls = make_calls(run, self.prompts)
        self.pipe = loaded_pipeline(run)
        self.batch = batch or (len(self.calls) if self.pipe.device.type == "cpu" else 1)
        self.pipe.set_progress_bar_config(disable=True)
        self.reference, _ = reference_images(self.pipe, run, self.calls)
        self.blocks = len(attach(self.pipe, NoCache()).blocks)
        detach(self.pipe)
        self.identity = [reference_key(run, self.calls, self.pipe.device.type), run.cfg_decisions, run.calibration_file, bars,
                         self.batch]
        self.trials_run = 0
        self.last: tuple[str, Passes] | None = None  # the key and passes of the last measurement (one call per prompt)

    def evaluate(self, policy_name: str, setting: dict, base: dict) -> dict:
        """Figures of the policy (its config `base` with `setting` on top) on the tuning set: psnr, ssim,
        the model's metric, computed_fraction, cost (the share of block evaluations it runs) and
        prompts_done (fewer than all when it stopped early)."""
        params = policy_params(setting, base)
        key = self._key(policy_name, params)
        path = self.folder / policy_name / f"{key}.json"
        if path.is_file():
            return read_figures(path)
        figures = self._measure(policy_name, params, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, to_json({"policy": policy_name, "setting": setting, **figures}) + "\n")
        self.trials_run += 1
        return figures

    def passes_of(self, policy_name: str, setting: dict, base: dict) -> Passes | None:
        """The images and traces of the setting's measurement, if it was the last one made in this process."""
        key = self._key(policy_name, policy_params(setting, base))
        return self.last[1] if self.last is not None and self.last[0] == key else None

    def _key(self, policy_name: str, params: dict) -> str:
        return hashlib.sha256(json.dumps([policy_name, params, self.identity], sort_keys=True, default=str).encode()).hexdigest()[:20]

    def _measure(self, policy_name: str, params: dict, key: str) -> dict:
        from .. import metrics
        from ..engine.state import merge_peaks
        from ..runner import Batch, decision_figures, generate, kept_figures, model_metric, quality_figures

        policy = make_policy(policy_name, **{k: v for k, v in params.items() if v is not None})
        size = self.batch if not policy.signals and not policy.rehearses else 1
        images, traces, seconds, squared_errors, ssims, kept = [], [], [], [], [], {}
        for start in range(0, len(self.calls), size):
            calls = self.calls[start:start + size]
            passes = generate(self.pipe, [Batch(calls) if size > 1 else calls[0]], policy, desc="trial", quiet=True,
                              cfg_decisions=self.run.cfg_decisions)
            references = self.reference[start:start + len(calls)]
            images += list(passes.images)
            traces += passes.traces
            seconds += passes.seconds
            merge_peaks(kept, passes.kept_peak)
            squared_errors += [float(np.mean((image - reference) ** 2)) for image, reference in zip(passes.images, references)]
            ssims += metrics.ssim(references, passes.images)
            if self._cannot_pass(squared_errors, ssims):
                break
        done = len(images)
        images = np.stack(images)
        self.last = (key, Passes(images, seconds, traces)) if size == 1 and done == len(self.calls) else None
        skipped_cost = (policy.head_blocks + policy.tail_blocks) / self.blocks
        records = [record for trace in traces for record in trace]
        cost = sum(1.0 if record.computed else skipped_cost for record in records) / len(records)
        quality = quality_figures(self.reference[:done], images)
        if self.perceptual:
            from ..perceptual import evaluate

            quality.update(evaluate(self.perceptual, self.reference[:done], images, self.prompts[:done], metric_options(self.run)))
        return dict(psnr=quality["psnr"], ssim=quality["ssim"], **{k: quality[k] for k in self.perceptual if k in quality},
                    **decision_figures(traces, self.run.steps),
                    **model_metric(self.run, self.reference[:done], images, self.prompts[:done]), **kept_figures(kept),
                    cost=cost, prompts_done=done)

    def _cannot_pass(self, squared_errors: list[float], ssims: list[float]) -> bool:
        """Whether the whole set must miss a PSNR or SSIM bar, whatever the prompts not yet run give."""
        count = len(self.calls)
        if len(squared_errors) == count:
            return False
        least_mse = sum(squared_errors) / count
        best_psnr = math.inf if least_mse == 0 else 10 * math.log10(1 / least_mse)
        best_ssim = (sum(ssims) + count - len(ssims)) / count
        return best_psnr < self.bars.get("psnr", -math.inf) or best_ssim < self.bars.get("ssim", -math.inf)


def policy_params(setting: dict, base: dict) -> dict:
    return {key: value for key, value in {**base, **setting}.items() if key not in ("name", "module")}


def read_figures(path: Path) -> dict:
    figures = json.loads(path.read_text())
    if figures.get("psnr") is None:  # identical images: stored as null (strict JSON)
        figures["psnr"] = math.inf
    return figures
