"""What the two command lines (`datagen`, `python -m ormbg.*`) share: user-facing errors, option parsing, logging.

Light on purpose: `datagen --help` imports it, so nothing here imports numpy, OpenCV or torch at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RecordedCommand(click.Command):
    """A command that keeps the arguments it was given (`ctx.meta["argv"]`), for `command_line`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)


class RecordedGroup(click.Group):
    """A group whose commands are RecordedCommands."""

    command_class = RecordedCommand


def command_line(ctx: click.Context | None = None) -> str:
    """The command as run, for run.json: `datagen compose --fg ...`, from click's context (options of the group
    itself, such as `datagen -v`, are not part of it; sys.argv would give `datagen compose compose ...` then)."""
    import shlex

    ctx = ctx or click.get_current_context()
    words = [ctx.info_name or ""]
    parent = ctx.parent
    while parent is not None:
        words.insert(0, parent.info_name or "")
        parent = parent.parent
    return " ".join(["datagen", *words[1:], *map(shlex.quote, ctx.meta.get("argv", []))])


@contextmanager
def user_errors() -> Iterator[None]:
    """The errors a user can fix (`datagen.errors.UserError`: bad options or inputs, missing weights, a full,
    read-only or busy output) become a one-line CLI error with exit status 1; anything else (a bug) propagates with
    its traceback. Every command of datagen and ormbg uses it."""
    try:
        yield
    except Exception as error:
        from datagen.errors import UserError

        if isinstance(error, UserError):
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


LEVELS = [logging.WARNING, logging.INFO, logging.DEBUG]


def setup_logging(verbose: int = 0, quiet: bool = False, base: int = logging.WARNING) -> None:
    """Configure logging in an entry point: `base` by default, each -v one level more (info, debug), -q errors only."""
    start = LEVELS.index(base) if base in LEVELS else 0
    level = logging.ERROR if quiet else LEVELS[min(len(LEVELS) - 1, start + verbose)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def logging_options(base: int = logging.WARNING) -> Callable:
    """Decorator: `-v/--verbose` (repeatable) and `-q/--quiet` on a command, configuring logging as they are parsed.

    The counts live in the click context's shared `meta`, so `datagen -v compose` and `datagen compose -v` agree.
    """

    def remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        key = param.name or ""
        ctx.meta[key] = max(ctx.meta.get(key, 0), int(value or 0))
        setup_logging(ctx.meta.get("verbose", 0), bool(ctx.meta.get("quiet", 0)), base)

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "-v", "--verbose", count=True, expose_value=False, callback=remember, help="More log output (-v, -vv)."
        )(command)
        return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=remember, help="Errors only.")(
            command
        )

    return decorate


def ray_option(command: Callable) -> Callable:
    """Decorator: `--ray [ADDRESS]` (a local Ray instance without a value), the same on every per-sample stage."""
    from datagen.cluster import HELP, LOCAL

    return click.option("--ray", is_flag=False, flag_value=LOCAL, default=None, metavar="[ADDRESS]", help=HELP)(command)


def focus_option(how: str) -> Callable:
    """Decorator: `--focus SLICES.json` (a `datagen slices --json` file) on synth and compose; `how` says how the
    stage leans on it."""
    from pathlib import Path

    return click.option(
        "--focus",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        default=None,
        help=f"A slices file (`datagen slices EVAL.json --json SLICES.json`): {how}, clipped to [0.5, 4] "
        "(docs/focus.md).",
    )
