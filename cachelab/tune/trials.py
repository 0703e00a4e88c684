"""Trials on the tuning set: a setting's cached images against the stored uncached ones, no timing.

A trial stops early once its PSNR or SSIM bar can no longer be met, whatever the remaining prompts give
(PSNR: their MSE is at least 0; SSIM: at most 1). Each trial's figures are kept in
``<tune folder>/trials/<policy>/<key>.json``, keyed by everything they depend on (the bars too, for the
early stop), so a resumed tune reads finished trials back instead of running them again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..policies import make_policy
from ..tracking.results import replace_file, to_json


class TrialBench:
    """The tuning run's pipeline, calls and uncached reference (from the reference store), loaded once."""

    def __init__(self, run: RunConfig, folder: Path, bars: dict[str, float]):
        from ..executor import attach, detach
        from ..policies import NoCache
        from ..runner import loaded_pipeline, make_calls, reference_images, reference_key, run_prompts

        self.run, self.folder, self.bars = run, folder, bars
        self.prompts = run_prompts(run)
        self.calls = make_calls(run, self.prompts)
        self.pipe = loaded_pipeline(run)
        self.pipe.set_progress_bar_config(disable=True)
        self.reference, _ = reference_images(self.pipe, run, self.calls)
        self.blocks = len(attach(self.pipe, NoCache()).blocks)
        detach(self.pipe)
        self.identity = [reference_key(run, self.calls, self.pipe.device.type), run.cfg_decisions, run.calibration_file, bars]
        self.trials_run = 0

    def evaluate(self, policy_name: str, setting: dict, base: dict) -> dict:
        """Figures of the policy (its config `base` with `setting` on top) on the tuning set: psnr, ssim,
        the model's metric, computed_fraction, cost (the share of block evaluations it runs) and
        prompts_done (fewer than all when it stopped early)."""
        params = {key: value for key, value in {**base, **setting}.items() if key not in ("name", "module")}
        key = hashlib.sha256(json.dumps([policy_name, params, self.identity], sort_keys=True, default=str).encode()).hexdigest()[:20]
        path = self.folder / policy_name / f"{key}.json"
        if path.is_file():
            return read_figures(path)
        figures = self._measure(policy_name, params)
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, to_json({"policy": policy_name, "setting": setting, **figures}) + "\n")
        self.trials_run += 1
        return figures

    def _measure(self, policy_name: str, params: dict) -> dict:
        from .. import metrics
        from ..runner import decision_figures, generate, model_metric, quality_figures

        policy = make_policy(policy_name, **{k: v for k, v in params.items() if v is not None})
        images, traces, squared_errors, ssims = [], [], [], []
        for call, reference in zip(self.calls, self.reference):
            passes = generate(self.pipe, [call], policy, desc="trial", quiet=True, cfg_decisions=self.run.cfg_decisions)
            images.append(passes.images[0])
            traces += passes.traces
            squared_errors.append(float(np.mean((passes.images[0] - reference) ** 2)))
            ssims += metrics.ssim(reference[None], passes.images)
            if self._cannot_pass(squared_errors, ssims):
                break
        done = len(images)
        images = np.stack(images)
        skipped_cost = (policy.head_blocks + policy.tail_blocks) / self.blocks
        records = [record for trace in traces for record in trace]
        cost = sum(1.0 if record.computed else skipped_cost for record in records) / len(records)
        quality = quality_figures(self.reference[:done], images)
        return dict(psnr=quality["psnr"], ssim=quality["ssim"], **decision_figures(traces, self.run.steps),
                    **model_metric(self.run, self.reference[:done], images, self.prompts[:done]), cost=cost, prompts_done=done)

    def _cannot_pass(self, squared_errors: list[float], ssims: list[float]) -> bool:
        """Whether the whole set must miss a PSNR or SSIM bar, whatever the prompts not yet run give."""
        count = len(self.calls)
        if len(squared_errors) == count:
            return False
        least_mse = sum(squared_errors) / count
        best_psnr = math.inf if least_mse == 0 else 10 * math.log10(1 / least_mse)
        best_ssim = (sum(ssims) + count - len(ssims)) / count
        return best_psnr < self.bars.get("psnr", -math.inf) or best_ssim < self.bars.get("ssim", -math.inf)


def read_figures(path: Path) -> dict:
    figures = json.loads(path.read_text())
    if figures.get("psnr") is None:  # identical images: stored as null (strict JSON)
        figures["psnr"] = math.inf
    return figures
