"""`python -m ormbg.app`: remove backgrounds in a browser, and review a dataset (Gradio; `pip install -e .[app]`).

    python -m ormbg.app --checkpoint ormbg.pth [--checkpoint runs/x/best.safetensors] [--onnx ormbg.onnx] \\
        [--data datasets/synth] [--data datasets/composites:validation --eval eval.json] [--port 7860]

Tab "Remove background": an image (any size, EXIF orientation honoured) -> the cut-out (RGBA PNG), the matte and a
composite on a colour or an uploaded background, each downloadable; the model chosen among those given; the time
taken and the input size used; several files -> a zip. Tab "Review a dataset": a paged grid (image | alpha |
cut-out on a checkerboard) of one dataset's split, filtered by any metadata field and sorted by a score or by the
error of an `ormbg.evaluate --json` report; a sample large with its metadata; reject it with a reason (appended to
DIR/rejected.jsonl, honoured by every reader) or undo. The functions below are the app's server side: tests call
them directly, and a browser test drives the page.
"""

from __future__ import annotations

import json
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from datagen import __version__
from datagen.alpha import over
from datagen.console import CONTEXT_SETTINGS, logging_options, user_errors
from datagen.errors import InputError
from datagen.io import encode_png, read_image, read_json, write_atomic
from datagen.preview import sample_tiles, tile_sheet
from datagen.records import Sample, iter_samples, parse_spec, read_rows, rejected_ids, set_rejected, splits
from datagen.refine import DEFAULT_MODEL as VITMATTE

PAGE_SIZE = 12
REASONS = ["wrong matte", "cut-off person", "not a person", "artefacts", "duplicate", "other"]


@dataclass
class Models:
    """The models offered (name -> checkpoint or ONNX path), loaded on first use and kept."""

    checkpoints: dict[str, Path]
    size_px: int = 1024
    refine_model: str | None = None
    loaded: dict[str, Any] = field(default_factory=dict)

    def predictor(self, name: str):
        from ormbg.infer import Predictor

        if name not in self.checkpoints:
            raise InputError(f"unknown model {name!r}: one of {', '.join(self.checkpoints)}")
        if name not in self.loaded:
            path = self.checkpoints[name]
            onnx = path.suffix == ".onnx"
            self.loaded[name] = Predictor(
                None if onnx else path, path if onnx else None, self.size_px, refine_model=self.refine_model
            )
        return self.loaded[name]


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb' or Gradio's 'rgba(r, g, b, a)' -> RGB."""
    from ormbg.infer import parse_color as parse_hex

    if text.startswith("rgb"):
        values = text[text.index("(") + 1 : text.index(")")].split(",")
        return tuple(round(float(v)) for v in values[:3])
    return parse_hex(text)


def remove_background(
    models: Models,
    image_path: str,
    model: str,
    color: str = "#ffffff",
    background_path: str | None = None,
    decontaminate: bool = True,
) -> tuple[str, str, str, str]:
    """(cut-out RGBA PNG, matte PNG, composite PNG, a line of what was done) for one image file. `decontaminate`: the
    cut-out and composite carry the person's estimated colour (`infer.cutout_colors`, ml), not the photo's."""
    from ormbg.infer import DEFAULT_FOREGROUND, cutout_colors

    if not image_path:
        raise InputError("no image: upload or paste one")
    image = read_image(image_path)  # upright: EXIF orientation applied
    started = time.perf_counter()
    (alpha,) = models.predictor(model)([image])
    seconds = time.perf_counter() - started
    matte = np.rint(alpha * 255).astype(np.uint8)
    colors = cutout_colors(image, matte, DEFAULT_FOREGROUND if decontaminate else "none")
    if background_path:
        import cv2

        backdrop = cv2.resize(read_image(background_path), image.shape[1::-1], interpolation=cv2.INTER_AREA)
    else:
        backdrop = np.empty_like(image)
        backdrop[:] = parse_color(color)
    folder = Path(tempfile.mkdtemp(prefix="ormbg-app-"))
    stem = Path(image_path).stem
    outputs = []
    for name, array in (
        (f"{stem}-cutout.png", np.dstack([colors, matte])),
        (f"{stem}-matte.png", matte),
        (f"{stem}-composite.png", over(np.dstack([colors, matte]), backdrop)),
    ):
        write_atomic(folder / name, encode_png(array))
        outputs.append(str(folder / name))
    height, width = image.shape[:2]
    info = f"{width}x{height} px in, model input {models.size_px}x{models.size_px}, {seconds:.2f} s ({model})"
    return outputs[0], outputs[1], outputs[2], info


def remove_batch(models: Models, paths: list[str], model: str) -> str:
    """A zip of the RGBA cut-outs (PNG, same names) of several image files."""
    if not paths:
        raise InputError("no files: upload one or more images")
    folder = Path(tempfile.mkdtemp(prefix="ormbg-app-batch-"))
    archive = folder / "cutouts.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in paths:
            cutout, *_ = remove_background(models, str(path), model)
            zipped.write(cutout, f"{Path(path).stem}.png")
    return str(archive)


# ----- review -----


def dataset_root(spec: str) -> tuple[Path, list[str]]:
    path, split, _ = parse_spec(spec, "--data")
    root = Path(path)
    present = splits(root)
    if not present:
        raise InputError(f"{root} is not a dataset directory")
    return root, [split] if split else present


def eval_errors(report_path: str | None, root: Path, split: str) -> dict[str, float]:
    """{id: MAE} of an `ormbg.evaluate --json` report's worst samples of this dataset, where it has them."""
    if not report_path:
        return {}
    report = read_json(report_path)
    scores = report.get("datasets", {}).get(f"{root}:{split}", {})
    return {entry["id"]: entry["mae"] for entry in scores.get("per_sample", [])}


