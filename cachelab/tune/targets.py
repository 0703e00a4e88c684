"""Whether a run's quality figures meet the target, and by how much they miss it."""

from __future__ import annotations

from .settings import Target

#: Figures a target bounds from above (the others from below).
AT_MOST = ("kept_mib", "lpips")
#: Targets on perceptual figures, which the tuning and validation runs then compute (``cachelab.perceptual``).
PERCEPTUAL = ("lpips", "clip_score")


def bars(target: Target, metric_name: str | None) -> dict[str, float]:
    """Figure name -> the least value it may take (the model's metric under its own name), or for the figures of
    ``AT_MOST`` the most."""
    found = {"psnr": target.psnr, "ssim": target.ssim, metric_name or "metric": target.metric,
             **{name: getattr(target, name, None) for name in ("kept_mib", *PERCEPTUAL)}}
    return {name: value for name, value in found.items() if value is not None}


def shortfall(figures: dict, target_bars: dict[str, float]) -> float:
    """The largest relative miss over the bars: <= 0 when every bar is met (a missing figure misses)."""
    misses = []
    for name, bound in target_bars.items():
        value = figures.get(name)
        miss = None if value is None else (value - bound if name in AT_MOST else bound - value) / max(abs(bound), 1e-9)
        misses.append(1.0 if miss is None else miss)
    return max(misses)


def meets(figures: dict, target_bars: dict[str, float]) -> bool:
    return shortfall(figures, target_bars) <= 0


def describe(target_bars: dict[str, float]) -> str:
    """'psnr >= 40, ssim >= 0.99'."""
    return ", ".join(f"{name} {'<=' if name in AT_MOST else '>='} {bound:g}" for name, bound in target_bars.items())
