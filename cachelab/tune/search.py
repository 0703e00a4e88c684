"""The searches: bisection over one knob's values, Optuna over several knobs. Each returns the settings to
validate in order: the fastest that met the target on the tuning set, then safer ones."""

from __future__ import annotations

from typing import Callable

from ..config import ConfigError
from .knobs import Knob, Space


def bisect(count: int, passes: Callable[[int], bool]) -> int:
    """The last index of `count` values (safest first) that passes, assuming passing is monotone: those
    before it pass, those after it fail. -1 when none passes. About log2(count) calls of `passes`."""
    low, high = -1, count  # low passes (or is the uncached run), high fails (or lies past the end)
    while high - low > 1:
        middle = (low + high) // 2
        if passes(middle):
            low = middle
        else:
            high = middle
    return low


def bisect_knob(knob: Knob, evaluate: Callable[[dict], dict], passes: Callable[[dict], bool], safer: int) -> list[dict]:
    """Settings {knob.key: value}: the fastest value that passes on the tuning set, then up to `safer` safer ones."""
    def setting(index):
        return {knob.key: knob.values[index]}

    chosen = bisect(len(knob.values), lambda index: passes(evaluate(setting(index))))
    return [setting(index) for index in range(chosen, max(chosen - safer - 1, -1), -1)]


def optuna_search(space: Space, evaluate: Callable[[dict], dict], passes: Callable[[dict], bool],
                  trials: int, safer: int, seed: int = 0) -> list[dict]:
    """Optuna's TPE sampler minimises the cost (blocks run per call) with the target as a constraint. The
    settings returned: the cheapest that passed, then the passing ones with more margin, cheapest first.
    Trials are seeded and their figures deterministic, so a resumed search asks for the same settings again."""
    try:
        import optuna
    except ImportError:
        raise ConfigError("policies with several knobs (dbcache) are searched with Optuna: pip install -e '.[tune]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, trials))
    study = optuna.create_study(direction="minimize", sampler=sampler)
    for start in space.starts():
        study.enqueue_trial(start)
    passing = []

    def objective(trial):
        setting = space.suggest(trial)
        figures = evaluate(setting)
        trial.set_constraint("target", figures["shortfall"])
        if passes(figures):
            passing.append((figures["cost"], -figures["shortfall"], setting))
        return figures["cost"]

    study.optimize(objective, n_trials=trials)
    settings, margin = [], float("-inf")
    for _, their_margin, setting in sorted(passing, key=lambda item: (item[0], -item[1])):
        if their_margin > margin and setting not in settings:  # each fallback with more margin than the one before
            settings.append(setting)
            margin = their_margin
    return settings[: safer + 1]
