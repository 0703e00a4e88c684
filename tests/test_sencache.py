"""SenCache: its decisions on a fixed sequence of latents and timesteps worked out by hand from the paper's rule
(arXiv 2602.24208, vita-epfl/SenCache), sensitivities measured on a tiny Flux, and the error without them."""

import pytest
import torch
from tiny import generate

import cachelab
from cachelab.calibrate.sencache import sencache_sensitivities
from cachelab.policies.base import StepContext
from cachelab.policies.sencache import SenCache

# Calibrated at t = 1.0, 0.5, 0.0: alpha_x 2, 1, 1 and alpha_t 0.5, 0.2, 0.2.
SENSITIVITIES = {"timesteps": [1.0, 0.5, 0.0], "alpha_x": [2.0, 1.0, 1.0], "alpha_t": [0.5, 0.2, 0.2]}
STEPS = 10
LATENTS = [0.0, 0.01, 0.05, 0.1, 0.15, 0.2, 0.4, 0.45, 0.5, 0.6]  # constant latents: the RMS change is the difference
TIMESTEPS = [1000 - 100 * s for s in range(STEPS)]  # t = 1.0, 0.9, ..., 0.1


def decisions(policy):
    policy.reset()
    made = []
    for step in range(STEPS):
        signals = {"call_input": torch.full((2, 4), LATENTS[step])}
        decision = policy.decide(StepContext(step, STEPS, "cond", raw_timestep=TIMESTEPS[step], signals=signals))
        made.append(("C" if decision.compute else "R", decision.signal))
    return made


# threshold 0.2, early 0.05 for steps 0-1 (20% of 10), at most 2 reused in a row:
#   0: first, compute; cached x 0, t 1.0, alpha (2, 0.5)
#   1: 2 * 0.01 + 0.5 * 0.1 = 0.07 >= 0.05 (early): compute; cached x 0.01, t 0.9, nearest 1.0: (2, 0.5)
#   2: 2 * 0.04 + 0.5 * 0.1 = 0.13 < 0.2: reuse      3: 2 * 0.09 + 0.5 * 0.2 = 0.28: compute; t 0.7 -> 0.5: (1, 0.2)
#   4: 0.05 + 0.02 = 0.07: reuse    5: 0.1 + 0.04 = 0.14: reuse    6: two reused in a row: compute (0.3 + 0.06 = 0.36)
#   6: cached x 0.4, t 0.4 -> 0.5: (1, 0.2)    7: 0.05 + 0.02 = 0.07: reuse    8: 0.1 + 0.04 = 0.14: reuse
#   9: last, compute
EXPECTED = [("C", None), ("C", 0.07), ("R", 0.13), ("C", 0.28), ("R", 0.07), ("R", 0.14), ("C", 0.36),
            ("R", 0.07), ("R", 0.14), ("C", None)]


def test_decisions_follow_the_papers_rule():
    made = decisions(SenCache(0.2, early_threshold=0.05, max_consecutive=2, sensitivities=SENSITIVITIES))
    assert [d for d, _ in made] == [d for d, _ in EXPECTED]
    for (_, signal), (_, expected) in zip(made, EXPECTED):
        assert signal == (None if expected is None else pytest.approx(expected, rel=1e-6))


def test_sensitivities_measured_on_tiny_flux(flux):
    call = dict(num_inference_steps=8, height=32, width=32, max_sequence_length=16, output_type="pt")
    sensitivities = sencache_sensitivities(flux, ["a photo of a cat"], generator=torch.Generator().manual_seed(7), **call)
    assert len(sensitivities["timesteps"]) == 7  # every step with a next one
    assert sensitivities["timesteps"] == sorted(sensitivities["timesteps"], reverse=True)
    assert all(a > 0 for a in sensitivities["alpha_x"] + sensitivities["alpha_t"])
    computed = {}
    for threshold in (0.05, 0.5):
        executor = cachelab.attach(flux, SenCache(threshold, early_threshold=threshold / 10, sensitivities=sensitivities))
        try:
            generate(flux, steps=8)
        finally:
            cachelab.detach(flux)
        computed[threshold] = sum(r.computed for r in executor.trace)
    assert 2 <= computed[0.5] < computed[0.05] <= 8


def test_without_sensitivities_it_says_how_to_measure_them(flux):
    with pytest.raises(ValueError, match="sencache_sensitivities"):
        cachelab.attach(flux, SenCache())
    with pytest.raises(ValueError, match="max_consecutive must be an integer >= 1"):
        SenCache(max_consecutive=0)
