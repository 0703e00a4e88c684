"""A Weights & Biases run per job: offline unless W&B is configured, finished on exit."""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

from .images import sample_grid
from .results import TRACE_COLUMNS, finite, trace_rows

log = logging.getLogger(__name__)


def wandb_configured() -> bool:
    """Whether the user set W&B up (an API key in the environment or in ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextlib.contextmanager
def wandb_run(logger, *, config: dict, name: str, group: str | None, directory: Path, quiet: bool, verbose: bool = False):
    """A W&B run for one job (None with logger=none); offline unless W&B is configured; finished on exit.

    W&B's own messages (banner, run summary, sync hints) show only when ``verbose``; otherwise one line
    says where the run went (none when ``quiet``)."""
    if logger.name != "wandb":
        yield None
        return
    import wandb

    directory.mkdir(parents=True, exist_ok=True)
    mode = logger.mode or os.environ.get("WANDB_MODE") or ("online" if wandb_configured() else "offline")
    def start(mode):
        return wandb.init(
            project=logger.project, entity=logger.entity, group=logger.group or group, name=name, tags=list(logger.tags),
            config=config, dir=str(directory), mode=mode,
            settings=wandb.Settings(silent=not verbose, console="off", init_timeout=30),
        )
    try:
        run = start(mode)
    except Exception as error:  # an unreachable or misconfigured server must not cost the job
        if mode != "online":
            raise
        log.warning("W&B online run failed to start (%s); logging offline instead", error)
        run = start("offline")
    try:
        yield run
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    if not (verbose or quiet or run.disabled):
        print(saved_where(run), flush=True)


def saved_where(run) -> str:
    """One line: the run's page online, or its folder and how to upload it offline."""
    if run.offline:
        folder = Path(run.dir).parent
        return f"W&B: run saved offline in {folder} (upload: wandb sync {folder})"
    return f"W&B: run saved at {run.url}"


def log_outcome(run, result: dict, outcome) -> None:
    import wandb

    run.summary.update(scalars(result))
    rows = trace_rows(outcome.traces)
    run.log({
        "samples": wandb.Image(sample_grid(outcome.reference, outcome.cached), caption="reference | cached | |difference|"),
        "trace": wandb.Table(columns=list(TRACE_COLUMNS), data=rows),
    })


def scalars(result: dict) -> dict:
    """The result's numbers and names, nested dicts flattened with '/', non-finite numbers as None."""
    flat = {}
    for key, value in result.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": v for k, v in scalars(value).items()})
        elif isinstance(value, (int, float, str, bool)) or value is None:
            flat[key] = finite(value)
    return flat