def matching(row: dict[str, Any], text: str) -> bool:
    """`FIELD=VALUE` (several, comma-separated, all must hold) against a row; empty: every row."""
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise InputError(f"filter {part!r}: use FIELD=VALUE, for example source=p3m")
        if str(row.get(key.strip())) != value.strip():
            return False
    return True


def review_page(
    spec: str, split: str, filter_text: str = "", sort_key: str = "", page: int = 1, report: str | None = None
) -> tuple[list[tuple[str, str]], list[str], int]:
    """(gallery items (tile PNG path, caption), their ids, page count) of one page of a split, filtered and sorted
    (`sort_key`: a numeric metadata field, descending, or "eval error" from `report`). Rejected samples are shown
    with their reason (the review is where they are undone)."""
    root, _ = dataset_root(spec)
    rejected = rejected_ids(root)
    samples = [s for s in iter_samples(root, split, include_rejected=True) if matching(s.row, filter_text)]
    errors = eval_errors(report, root, split)
    if sort_key == "eval error":
        samples.sort(key=lambda s: -errors.get(s.id, -1.0))
    elif sort_key:
        samples.sort(key=lambda s: -float(s.row.get(sort_key, float("-inf")) or 0))
    pages = max(1, -(-len(samples) // PAGE_SIZE))
    page = min(max(1, int(page)), pages)
    chosen = samples[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    folder = Path(tempfile.mkdtemp(prefix="ormbg-review-"))
    items = []
    for sample in chosen:
        tile = folder / f"{sample.id}.png"
        write_atomic(tile, encode_png(tile_sheet([("", sample_tiles(sample))], 160)))
        score = f" {sort_key} {sample.row.get(sort_key)}" if sort_key and sort_key != "eval error" else ""
        score += f" MAE {errors[sample.id]:.3f}" if sample.id in errors else ""
        flag = f" REJECTED ({rejected[sample.id]})" if sample.id in rejected else ""
        items.append((str(tile), f"{sample.id} | {sample.row.get('source', '?')}{score}{flag}"))
    return items, [s.id for s in chosen], pages


def sample_details(spec: str, split: str, sample_id: str) -> tuple[str, str]:
    """(a large tile PNG path, the row's metadata as JSON) of one sample."""
    root, _ = dataset_root(spec)
    row = next((row for row in read_rows(root, split) if row["id"] == sample_id), None)
    if row is None:
        raise InputError(f"{root}:{split} has no sample {sample_id!r}")
    tile = Path(tempfile.mkdtemp(prefix="ormbg-review-")) / f"{sample_id}.png"
    write_atomic(tile, encode_png(tile_sheet([(sample_id, sample_tiles(Sample(root, split, row)))], 384)))
    rejected = rejected_ids(root)
    shown = {**row, **({"rejected": rejected[sample_id]} if sample_id in rejected else {})}
    return str(tile), json.dumps(shown, indent=2)


def reject(spec: str, sample_id: str, reason: str, undo: bool = False) -> str:
    """Reject (or undo) one sample in DIR/rejected.jsonl; a line saying what happened."""
    if not sample_id:
        return "select a sample first"
    root, _ = dataset_root(spec)
    changed = set_rejected(root, sample_id, reason or "rejected in review", rejected=not undo)
    if undo:
        return f"undid the rejection of {sample_id}" if changed else f"{sample_id} was not rejected"
    return f"rejected {sample_id} ({reason})" if changed else f"{sample_id} was already rejected"


# ----- the page -----


def build_app(models: Models | None, data: list[str], report: str | None = None):
    """The Gradio Blocks: a "Remove background" tab when models are given, a "Review a dataset" tab when data is."""
    try:
        import gradio as gr
    except ImportError as error:
        raise InputError("the app needs Gradio: pip install -e .[app]") from error

    with gr.Blocks(title="ormbg") as app:
        gr.Markdown("# ormbg: background removal and dataset review")
        if models:
            _remove_tab(gr, models)
        if data:
            _review_tab(gr, data, report)
    return app


def _remove_tab(gr, models: Models) -> None:
    names = list(models.checkpoints)
    with gr.Tab("Remove background", id="remove"):
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="filepath", label="Image", sources=["upload", "clipboard"], elem_id="input-image")
                model = gr.Dropdown(names, value=names[0], label="Model", elem_id="model")
                color = gr.ColorPicker("#ffffff", label="Composite background colour")
                backdrop = gr.Image(type="filepath", label="Or a background image", sources=["upload"])
                clean = gr.Checkbox(True, label="Decontaminate edge colours (the person's estimated colour)",
                                    elem_id="decontaminate")  # fmt: skip
                run = gr.Button("Remove background", variant="primary", elem_id="run")
            with gr.Column():
                cutout = gr.Image(type="filepath", label="Cut-out (RGBA PNG)", format="png", elem_id="cutout")
                matte = gr.Image(type="filepath", label="Matte", format="png")
                composite = gr.Image(type="filepath", label="Composite", format="png")
                info = gr.Markdown(elem_id="info")
        with gr.Accordion("Several images -> a zip of cut-outs", open=False):
            files = gr.File(file_count="multiple", label="Images")
            batch = gr.Button("Cut them out")
            archive = gr.File(label="cutouts.zip")

        def single(path, name, colour, background, decontaminate):
            try:
                return remove_background(models, path, name, colour, background, decontaminate)
            except ValueError as error:
                raise gr.Error(str(error)) from error

        run.click(single, [image, model, color, backdrop, clean], [cutout, matte, composite, info])
        batch.click(lambda paths, name: remove_batch(models, paths or [], name), [files, model], archive)


def _review_tab(gr, data: list[str], report: str | None) -> None:
    _, first_splits = dataset_root(data[0])
    with gr.Tab("Review a dataset", id="review"):
        with gr.Row():
            dataset = gr.Dropdown(data, value=data[0], label="Dataset", elem_id="dataset")
            split = gr.Dropdown(first_splits, value=first_splits[0], label="Split", elem_id="split")
            filter_text = gr.Textbox(label="Filter FIELD=VALUE (comma-separated)", elem_id="filter")
            sort_key = gr.Textbox(label="Sort by (a numeric field, or 'eval error')", elem_id="sort")
            page = gr.Number(1, label="Page", precision=0, elem_id="page")
        show = gr.Button("Show", elem_id="show")
        gallery = gr.Gallery(label="image | alpha | cut-out", columns=3, height="auto", elem_id="gallery")
        ids = gr.State([])
        selected = gr.State("")
        with gr.Row():
            large = gr.Image(type="filepath", label="Selected", elem_id="large")
            metadata = gr.Code(language="json", label="Metadata")
        with gr.Row():
            reason = gr.Dropdown(REASONS, value=REASONS[0], allow_custom_value=True, label="Reason", elem_id="reason")
            reject_button = gr.Button("Reject", variant="stop", elem_id="reject")
            undo_button = gr.Button("Undo rejection", elem_id="undo")
        status = gr.Markdown(elem_id="status")

        def load(spec, split_name, text, key, number):
            try:
                items, page_ids, pages = review_page(spec, split_name, text or "", key or "", number or 1, report)
            except ValueError as error:
                raise gr.Error(str(error)) from error
            return items, page_ids, f"page {int(number or 1)} of {pages}"

        def pick(spec, split_name, page_ids, event):
            sample_id = page_ids[event.index]
            tile, text = sample_details(spec, split_name, sample_id)
            return sample_id, tile, text, f"selected {sample_id}"

        pick.__annotations__["event"] = gr.SelectData  # Gradio injects the event by this (a real class, not a string)

        show.click(load, [dataset, split, filter_text, sort_key, page], [gallery, ids, status])
        gallery.select(pick, [dataset, split, ids], [selected, large, metadata, status])
        reject_button.click(lambda spec, sid, why: reject(spec, sid, why), [dataset, selected, reason], status)
        undo_button.click(lambda spec, sid, why: reject(spec, sid, why, undo=True), [dataset, selected, reason], status)
        dataset.change(
            lambda spec: gr.update(choices=dataset_root(spec)[1], value=dataset_root(spec)[1][0]), dataset, split
        )


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="ormbg")
@logging_options()
@click.option(
    "--checkpoint",
    "checkpoints",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="ormbg.pth, our .pt or .safetensors (repeatable: a model choice in the page).",
)
@click.option(
    "--onnx",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="An ONNX export (repeatable).",
)
@click.option("--data", multiple=True, help="A dataset DIR[:SPLIT] to review (repeatable).")
@click.option(
    "--eval",
    "report",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="An `ormbg.evaluate --json` report: sort by its errors.",
)
@click.option("--size", type=int, default=1024, show_default=True, help="Model input side in px.")
@click.option(
    "--refine", type=click.Choice(["vitmatte"]), default=None, help="Second stage: ViTMatte (as infer --refine)."
)
@click.option("--refine-model", default=VITMATTE, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 to serve other machines.")
@click.option("--port", type=int, default=7860, show_default=True)
def main(checkpoints, onnx, data, report, size, refine, refine_model, host, port) -> None:
    """Remove backgrounds in a browser and review datasets (a Gradio app; `pip install -e .[app]`)."""
    with user_errors():
        if not (checkpoints or onnx or data):
            raise InputError("give --checkpoint/--onnx (remove backgrounds), --data (review a dataset), or both")
        paths = [*checkpoints, *onnx]
        models = Models({p.name: p for p in paths}, size, refine_model if refine else None) if paths else None
        app = build_app(models, list(data), report)
    app.launch(server_name=host, server_port=port)


if __name__ == "__main__":
    main()
