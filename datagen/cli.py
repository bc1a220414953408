"""The `datagen` command line: a thin skin over the library (each command is one library call).

Heavy libraries (torch, diffusers, datasets) are imported inside commands, so `datagen --help` is instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from datagen import __version__
from datagen.console import (
    CONTEXT_SETTINGS,
    RecordedGroup,
    command_line,
    focus_option,
    logging_options,
    parse_shard,
    ray_option,
    user_errors,
)
from datagen.errors import InputError

DATA_ROOT = "datasets"


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


@cli.command()
@logging_options()
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Samples to make.")
@click.option(
    "--kind",
    type=click.Choice(["person", "background"]),
    default="person",
    show_default=True,
    help="Transparent people (a foreground pool) or people-free backgrounds.",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Dataset directory  [default: {DATA_ROOT}/synth, or {DATA_ROOT}/backgrounds].",
)
@click.option(
    "--backend",
    type=click.Choice(["layerdiffuse", "procedural"]),
    default="layerdiffuse",
    show_default=True,
    help="procedural: simple CPU figures for smoke tests and the demo.",
)
@click.option(
    "--model",
    default="stabilityai/stable-diffusion-xl-base-1.0",
    show_default=True,
    help="SDXL Hub id or local folder (photo checkpoints such as RealVisXL give cleaner people).",
)
@click.option(
    "--layerdiffuse",
    default="lllyasviel/LayerDiffuse_Diffusers",
    show_default=True,
    help="Hub repo or local folder holding the LayerDiffuse offset and transparent decoder.",
)
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--guidance", type=float, default=7.0, show_default=True, help="Classifier-free guidance scale.")
@click.option("--size", default="1024x1024", show_default=True, help="WxH (or a side), multiples of 64.")
@click.option(
    "-b",
    "--batch-size",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Images per GPU batch; larger batches are faster per image and need more GPU memory (measured figures: "
    "docs/benchmarks.md).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i draws from (seed, i).")
@click.option("--device", type=click.Choice(["auto", "cuda", "mps", "cpu"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["auto", "fp16", "bf16", "fp32"]), default="auto", show_default=True)
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Prompts file (.txt one per line, or .jsonl with prompt / negative_prompt) instead of the sampler.",
)
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache or local folders.")
@click.option(
    "--shard",
    default=None,
    callback=lambda c, p, v: parse_shard(c, p, v) if v else None,
    help="I/K: make indices with index % K == I  [default: from accelerate's RANK/WORLD_SIZE, else 0/1].",
)
@focus_option("draw each person attribute value in proportion to its error ratio")
@ray_option
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar with images/s.")
def synth(out, size, shard, device, **options) -> None:
    """Generate transparent people (RGBA) with LayerDiffuse on SDXL, or people-free backgrounds.

    Each sample's prompt and noise come from (seed, index); people failing the quality thresholds (coverage,
    stray components, haze, a cut-off head) are generated again with the next seed and counted in run.json.
    Several GPUs: `accelerate launch -m datagen synth ...` (each process takes its share of the indices).
    """
    from datagen.compose.config import parse_size
    from datagen.synth import SynthConfig, run_synth

    default_out = Path(DATA_ROOT) / ("synth" if options["kind"] == "person" else "backgrounds")
    with user_errors():
        config = SynthConfig(out=out or default_out, size=parse_size(size), shard=shard, device=device, **options)
        result = run_synth(config, command=command_line())
    rejected = ", ".join(f"{reason} {n}" for reason, n in result.rejected.most_common()) or "none"
    click.echo(
        f"new {result.new}, already there {result.existing}, failed every attempt {result.failed}, "
        f"rejected attempts: {rejected}; {result.count} in {result.out} ({result.seconds:.1f} s)"
    )


# --split of the stages that edit a dataset in place (foreground, refine)
splits_option = click.option(
    "--split",
    "splits",
    multiple=True,
    type=click.Choice(["train", "validation", "test"]),
    help="Only this split (repeatable)  [default: every split].",
)


def echo_unfinished(result, directory: Path, what: str) -> None:
    """The splits whose rows wait for other shards (or skipped samples), and the skips by reason."""
    for split, n in result.waiting.items():
        click.echo(f"  {split}: {n} rows still {what} (other shards, or skipped): rows not updated yet")
    for reason, count in result.skipped.items():
        click.echo(f"  skipped {count:>6}  {reason}  (each in {directory / 'skipped.jsonl'})")


IMPORT_KINDS = ["p3m", "ppm100", "aim500", "dis5k", "am2k", "folder"]


@cli.command("import")
@logging_options()
@click.argument("kind", type=click.Choice(IMPORT_KINDS))
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help=f"Dataset directory to write  [default: {DATA_ROOT}/<kind>].",
)
@click.option(
    "-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes converting pairs."
)
@ray_option
@click.option("--keep-png", is_flag=True, help="Keep lossless (PNG) source images as PNG instead of JPEG q95.")
@click.option(
    "--jpeg-quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="Quality of re-encoded images (8-bit RGB JPEG sources are copied byte for byte).",
)
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming.")
@click.option(
    "--shard",
    default="0/1",
    callback=parse_shard,
    show_default=True,
    help="I/K: convert only every K-th pair from the I-th (for Slurm arrays and the like).",
)
@click.option("--images", default=None, help="folder: glob of images under SRC, e.g. 'photos/*.jpg'.")
@click.option("--alphas", default=None, help="folder: glob of mattes under SRC, paired with images by stem.")
@click.option(
    "--split",
    type=click.Choice(["train", "validation", "test"]),
    default="train",
    show_default=True,
    help="folder: the split to write.",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.05,
    show_default=True,
    help="For data sets without a validation split of their own (p3m, folder): the share of train pairs held out "
    "as split validation, chosen by a hash of each file name (stable when files are added or the run is sharded). "
    "Checkpoints are selected on it, never on the test benchmarks.",
)
@click.option(
    "--foreground",
    "foreground",
    type=click.Choice(["blur-fusion", "ml"]),
    default=None,
    help="Also estimate each photo's foreground colour into fg/ (as `datagen foreground` does), for compose.",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def import_cmd(kind: str, src: str, out: str | None, **options) -> None:
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
        config = ImportConfig(out=Path(out or Path(DATA_ROOT) / kind), **options)
        result = run_import(kind, src, config, command=command_line())
    click.echo(f"{'split':<22}{'samples':>9}")
    for name, count in result.counts.items():
        click.echo(f"{name:<22}{count:>9}")
    click.echo(
        f"new {result.new}, already there {result.existing}, skipped {sum(result.skipped.values())}"
        f" in {result.seconds:.1f} s -> {result.out}"
    )
    for reason, count in result.skipped.most_common():
        click.echo(f"  skipped {count:>6}  {reason}")
    if result.skipped:
        click.echo(f"  (every skip with its path: {result.out / 'skipped.jsonl'})")


@cli.command()
@logging_options()
@click.option(
    "--fg",
    "foregrounds",
    multiple=True,
    help="Foreground pool DIR[:SPLIT]: a dataset directory (fg/ rows; photo rows need `datagen foreground DIR` "
    "first) or a folder of RGBA images. Without :SPLIT every split but test (benchmarks are used only when "
    f"named). Repeatable  [default: {DATA_ROOT}/synth].",
)
@click.option(
    "--bg",
    "backgrounds",
    multiple=True,
    help="Backgrounds DIR[:SPLIT]: a dataset directory (every split but test unless named) or any folder of "
    f"images. Repeatable  [default: {DATA_ROOT}/backgrounds].",
)
@click.option(
    "--raw-foreground",
    is_flag=True,
    help="Use photo rows without fg/ as they are: their soft pixels keep the old background (a halo).",
)
@click.option(
    "--occluders",
    type=click.Path(path_type=Path),
    default=None,
    help="RGBA pool of occluders  [default: procedural shapes].",
)
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=1000, show_default=True, help="Composites to make.")
@click.option("--size", default="1024", show_default=True, help="Output size: a square side or WxH.")
@click.option(
    "--preset",
    type=click.Choice(["none", "default", "strong"]),
    default="default",
    show_default=True,
    help="Augmentation strength; none = geometry and the blend only.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML of augmentation fields replacing the preset's (see docs/compose.md).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Sample i draws from (seed, i).")
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Share held out as split validation; one foreground or background never lands in both splits.",
)
@focus_option(
    "each sample keeps one of 8 parameter draws in proportion to the error ratios of its families, person and "
    "attributes"
)
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Render processes.")
@ray_option
@click.option(
    "--shard",
    default="0/1",
    callback=parse_shard,
    show_default=True,
    help="I/K: make only samples with index % K == I (shards can share one output directory).",
)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(DATA_ROOT) / "composites",
    show_default=True,
    help="Dataset directory to write.",
)
@click.option("--overwrite", is_flag=True, help="Start over instead of resuming.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def compose(foregrounds, backgrounds, occluders, size, preset, config_file, **options) -> None:
    """Composite people onto backgrounds; the ground truth is the person's exact alpha.

    Each sample draws its parameters from (seed, index): background crop, defocus and colour; placement
    (scale, translation, rotation, flip, truncation at the frame edges); lighting harmonised to the
    background; an optional shadow (never part of the alpha); optional occluders and extra people; camera
    degradations. All of them are written into the sample's metadata (`params`). A rerun resumes.
    """
    from datagen.compose.config import ComposeConfig, load_augment, parse_size
    from datagen.compose.run import run_compose

    with user_errors():
        config = ComposeConfig(
            foregrounds=tuple(foregrounds) or (f"{DATA_ROOT}/synth",),
            backgrounds=tuple(backgrounds) or (f"{DATA_ROOT}/backgrounds",),
            occluders=occluders,
            size=parse_size(size),
            preset=preset,
            augment=load_augment(preset, config_file),
            **options,
        )
        result = run_compose(config, command=command_line())
    counts = ", ".join(f"{split} {n}" for split, n in result.counts.items())
    click.echo(
        f"new {result.new}, already there {result.existing}, skipped {sum(result.skipped.values())} "
        f"in {result.seconds:.1f} s -> {result.out} ({counts})"
    )
    for reason, count in sorted(result.skipped.items(), key=lambda item: -item[1]):
        click.echo(f"  skipped {count:>6}  {reason}")


@cli.command()
@logging_options()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@splits_option
@click.option(
    "--method",
    type=click.Choice(["ml", "blur-fusion"]),
    default="ml",
    show_default=True,
    help="ml: pymatting's multi-level estimator (the most accurate); blur-fusion: Forte & Pitie's approximation "
    "(OpenCV, faster, less accurate). Both measured in docs/benchmarks.md.",
)
@click.option("-w", "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes.")
@ray_option
@click.option(
    "--shard", default="0/1", callback=parse_shard, show_default=True, help="I/K: every K-th photo row from the I-th."
)
@click.option("--overwrite", is_flag=True, help="Estimate every fg/ file again (this or another --method).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def foreground(directory: Path, splits, **options) -> None:
    """Estimate the foreground colour of DIRECTORY's photos: fg/<id>.png for every photo row (image + alpha).

    In every soft pixel (hair above all) a photo holds its old background; `datagen compose` needs the person's
    own colour F (I = aF + (1 - a)B), or the person carries a halo of the old background onto the new one. The
    fg/ file is F with the row's own alpha; rows gain foreground_file_name and foreground_method once every row of
    the split has its file. A rerun resumes; shards share one directory.
    """
    from datagen.foreground import ForegroundConfig, run_foreground

    with user_errors():
        config = ForegroundConfig(directory, tuple(splits), **options)
        result = run_foreground(config, command=command_line())
    updated = ", ".join(f"{split} {n}" for split, n in result.rows_updated.items()) or "none"
    click.echo(f"new {result.new}, already there {result.existing}; rows updated: {updated} ({result.seconds:.1f} s)")
    echo_unfinished(result, directory, "without fg/")


@cli.command()
@logging_options()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@splits_option
@click.option(
    "--model",
    default="hustvl/vitmatte-small-composition-1k",
    show_default=True,
    help="ViTMatte Hub id or local folder (also -base-composition-1k, -small/-base-distinctions-646).",
)
@click.option(
    "--band",
    "band_px",
    type=click.IntRange(min=1),
    default=None,
    help="Half-width of the unknown band in px  [default: --band-fraction of the person's height].",
)
@click.option(
    "--band-fraction",
    type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
    default=0.02,
    show_default=True,
    help="Band half-width as a share of the mask's bounding-box height (at least 3 px).",
)
@click.option(
    "--where",
    multiple=True,
    help="FIELD=VALUE: only rows whose metadata field has this value (repeatable, all must hold).",
)
@click.option("--force", is_flag=True, help="Refine mattes that are already soft too (more than 5% soft pixels).")
@click.option(
    "--overwrite", is_flag=True, help="Refine again rows refined before (another --model), each from its mask/."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1, mps.")
@click.option("--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True)
@click.option(
    "-b",
    "--batch-size",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Images per batch (of equal padded size).",
)
@click.option(
    "--max-side",
    "max_side_px",
    type=click.IntRange(min=64),
    default=2048,
    show_default=True,
    help="Longer images take a resized pass; the known region is kept at full size.",
)
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache or a local folder.")
@click.option(
    "--shard", default="0/1", callback=parse_shard, show_default=True, help="I/K: every K-th row from the I-th."
)
@ray_option
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def refine(directory: Path, splits, where, **options) -> None:
    """Turn DIRECTORY's coarse mattes (binary masks) into soft ones with ViTMatte.

    A trimap is drawn from each mask (an unknown band around its edge, its width scaled with the person), ViTMatte
    fills the band, and outside it the alpha stays the mask's exact 0 or 255. Nothing is lost: the original mask
    is kept in mask/, the trimap used in refine_trimap/ (a dataset's own trimap/ is never touched), and each row
    records alpha_source, refine_model and refine_band_px. Mattes that are already soft are skipped and counted
    unless --force. fg/ files estimated from an old alpha are deleted: run `datagen foreground` again. A rerun
    resumes.
    """
    from datagen.refine import RefineConfig, parse_where, run_refine

    with user_errors():
        config = RefineConfig(directory, tuple(splits), where=parse_where(where), **options)
        result = run_refine(config, command=command_line())
    updated = ", ".join(f"{split} {n}" for split, n in result.rows_updated.items()) or "none"
    click.echo(
        f"refined {result.refined}, already refined {result.existing}, kept (already soft) {result.soft_skipped}; "
        f"rows updated: {updated} ({result.seconds:.1f} s)"
    )
    if result.foregrounds_removed:
        click.echo(
            f"fg/ of {result.foregrounds_removed} refined rows removed (estimated from the old alpha): run "
            f"`datagen foreground {directory}` to estimate them again"
        )
    echo_unfinished(result, directory, "to refine")


@cli.command()
@logging_options()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=None,
    help=f"Dataset directory to write  [default: {DATA_ROOT}/relit].",
)  # fmt: skip
@click.option(
    "--model",
    type=click.Choice(["fbc", "fc"]),
    default="fbc",
    show_default=True,
    help="fbc: conditioned on the background the person stands on; fc: text and foreground only.",
)
@click.option(
    "--weights",
    default="lllyasviel/ic-light",
    show_default=True,
    help="Hub repo of the IC-Light offsets, or the offset file.",
)
@click.option(
    "--base",
    default="stablediffusionapi/realistic-vision-v51",
    show_default=True,
    help="SD1.5 Hub id or local folder (IC-Light's demo uses this one).",
)
@click.option(
    "--prompts",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Lighting descriptions, one per line  [default: a built-in bank].",
)
@click.option("--steps", type=click.IntRange(min=1), default=25, show_default=True)
@click.option("--guidance", type=float, default=2.0, show_default=True)
@click.option(
    "--size",
    "size_px",
    type=click.IntRange(min=64),
    default=640,
    show_default=True,
    help="Long side of the first pass (then --highres-scale times it, img2img).",
)
@click.option("--highres-scale", type=float, default=1.5, show_default=True)
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=None, help="Only the first N photo rows.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Row i draws its prompts and seeds from (seed, i, attempt)."
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Draws per row before it is skipped.",
)
@click.option(
    "--min-edge-ratio",
    type=float,
    default=0.7,
    show_default=True,
    help="Alignment check: relit edges keep this share of the original's correlation with the alpha's.",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.option("--offline", is_flag=True, help="Use only the local Hugging Face cache or local files.")
@click.option(
    "--shard",
    default=None,
    callback=lambda c, p, v: parse_shard(c, p, v) if v else None,
    help="I/K  [default: from accelerate's RANK/WORLD_SIZE, else 0/1].",
)
@ray_option
@click.option("--progress/--no-progress", default=True, help="Show a progress bar on stderr.")
def relight(src: Path, out: Path | None, min_edge_ratio: float, **options) -> None:
    """Relight the people of SRC's photo rows with IC-Light; the ground truth stays exact.

    Each person (on grey, with the background it stands on for fbc) is relit from a seeded lighting prompt, checked
    against its alpha (IC-Light regenerates every pixel: a moved or reshaped person is rejected and drawn again), and
    composited with the unchanged alpha over its background. The alpha files are SRC's, byte for byte. A rerun
    resumes; `accelerate launch -m datagen relight ...` spreads it over GPUs.
    """
    from datagen.relight import AlignmentThresholds, RelightConfig, run_relight

    with user_errors():
        config = RelightConfig(
            src, out or Path(DATA_ROOT) / "relit", thresholds=AlignmentThresholds(min_edge_ratio), **options
        )
        result = run_relight(config, command=command_line())
    rejected = ", ".join(f"{reason} {n}" for reason, n in result.rejected.items()) or "none"
    click.echo(
        f"new {result.new}, already there {result.existing}, rejected attempts: {rejected} ({result.seconds:.1f} s)"
    )
    for reason, count in result.skipped.items():
        click.echo(f"  skipped {count:>6}  {reason}  (each in {config.out / 'skipped.jsonl'})")


@cli.command()
@logging_options()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--list", "list_", is_flag=True, help="Print the rejected samples (id and reason).")
@click.option("--reject", "reject_ids", multiple=True, help="Reject this sample id (repeatable).")
@click.option("--undo", "undo_ids", multiple=True, help="Take back the rejection of this sample id (repeatable).")
@click.option("--reason", default="rejected by review", show_default=True, help="Why (recorded with --reject).")
def review(directory: Path, list_: bool, reject_ids, undo_ids, reason: str) -> None:
    """Rejections of DIRECTORY's samples, kept in DIRECTORY/rejected.jsonl.

    A rejected sample stays on disk and in metadata.jsonl; every reader (compose pools, training, evaluation,
    push, preview, inspect) leaves it out. A rejection is one appended line ({"id", "reason", "time"}); an undo is
    a second line for the same id. Nothing is ever deleted.
    """
    from datagen.records import chosen_splits, read_rows, rejected_ids, set_rejected

    with user_errors():
        known = {row["id"] for split in chosen_splits(directory) for row in read_rows(directory, split)}
        for sample_id in (*reject_ids, *undo_ids):
            if sample_id not in known:
                raise InputError(f"{directory} has no sample {sample_id!r}")
        for sample_id in reject_ids:
            changed = set_rejected(directory, sample_id, reason)
            click.echo(f"rejected {sample_id}" if changed else f"{sample_id} was already rejected")
        for sample_id in undo_ids:
            changed = set_rejected(directory, sample_id, "undone by review", rejected=False)
            click.echo(f"undid the rejection of {sample_id}" if changed else f"{sample_id} was not rejected")
        if list_ or not (reject_ids or undo_ids):
            rejected = rejected_ids(directory)
            for sample_id, why in sorted(rejected.items()):
                click.echo(f"{sample_id}\t{why}")
            click.echo(f"{len(rejected)} rejected of {len(known)} samples ({directory / 'rejected.jsonl'})")


@cli.command()
@logging_options()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the Hub repo as private.")
@click.option("--token", default=None, help="Hub token  [default: HF_TOKEN, else the huggingface_hub login].")
@click.option("--max-shard-size", default="500MB", show_default=True, help="Parquet shard size (KB, MB, GB).")
@click.option(
    "--dry-run",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write exactly what would be uploaded into this folder and upload nothing (a rerun resumes it).",
)
@click.option(
    "--keep-shards",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Shards written before they are uploaded (in one commit) and removed: the local disk a push needs.",
)
def push(directory: Path, repo_id: str, private, token, max_shard_size: str, dry_run, keep_shards: int) -> None:
    """Publish DIRECTORY to the Hugging Face Hub as the dataset REPO_ID (user/name).

    Each split becomes Parquet shards with Image columns (image, alpha, foreground, trimap where present) and
    the metadata columns; a dataset card (licence: the most restrictive of the sources) and a preview go along.
    Shards are written one at a time into a folder beside DIRECTORY and uploaded --keep-shards at a time; after a
    failure the folder stays and a rerun goes on from the shards already uploaded, without encoding them again.
    """
    from datagen.hub import PushConfig
    from datagen.hub import push as push_dataset

    with user_errors():
        files = push_dataset(PushConfig(directory, repo_id, private, token, max_shard_size, dry_run, keep_shards))
    where = dry_run if dry_run else f"https://huggingface.co/datasets/{repo_id}"
    click.echo(f"{'wrote' if dry_run else 'pushed'} {len(files)} files -> {where}")


@cli.command()
@logging_options()
@click.argument("repo_id")
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Dataset directory to write  [default: {DATA_ROOT}/<name>].",
)
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
def pull(repo_id: str, out: Path | None, split: str | None, alpha_column, split_map, progress: bool) -> None:
    """Download the Hub dataset REPO_ID (image + matte columns, or an RGBA image column) into a dataset directory.

    REPO_ID may also be a local folder holding such a dataset (for example a `datagen push --dry-run` output).
    Rows are streamed to disk; a rerun resumes.
    """
    from datagen.hub import pull as pull_dataset

    out = out or Path(DATA_ROOT) / repo_id.rstrip("/").split("/")[-1]
    with user_errors():
        mapping = dict(item.split("=", 1) for item in split_map if "=" in item)
        if len(mapping) != len(split_map):
            raise InputError(f"--split-map takes NAME=SPLIT, got {list(split_map)}")
        result = pull_dataset(repo_id, out, split, alpha_column, mapping, progress)
    renamed = ", ".join(f"{hub} -> {ours}" for hub, ours in result.splits.items() if hub != ours)
    click.echo(f"matte from column `{result.alpha_column}`" + (f"; splits mapped: {renamed}" if renamed else ""))
    for reason, count in result.skipped.most_common():
        click.echo(f"  skipped {count:>6}  {reason}  (each in {out / 'skipped.jsonl'})")
    counts = ", ".join(f"{name} {n}" for name, n in result.counts.items())
    click.echo(f"new {result.new}, already there {result.existing}; {counts} -> {out}")


@cli.command()
@logging_options()
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
@logging_options()
@click.argument("report", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--min-n",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Slices with fewer samples are listed apart, never ranked.",
)
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
@logging_options()
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

    with user_errors():
        rows = write_preview(directory, out, n=n, split=split, seed=seed, tile_px=tile_px)
    click.echo(f"wrote {out} ({rows} samples)")
