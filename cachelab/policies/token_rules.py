"""The token-selection rules of ToCa, DuCa and ClusCa, ported from their published codes' rules (Shenyi-Z/ToCa,
DiT-ToCa/cache_functions; kalinplus/Cache4Diffusion, flux/clusca-flux): scores, the schedules of full computations
and of the fresh-token ratio, and the choice of the tokens. Steps count up here (0 first); the ToCa code counts down
(its step ``num_steps - 1`` is the first), which ``down`` converts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: Scores that need no attention map (ToCa's ``random``, ``similarity``, ``norm``); ``attention`` is refused at attach.
SCORES = ("random", "similarity", "norm", "attention")
RATIO_SCHEDULES = ("constant", "linear", "exp", "ToCa-ddim50", "ToCa-ddpm250")


def down(step: int, num_steps: int) -> int:
    return num_steps - 1 - step


def force_threshold(fresh_threshold: int, step: int, num_steps: int, fresh_ratio: float) -> int:
    """ToCa's force-activation cycle at a full step (``force_scheduler``): the interval to the next full step grows
    with the step's place in the generation, and is 2 in the sensitive 20-40% (of the counted-down steps)."""
    d = down(step, num_steps)
    weight = 0.0 if fresh_ratio == 0 else 0.4
    factor = 1 + weight - 2 * weight * d / num_steps
    threshold = int(torch.round(torch.tensor(fresh_threshold / factor)))
    if fresh_ratio != 0 and int(num_steps * 0.2) <= d < int(num_steps * 0.4):
        threshold = 2
    return max(threshold, 1)


def fresh_ratio(schedule: str, ratio: float, step: int, num_steps: int, layer: int, layers: int, module: str) -> float:
    """ToCa's ``fresh_ratio_scheduler``; ``module`` is ``"attn"`` or ``"mlp"``, ``layers`` the model's blocks."""
    d, last = down(step, num_steps), max(layers - 1, 1)
    weight = 0.9
    if schedule == "constant":
        return ratio
    if schedule == "linear":
        return ratio * (1 + weight - 2 * weight * d / num_steps)
    if schedule == "exp":
        return ratio * weight ** (d / num_steps)
    step_weight, layer_weight = (2.0, -0.2) if schedule == "ToCa-ddim50" else (0.4, 0.8)
    step_factor = 1 + step_weight - 2 * step_weight * d / num_steps
    layer_factor = 1 + layer_weight - 2 * layer_weight * layer / last
    module_weight, module_time_weight = 2.5, 0.6
    module_factor = (1 - (1 - module_time_weight) * module_weight) if module == "attn" else (1 + module_time_weight * module_weight)
    return ratio * layer_factor * step_factor * module_factor


def base_score(kind: str, signals: dict, generator: torch.Generator) -> torch.Tensor:
    """[B, N] ToCa's s1 replacements without attention maps: ``similarity`` (1 - cosine of each token's input and its
    kept output, L2-normalised over the tokens; where the widths differ, its input at its last computation),
    ``norm`` (each input token's norm, normalised), ``random``."""
    batch, count = signals["batch"], signals["count"]
    if kind == "random":
        return torch.rand(batch, count, generator=generator)
    tokens = signals["input"]
    if kind == "similarity":
        kept = signals["kept"]
        if kept.shape[-1] != tokens.shape[-1]:  # a module whose output is wider (Flux's proj_mlp): the kept input instead
            kept = signals["last_input"]
        return F.normalize(1 - F.cosine_similarity(tokens.float(), kept.float(), dim=-1), dim=-1, p=2)
    if kind == "norm":
        return F.normalize(tokens.float().norm(dim=-1, p=2), dim=-1, p=2)
    raise ValueError(f"unknown score {kind!r}; scores: {', '.join(SCORES)}")


def local_selection_with_bonus(score: torch.Tensor, bonus_ratio: float, grid: int = 2) -> torch.Tensor:
    """ToCa's s4 (uniform spatial distribution): in every ``grid`` x ``grid`` cell of the square token grid, the best
    token's score grows by ``bonus_ratio`` times itself. Token counts that are not a square grid of whole cells are
    returned as they are."""
    batch, count = score.shape
    side = math.isqrt(count)
    if bonus_ratio == 0 or side * side != count or side % grid:
        return score
    cells = score.view(batch, side // grid, grid, side // grid, grid).permute(0, 1, 3, 2, 4).reshape(batch, -1, grid * grid)
    best, where = cells.max(dim=-1, keepdim=True)
    cells = cells + torch.zeros_like(cells).scatter(-1, where, 1.0) * best * bonus_ratio
    return cells.view(batch, side // grid, side // grid, grid, grid).permute(0, 1, 3, 2, 4).reshape(batch, count)


def top_tokens(score: torch.Tensor, ratio: float) -> torch.Tensor:
    """The ``int(ratio * N)`` best-scored tokens of every batch row, best first (``argsort`` descending, as ToCa)."""
    ratio = min(max(float(ratio), 0.0), 1.0)
    return score.argsort(dim=-1, descending=True)[:, : int(ratio * score.shape[1])]


def one_per_cluster(labels: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """ClusCa's choice: one token drawn uniformly at random from every cluster ([B, K]; an empty cluster gets token 0,
    as the published argmax over an all -inf row does)."""
    weights = torch.rand(labels.shape, generator=generator).to(labels.device)
    member = labels[:, None, :] == torch.arange(clusters, device=labels.device)[None, :, None]
    return torch.where(member, weights[:, None, :], torch.tensor(-float("inf"), device=labels.device)).argmax(dim=2)
