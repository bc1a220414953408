"""The `datagen` command line: a thin skin over the library (each command is one library call).

Heavy libraries (torch, diffusers, datasets) are imported inside commands, so `datagen --help` is instant.
"""

from __future__ import annotations

import json
import logging
import sys

import click

from datagen import __version__

DATA_ROOT = "datasets"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="datagen")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Make exactly matted training data for background removal.

    \b
    Typical flow (each writes a dataset directory, see docs/FORMAT.md):
      datagen synth --n 10000            transparent humans        -> datasets/synth
      datagen compose                    composites + exact alpha  -> datasets/composites
      datagen import p3m /data/P3M-10k   real matting data sets    -> datasets/p3m
      datagen inspect DIR                validate and summarise a dataset directory
      datagen preview DIR -o sheet.png   contact sheet to look at
      datagen push DIR user/name         publish to the Hugging Face Hub
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _not_built(name: str, issue: int, what: str) -> click.Command:
    """A command whose stage has not landed yet: it says so in one line and exits 1, never pretends."""

    @click.pass_context
    def command(ctx: click.Context) -> None:
        raise click.ClickException(f"`datagen {name}` is not built yet (issue #{issue}: {what}).")

    return click.Command(
        name,
        callback=command,
        help=f"{what[0].upper()}{what[1:]}. Not built yet: issue #{issue}.",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )


cli.add_command(_not_built("synth", 5, "transparent humans with LayerDiffuse on SDXL, and backgrounds"))
cli.add_command(_not_built("compose", 4, "composite foregrounds onto backgrounds with exact alpha"))
cli.add_command(_not_built("import", 3, "import P3M-10k, PPM-100, AIM-500, DIS5K, AM-2k or a folder"))
cli.add_command(_not_built("push", 8, "publish a dataset directory to the Hugging Face Hub"))
cli.add_command(_not_built("pull", 8, "download a Hub dataset into a dataset directory"))


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@click.option(
    "-w",
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes that decode files.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def inspect(directory: str, as_json: bool, workers: int, progress: bool) -> None:
    """Validate DIRECTORY against the dataset contract and summarise it.

    Decodes every image, alpha, foreground and trimap; reports counts per split and source, image sizes,
    alpha statistics and every problem with the file it concerns. Exit status 1 when the contract is
    violated (errors), 0 otherwise (warnings such as orphan files do not fail).
    """
    from datagen.inspect import inspect_dataset

    report = inspect_dataset(directory, workers=workers, progress=progress and not as_json)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_text())
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True, help="Contact sheet PNG to write.")
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples (rows).")
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default=None,
    help="Split to draw from  [default: the first present].",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Which samples are drawn.")
@click.option("--tile-px", type=click.IntRange(min=32), default=256, show_default=True, help="Tile side.")
def preview(directory: str, out: str, n: int, split: str | None, seed: int, tile_px: int) -> None:
    """Write a contact sheet of DIRECTORY: one row per sample.

    Rows show image | alpha | cutout over a checkerboard; foreground pools show foreground over a
    checkerboard | alpha.
    """
    from datagen.preview import write_preview

    try:
        rows = write_preview(directory, out, n=n, split=split, seed=seed, tile_px=tile_px)
    except ValueError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"wrote {out} ({rows} samples)")
