"""Trials on the tuning set: a setting's cached images against the stored uncached ones, no timing.

Each trial's figures are kept in ``<tune folder>/trials/<policy>/<key>.json``, keyed by everything they
depend on, so a resumed tune reads finished trials back instead of running them again.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

from ..config import RunConfig
from ..policies import make_policy
from ..tracking.results import replace_file, to_json


class TrialBench:
    """The tuning run's pipeline, calls and uncached reference (from the reference store), loaded once."""

    def __init__(self, run: RunConfig, folder: Path):
        from ..executor import attach, detach
        from ..policies import NoCache
        from ..runner import loaded_pipeline, make_calls, reference_images, reference_key, run_prompts

        self.run, self.folder = run, folder
        self.prompts = run_prompts(run)
        self.calls = make_calls(run, self.prompts)
        self.pipe = loaded_pipeline(run)
        self.pipe.set_progress_bar_config(disable=True)
        self.reference, _ = reference_images(self.pipe, run, self.calls)
        self.blocks = len(attach(self.pipe, NoCache()).blocks)
        detach(self.pipe)
        self.identity = [reference_key(run, self.calls, self.pipe.device.type), run.cfg_decisions, run.calibration_file]
        self.trials_run = 0

    def evaluate(self, policy_name: str, setting: dict, base: dict) -> dict:
        """Figures of the policy (its config `base` with `setting` on top) on the tuning set: psnr, ssim,
        the model's metric, computed_fraction, and cost (the share of block evaluations it runs)."""
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
        from ..runner import decision_figures, generate, model_metric, quality_figures

        policy = make_policy(policy_name, **{k: v for k, v in params.items() if v is not None})
        passes = generate(self.pipe, self.calls, policy, desc="trial", quiet=True, cfg_decisions=self.run.cfg_decisions)
        skipped_cost = (policy.head_blocks + policy.tail_blocks) / self.blocks
        records = [record for trace in passes.traces for record in trace]
        cost = sum(1.0 if record.computed else skipped_cost for record in records) / len(records)
        quality = quality_figures(self.reference, passes.images)
        return dict(psnr=quality["psnr"], ssim=quality["ssim"], **decision_figures(passes.traces, self.run.steps),
                    **model_metric(self.run, self.reference, passes.images, self.prompts), cost=cost)


def read_figures(path: Path) -> dict:
    figures = json.loads(path.read_text())
    if figures.get("psnr") is None:  # identical images: stored as null (strict JSON)
        figures["psnr"] = math.inf
    return figures
