"""What the two command lines (`datagen`, `python -m ormbg.*`) share: user-facing errors, option parsing, logging.

Light on purpose: `datagen --help` imports it, so nothing here imports numpy, OpenCV or torch at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@contextmanager
def user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Exceptions of `kinds` (bad arguments or inputs, whose messages say what to do), an output that cannot be
    written (OutputError: disk full, read-only) and a busy output (BusyError) become a one-line CLI error with exit
    status 1; anything else propagates with its traceback. Every command of datagen and ormbg uses it."""
    try:
        yield
    except Exception as error:
        from datagen.io import OutputError
        from datagen.records import BusyError

        if isinstance(error, (*kinds, OutputError, BusyError)):
            raise click.ClickException(str(error)) from error
        raise


def parse_shard(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    """'I/K' -> (I, K) with 0 <= I < K."""
    try:
        index, count = (int(part) for part in value.split("/"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not I/K, for example 0/4") from None
    if not 0 <= index < count:
        raise click.BadParameter(f"{value!r}: need 0 <= I < K")
    return index, count


def setup_logging(verbose: int = 0, quiet: bool = False) -> None:
    """Configure logging once, in an entry point: warnings by default, -v info, -vv debug, -q errors only."""
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
