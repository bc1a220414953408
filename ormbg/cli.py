"""The `ormbg` command: `ormbg train|evaluate|infer|export ...`, the same commands as `python -m ormbg.<name>`.

Each subcommand is imported when it runs, so `ormbg --help` does not import torch.
"""

from __future__ import annotations

import importlib

import click

from datagen import __version__
from datagen.console import CONTEXT_SETTINGS

COMMANDS = {
    "train": "Train ORMBG on a weighted mix of dataset directories.",
    "evaluate": "Score a checkpoint, an ONNX export or a folder of mattes on dataset directories.",
    "infer": "Write RGBA cutouts, alpha mattes or composites for image files and folders.",
    "export": "Export ORMBG weights to ONNX and check the export against PyTorch.",
    "app": "Remove backgrounds in a browser and review datasets (Gradio; pip install -e .[app]).",
}


class LazyGroup(click.Group):
    """Subcommands are the `main` of `ormbg.<name>`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(f"ormbg.{name}").main

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(list(COMMANDS.items()))


@click.group(cls=LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="ormbg")
def cli() -> None:
    """ORMBG: train, evaluate, run and export the background-removal model (`ormbg COMMAND --help` for each)."""
