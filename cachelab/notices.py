"""Quiet third-party output that is not the user's business (verbose=true keeps it): transformers' and
diffusers' info notices and warnings (e.g. image processors that would prefer torchvision) and their
weight-loading progress bars. Errors still print."""

from __future__ import annotations


def silence_notices() -> None:
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.set_verbosity_error()
        library.disable_progress_bar()
