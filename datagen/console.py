"""What the two command lines (`datagen`, `python -m ormbg.*`) share: user-facing errors, option parsing, logging.

Light on purpose: `datagen --help` imports it, so nothing here imports numpy, OpenCV or torch at module level.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import MISSING, field
from typing import Any

import click

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RecordedCommand(click.Command):
    """A command that keeps the arguments it was given (`ctx.meta["argv"]`), for `command_line`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["argv"] = list(args)
        return super().parse_args(ctx, args)


class ConfigCommand(RecordedCommand):
    """A command whose options are made from the fields of a stage's config dataclass (`config="module:Class"`),
    each with its default and help text written once, in the dataclass (`option`). The class is imported the first
    time the command's parameters are needed (parsing or --help of that command), so `datagen --help` stays
    instant. Parameters declared on the function (arguments, options that are not config fields) come first; every
    command gets -v/-q."""

    def __init__(self, *args: Any, config: str | None = None, **kwargs: Any):
        self._config, self._generated = config, True
        super().__init__(*args, **kwargs)
        logging_options()(self)
        self._generated = config is None

    @property
    def params(self) -> list[click.Parameter]:
        if not self._generated:
            self._generated = True
            before_logging = len(self._params) - 2  # -v and -q, added last in __init__, stay last
            self._params[before_logging:before_logging] = config_options(
                load_config_class(self._config or ""), {param.name for param in self._params}
            )
        return self._params

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._params = value


class RecordedGroup(click.Group):
    """A group whose commands are ConfigCommands (RecordedCommands without `config=`)."""

    command_class = ConfigCommand


def load_config_class(spec: str) -> type:
    """The class a spec names: `datagen.synth:SynthConfig` -> SynthConfig."""
    import importlib

    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def option(default: Any = MISSING, help: str = "", *, factory: Any = MISSING, **click_options: Any) -> Any:
    """A config dataclass field that is also a command-line option of the stage's command (ConfigCommand): the
    default lives here, once. `click_options` are click.Option keywords (`type`, `multiple`, `metavar`, ...) plus
    `flags` (the option's names; default `--field-name`) and `cli_default` (the option's default where the field's
    is built from it); the field's name decides the shared ones (`_shared`)."""
    metadata = {"help": help, "click": click_options}
    if factory is not MISSING:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


DATA_ROOT = "datasets"  # where stages write by default: datasets/<stage or source>
SPLITS = ("train", "validation", "test")
DTYPES = ("auto", "fp16", "bf16", "fp32")


class SizeType(click.ParamType):
    """WxH or a side (a square): '768x1024' -> (768, 1024) as (width, height)."""

    name = "WxH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        try:
            parts = [int(part) for part in str(value).lower().split("x")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            self.fail(f"{value!r}: give a side (1024) or WxH (768x1024)", param, ctx)
        return (parts[0], parts[-1])


SIZE = SizeType()


def _shared() -> dict[str, dict[str, Any]]:
    """The options with one meaning on every command that has them, by config field name; a field's own help is
    put before the shared text (or replaces it where the shared one is empty)."""
    from pathlib import Path

    from datagen.cluster import HELP as RAY_HELP
    from datagen.cluster import LOCAL

    return {
        "out": {"flags": ("-o", "--out"), "type": click.Path(file_okay=False, path_type=Path), "help": ""},
        "n": {"flags": ("-n", "--n"), "type": click.IntRange(min=1), "help": ""},
        "workers": {"flags": ("-w", "--workers"), "type": click.IntRange(min=1), "help": "Worker processes."},
        "batch_size": {"flags": ("-b", "--batch-size"), "type": click.IntRange(min=1), "help": ""},
        "seed": {"type": int, "help": "Sample i draws from (seed, i)."},
        "shard": {
            "type": str,
            "metavar": "I/K",
            "help": "I/K: only the items with index % K == I (shards can share one output directory)  [default: "
            "from the launcher's RANK/WORLD_SIZE (accelerate launch, torchrun), else 0/1].",
        },
        "device": {
            "help": "auto, cpu, cuda, cuda:N or mps (auto: the GPU, this process's own under a launcher; else "
            "MPS, else the CPU)."
        },  # fmt: skip
        "dtype": {"type": click.Choice(DTYPES), "help": "auto: fp16 on a GPU, fp32 on the CPU."},
        "splits": {
            "flags": ("--split",),
            "multiple": True,
            "type": click.Choice(SPLITS),
            "help": "Only this split (repeatable)  [default: every split].",
        },
        "overwrite": {"help": "Start over instead of resuming."},
        "offline": {"help": "Use only the local Hugging Face cache or local files."},
        "progress": {"flags": ("--progress/--no-progress",), "help": "Show a progress bar on stderr."},
        "ray": {
            "flags": ("--ray",),
            "is_flag": False,
            "flag_value": LOCAL,
            "metavar": "[ADDRESS]",
            "help": RAY_HELP,
        },
        "focus": {
            "type": click.Path(exists=True, dir_okay=False, path_type=Path),
            "help": "(a `datagen slices EVAL.json --json SLICES.json` file), clipped to [0.5, 4] (docs/focus.md).",
        },
    }


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(click type, multiple) of a field's annotation: bool, int, float, str, Path, tuples of them, `X | None`."""
    import types
    import typing
    from pathlib import Path

    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        if len(args) == 1 or set(args) == {str, Path}:
            return _click_type(args[0])
    if typing.get_origin(annotation) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return _click_type(args[0])[0], True
    if annotation is Path:
        return click.Path(path_type=Path), False
    if annotation in (int, float, str, bool):
        return annotation, False
    raise TypeError(f"no command-line type for {annotation!r}: give type= in the field's option()")


def config_options(config_class: type, declared: set[str | None]) -> list[click.Option]:
    """click Options for every `option()` field of `config_class` that the command does not declare itself."""
    import dataclasses
    import typing

    hints, shared, options = typing.get_type_hints(config_class), _shared(), []
    for item in dataclasses.fields(config_class):
        if "click" not in item.metadata or item.name in declared:
            continue
        kwargs = {**shared.get(item.name, {}), **item.metadata["click"]}
        own, common = item.metadata["help"], shared.get(item.name, {}).get("help", "")
        kwargs["help"] = " ".join(filter(None, [own, common])) if item.name == "focus" else own or common
        flags = kwargs.pop("flags", ("--" + item.name.replace("_", "-"),))
        if "cli_default" in kwargs:  # a field whose value the option's only builds (e.g. thresholds from a number)
            kwargs["default"] = kwargs.pop("cli_default")
        elif item.default is not MISSING:
            kwargs["default"] = item.default
        else:
            kwargs["required"] = True
        if "type" not in kwargs and "is_flag" not in kwargs:
            kind, multiple = _click_type(hints[item.name])
            if kind is bool:
                kwargs.setdefault("is_flag", True)
            else:
                kwargs["type"] = kind
                kwargs["multiple"] = kwargs.get("multiple", multiple)
        default = kwargs.get("default")
        if kwargs.get("type") is SIZE and isinstance(default, tuple):
            kwargs["default"] = "x".join(map(str, default))
        if kwargs.get("multiple") and default:
            kwargs["show_default"] = ", ".join(map(str, default))
        kwargs.setdefault("show_default", default is not None and not isinstance(default, bool) and default != ())
        options.append(click.Option([*flags, item.name], **kwargs))
    return options


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
