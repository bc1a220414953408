"""The `datagen` command line: a thin skin over the library (each command is one library call).

The options of the stages are made from their config dataclasses (`datagen.console.ConfigCommand`): every default
and its help text is written once, in the library. Heavy libraries (torch, diffusers, datasets) are imported inside
commands, so `datagen --help` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from datagen import __version__
from datagen.console import CONTEXT_SETTINGS, SPLITS, RecordedGroup, command_line, logging_options, user_errors


@click.group(cls=RecordedGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="datagen")
@logging_options()
def cli() -> None:
    """Make exactly matted training data for background removal.

    \b
    Typical flow (each writes a dataset directory, see docs/FORMAT.md):
      datagen synth --n 10000            transparent humans        -> datasets/synth
      datagen compose                    composites + exact alpha  -> datasets/composites
      datagen import p3m /data/P3M-10k   real matting data sets    -> datasets/p3m
      datagen inspect DIR                validate and summarise a dataset directory
      datagen slices EVAL.json           error by person attribute and compose family (then synth --focus)
      datagen preview DIR -o sheet.png   contact sheet to look at
      datagen push DIR user/name         publish to the Hugging Face Hub
    """


@cli.command(config="datagen.synth:SynthConfig")
def synth(**options) -> None:
    """Generate transparent people (RGBA) with LayerDiffuse on SDXL, or people-free backgrounds.

    Each sample's prompt and noise come from (seed, index); people failing the quality thresholds (coverage,
    stray components, haze, a cut-off head) are generated again with the next seed and counted in run.json.
    Several GPUs: `accelerate launch -m datagen synth ...` (each process takes its share of the indices).
    """
    from datagen.synth import SynthConfig, run_synth

    with user_errors():
        click.echo(run_synth(SynthConfig(**options), command=command_line()).summary())


@cli.command("import", config="datagen.importers:ImportConfig")
@click.argument("kind")
@click.argument("src", type=click.Path(exists=True, file_okay=False))
def import_cmd(kind: str, src: str, **options) -> None:
    """Import a matting data set at SRC into a dataset directory.

    \b
    KIND and the layout it expects (pairs matched by file stem):
      p3m     P3M-10k: train/{blurred_image,mask}; [validation/]P3M-500-{P,NP}/  -> train, test
      ppm100  PPM-100: image/, matte/ (JPEG mattes, values kept)                  -> test
      aim500  AIM-500: original/, mask/, trimap/, aim_category_type.json         -> test
      dis5k   DIS5K: DIS-TR, DIS-VD, DIS-TE1..4, each im/ + gt/                  -> train, validation, test
      am2k    AM-2k: {train,validation}/{original,mask}, validation/trimap       -> train, validation
      folder  RGBA cut-outs (a foreground pool), or --images GLOB --alphas GLOB  -> --split

    8-bit RGB JPEGs without EXIF rotation are copied byte for byte; other images become JPEG q95. Mattes
    become one-channel 8-bit PNGs, soft values kept. Bad pairs are skipped and listed with their reason in
    OUT/skipped.jsonl; a rerun resumes.
    """
    from datagen.importers import ImportConfig, run_import

    with user_errors():
        click.echo(run_import(kind, src, ImportConfig(**options), command=command_line()).summary())


@cli.command(config="datagen.compose.config:ComposeConfig")
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML of augmentation fields replacing the preset's (see docs/compose.md).",
)
def compose(config_file, **options) -> None:
    """Composite people onto backgrounds; the ground truth is the person's exact alpha.

    Each sample draws its parameters from (seed, index): background crop, defocus and colour; placement
    (scale, translation, rotation, flip, truncation at the frame edges); lighting harmonised to the
    background; an optional shadow (never part of the alpha); optional occluders and extra people; camera
    degradations. All of them are written into the sample's metadata (`params`). A rerun resumes.
    """
    from datagen.compose.config import ComposeConfig, load_augment
    from datagen.compose.run import run_compose

    with user_errors():
        config = ComposeConfig(augment=load_augment(options["preset"], config_file), **options)
        click.echo(run_compose(config, command=command_line()).summary())


@cli.command(config="datagen.foreground:ForegroundConfig")
@click.argument("root", metavar="DIRECTORY", type=click.Path(exists=True, file_okay=False, path_type=Path))
def foreground(**options) -> None:
    """Estimate the foreground colour of DIRECTORY's photos: fg/<id>.png for every photo row (image + alpha).

    In every soft pixel (hair above all) a photo holds its old background; `datagen compose` needs the person's
    own colour F (I = aF + (1 - a)B), or the person carries a halo of the old background onto the new one. The
    fg/ file is F with the row's own alpha; rows gain foreground_file_name and foreground_method once every row of
    the split has its file. A rerun resumes; shards share one directory.
    """
    from datagen.foreground import ForegroundConfig, run_foreground

    with user_errors():
        click.echo(run_foreground(ForegroundConfig(**options), command=command_line()).summary())


@cli.command(config="datagen.refine:RefineConfig")
@click.argument("root", metavar="DIRECTORY", type=click.Path(exists=True, file_okay=False, path_type=Path))
def refine(**options) -> None:
    """Turn DIRECTORY's coarse mattes (binary masks) into soft ones with ViTMatte.

    A trimap is drawn from each mask (an unknown band around its edge, its width scaled with the person), ViTMatte
    fills the band, and outside it the alpha stays the mask's exact 0 or 255. Nothing is lost: the original mask
    is kept in mask/, the trimap used in refine_trimap/ (a dataset's own trimap/ is never touched), and each row
    records alpha_source, refine_model and refine_band_px. Mattes that are already soft are skipped and counted
    unless --force. fg/ files estimated from an old alpha are deleted: run `datagen foreground` again. A rerun
    resumes.
    """
    from datagen.refine import RefineConfig, run_refine

    with user_errors():
        click.echo(run_refine(RefineConfig(**options), command=command_line()).summary())


@cli.command(config="datagen.relight:RelightConfig")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
def relight(**options) -> None:
    """Relight the people of SRC's photo rows with IC-Light; the ground truth stays exact.

    Each person (on grey, with the background it stands on for fbc) is relit from a seeded lighting prompt, checked
    against its alpha (IC-Light regenerates every pixel: a moved or reshaped person is rejected and drawn again), and
    composited with the unchanged alpha over its background. The alpha files are SRC's, byte for byte. A rerun
    resumes; `accelerate launch -m datagen relight ...` spreads it over GPUs.
    """
    from datagen.relight import RelightConfig, run_relight

    with user_errors():
        click.echo(run_relight(RelightConfig(**options), command=command_line()).summary())


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--list", "list_all", is_flag=True, help="Print the rejected samples (id and reason).")
@click.option("--reject", multiple=True, help="Reject this sample id (repeatable).")
@click.option("--undo", multiple=True, help="Take back the rejection of this sample id (repeatable).")
@click.option("--reason", default=None, help="Why (recorded with --reject)  [default: rejected by review].")
def review(**options) -> None:
    """Rejections of DIRECTORY's samples, kept in DIRECTORY/rejected.jsonl.

    A rejected sample stays on disk and in metadata.jsonl; every reader (compose pools, training, evaluation,
    push, preview, inspect) leaves it out. A rejection is one appended line ({"id", "reason", "time"}); an undo is
    a second line for the same id. Nothing is ever deleted.
    """
    from datagen.records import review as review_dataset

    with user_errors():
        given = {key: value for key, value in options.items() if value is not None}  # the library's defaults
        click.echo("\n".join(review_dataset(given.pop("directory"), **given)))


@cli.command(config="datagen.hub:PushConfig")
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
def push(**options) -> None:
    """Publish DIRECTORY to the Hugging Face Hub as the dataset REPO_ID (user/name).

    Each split becomes Parquet shards with Image columns (image, alpha, foreground, trimap where present) and
    the metadata columns; a dataset card (licence: the most restrictive of the sources) and a preview go along.
    Shards are written one at a time into a folder beside DIRECTORY and uploaded --keep-shards at a time; after a
    failure the folder stays and a rerun goes on from the shards already uploaded, without encoding them again.
    """
    from datagen.hub import PushConfig
    from datagen.hub import push as push_dataset

    with user_errors():
        config = PushConfig(**options)
        files = push_dataset(config)
    where = config.dry_run or f"https://huggingface.co/datasets/{config.repo_id}"
    click.echo(f"{'wrote' if config.dry_run else 'pushed'} {len(files)} files -> {where}")


@cli.command()
@click.argument("repo_id")
@click.option("-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Dataset directory to write  [default: datasets/<name>].")  # fmt: skip
@click.option("--split", default=None, help="Only this split of the Hub dataset (its own name).")
@click.option(
    "--alpha-column",
    default=None,
    help="Image column holding the matte  [default: the first of alpha, mask, matte, gt, label; else the alpha "
    "channel of an RGBA image column].",
)
@click.option(
    "--split-map",
    multiple=True,
    help="NAME=SPLIT: where a Hub split lands (repeatable). Without it val/valid/dev -> validation and any "
    "unknown name -> test, so nothing unknown feeds training.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def pull(repo_id: str, out: Path | None, **options) -> None:
    """Download the Hub dataset REPO_ID (image + matte columns, or an RGBA image column) into a dataset directory.

    REPO_ID may also be a local folder holding such a dataset (for example a `datagen push --dry-run` output).
    Rows are streamed to disk; a rerun resumes.
    """
    from datagen.console import DATA_ROOT
    from datagen.hub import pull as pull_dataset

    with user_errors():
        out = out or Path(DATA_ROOT) / repo_id.rstrip("/").split("/")[-1]
        click.echo(pull_dataset(repo_id, out, **options, command=command_line()).summary())


def _check_folder(directory: str) -> None:
    """DIRECTORY of a command that reads pushed data too: a folder, or hf://USER/NAME."""
    from datagen.records import HUB_SCHEME

    if not directory.startswith(HUB_SCHEME) and not Path(directory).is_dir():
        raise click.BadParameter(f"{directory} is not a folder (nor hf://USER/NAME)", param_hint="DIRECTORY")


@cli.command()
@click.argument("directory")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of text.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Decoding processes.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def inspect(directory: str, as_json: bool, workers: int, progress: bool) -> None:
    """Validate DIRECTORY against the dataset contract and summarise it.

    DIRECTORY is a dataset directory, a folder of the Parquet shards that `datagen push` writes (`push --dry-run`
    stages them), or a Hub dataset hf://USER/NAME, read in place (nothing downloaded to disk). Decodes every image,
    alpha, foreground and trimap; reports counts per split and source, image sizes, alpha statistics and every
    problem with the file (or shard and row) it concerns. Exit status 1 when the contract is violated (errors), 0
    otherwise (warnings such as orphan files do not fail).
    """
    from datagen.inspect import inspect_dataset

    _check_folder(directory)
    with user_errors():
        report = inspect_dataset(directory, workers=workers, progress=progress and not as_json)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.format_text())
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--min-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="Slices with fewer samples are listed apart, never ranked.")  # fmt: skip
@click.option("--top", type=click.IntRange(min=1), default=None, help="Print only the N worst slices.")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write every slice as JSON (what `synth --focus` and `compose --focus` read).",
)
@click.option("--markdown", is_flag=True, help="Print a Markdown table.")
def slices(report: Path, min_n: int, top: int | None, json_path: Path | None, markdown: bool) -> None:
    """Error by slice: join REPORT (`python -m ormbg.evaluate ... --json REPORT`) with the rows it scored.

    Per person attribute (a synth row's, or a composite's foreground's), compose family (scale, occluders, extra
    people, lighting shift, shadow, defocus, degradations, photo source), source and subset: n, mean MAE (and the
    other measures) and the ratio to the overall mean MAE, worst first. Run it where evaluate ran (the report names
    its data by path).
    """
    from datagen.io import write_json
    from datagen.slices import format_slices, slice_report

    with user_errors():
        result = slice_report(report, min_n)
        if json_path:
            write_json(json_path, result)
    click.echo(format_slices(result, markdown=markdown, top=top), nl=False)


@cli.command()
@click.argument("directory")
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True, help="Contact sheet PNG to write.")
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=16, show_default=True, help="Samples (rows).")
@click.option(
    "--split", type=click.Choice(SPLITS), default=None, help="Split to draw from  [default: the first present]."
)
@click.option("--seed", type=int, default=0, show_default=True, help="Which samples are drawn.")
@click.option("--tile-px", type=click.IntRange(min=32), default=256, show_default=True, help="Tile side.")
def preview(directory: str, out: str, **options) -> None:
    """Write a contact sheet of DIRECTORY: one row per sample.

    Rows show image | alpha | cutout over a checkerboard; foreground pools show foreground over a
    checkerboard | alpha. DIRECTORY is a dataset directory, a folder of the Parquet shards that `datagen push`
    writes, or a Hub dataset hf://USER/NAME (only the row groups of the drawn rows are read).
    """
    from datagen.preview import write_preview

    _check_folder(directory)
    with user_errors():
        rows = write_preview(directory, out, **options)
    click.echo(f"wrote {out} ({rows} samples)")
