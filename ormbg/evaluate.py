"""`python -m ormbg.evaluate`: score ORMBG, or mattes any model wrote, on dataset directories or on the Parquet
that `datagen push` writes (a staged folder, or hf://user/name).

    python -m ormbg.evaluate --checkpoint ormbg.pth --data datasets/p3m:test --data datasets/ppm100 --json eval.json
    python -m ormbg.evaluate --predictions other_model/ --data datasets/p3m:test      # PNGs named <id>.png
    python -m ormbg.evaluate --checkpoint runs/x/best.safetensors --data datasets/p3m:test --worst 16
    python -m ormbg.evaluate --checkpoint runs/x/best.safetensors --data hf://you/p3m:test

Protocol: each image is resized to --size x --size (area when shrinking, linear when enlarging), the predicted
matte is resized back (linear) to the ground truth's size, and every measure is computed at that size on the
matte as predicted (no min-max stretch). Predictions given as files are resized the same way when their size
differs. The measures and their units are those of `ormbg.metrics`.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from datagen import __version__
from datagen.console import CONTEXT_SETTINGS, logging_options, user_errors
from datagen.errors import InputError, MissingInputError
from datagen.io import encode_png, read_image, write_atomic, write_json
from datagen.parallel import process_pool, runs_in_workers
from datagen.records import HUB_SCHEME, iter_samples, parse_spec, splits
from datagen.refine import DEFAULT_MODEL as VITMATTE
from datagen.shards import is_shard_location, shard_splits
from ormbg.data import BadSamples, EvalSet, loader_options
from ormbg.metrics import Meter, score_matte
from ormbg.parquet import ParquetRows, open_parquet

runs_in_workers(__name__)  # its functions run in pool workers

log = logging.getLogger(__name__)

COLUMNS = [  # (JSON key, Markdown header)
    ("n", "n"),
    ("mae", "MAE"),
    ("max_f", "maxF"),
    ("mean_f", "meanF"),
    ("adaptive_f", "adpF"),
    ("s_measure", "Sm"),
    ("e_measure", "Em"),
    ("weighted_f", "wF"),
    ("sad", "SAD"),
    ("mse", "MSE"),
    ("grad", "Grad"),
    ("conn", "Conn"),
]
UNITS = (
    "Alpha in [0, 1]. MAE and MSE: means over pixels. SAD, Grad and Conn: sums over the image divided by 1000, "
    "as the matting papers report them. F-measures: beta^2 = 0.3 (weighted F: beta^2 = 1); Em is the mean "
    "E-measure; ground truth binarised at 128/255 for the segmentation measures."
)


def resolve_split(spec: str) -> tuple[Path | str, str]:
    """`DIR[:SPLIT]` -> (DIR, SPLIT), DIR a dataset directory (a Path) or Parquet shards (a str: a folder of what
    `datagen push` writes, or hf://user/name); without a split: test (evaluation is on benchmarks), else validation,
    else the only split."""
    path, split, _ = parse_spec(spec, "--data")
    if is_shard_location(path):
        root = path if path.startswith(HUB_SCHEME) else str(Path(path))  # named as a directory would be
        present = shard_splits(root)
    else:
        root = Path(path)
        present = splits(root)
        if not present:
            raise MissingInputError(
                f"{root} is not a dataset directory (no <split>/metadata.jsonl) nor a folder of Parquet shards"
            )
    if split:
        if split not in present:
            raise InputError(f"{root} has no split {split!r} (it has {', '.join(present)})")
        return root, split
    for candidate in ("test", "validation"):
        if candidate in present:
            return root, candidate
    if len(present) == 1:
        return root, present[0]
    raise InputError(f"{root} has splits {', '.join(present)}: say which, as {root}:SPLIT")


def eval_samples(root: Path | str, split: str) -> list | ParquetRows:
    """The samples of a resolved split: a directory's `Sample`s with an image and an alpha, by id; or the split's
    Parquet rows in file order (a Hub dataset downloaded once into the Hugging Face cache)."""
    if isinstance(root, str):
        return open_parquet(root, split, option="--data", download=True, evaluation=True)
    samples = sorted((s for s in iter_samples(root, split) if s.path("image") and s.path("alpha")), key=lambda s: s.id)
    if not samples:
        raise InputError(f"{root}/{split} has no image + alpha samples")
    return samples


def _collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items


@dataclass(frozen=True)
class EvaluateConfig:
    data: tuple[str, ...]  # DIR[:SPLIT] of each dataset
    checkpoint: Path | None = None  # ours (.pt, .safetensors) or the published ormbg.pth
    onnx: Path | None = None  # an export of `python -m ormbg.export`
    predictions: Path | None = None  # instead of a model: <id>.png mattes that another model wrote
    size: int = 1024  # model input side, px
    batch_size: int = 4
    workers: int = 2
    metric_workers: int | None = None  # processes for the measures (<= 1: this one); None: `auto_metric_workers`
    device: str = "auto"
    precision: str = "fp32"
    worst: int = 0  # contact sheet of the N worst samples (by MAE) per dataset
    max_bad_samples: int | None = None  # unreadable samples left out (and counted) per dataset; None: 1% of them
    refine: str | None = None  # "vitmatte": score the two-stage output (ORMBG, then ViTMatte in the uncertain band)
    refine_model: str = VITMATTE
    worst_dir: Path = Path(".")
    progress: bool = True

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.checkpoint, self.onnx, self.predictions)) != 1:
            raise InputError("give exactly one of --checkpoint, --onnx and --predictions")
        if not self.data:
            raise InputError("give at least one --data DIR[:SPLIT]")
        if self.predictions is not None and not Path(self.predictions).is_dir():
            raise MissingInputError(f"--predictions {self.predictions} is not a folder")
        if self.refine not in (None, "vitmatte") or (self.refine and self.predictions is not None):
            raise InputError("--refine vitmatte refines a model's mattes: give --checkpoint or --onnx with it")

    def protocol(self) -> str:
        source = (
            f"predictions read from {self.predictions} (resized linearly to the ground truth where sizes differ)"
            if self.predictions
            else f"{self.checkpoint or self.onnx} at {self.size}x{self.size} px input (area/linear resize, aspect "
            f"not kept), matte resized back linearly to the ground truth's size, {self.precision}"
        )
        second = (
            f"; second stage: ViTMatte {self.refine_model} in the band of the matte's uncertain pixels (widened 4 px)"
            if self.refine
            else ""
        )
        return f"{source}{second}; measures at the ground truth's resolution; no min-max stretch of the matte"


class WorstSamples:
    """The n samples with the largest MAE, with their predicted mattes (uint8) for a contact sheet."""

    def __init__(self, n: int, read: Callable[[Any], np.ndarray] = read_image):
        self.n, self.heap, self.read = n, [], read  # read: an item's `image_ref` -> its image, for the sheet

    def offer(self, mae: float, item: dict[str, Any], prediction: np.ndarray) -> None:
        if self.n <= 0:
            return
        alpha = item["alpha"]
        if prediction.dtype != np.uint8:
            prediction = np.round(prediction * 255).astype(np.uint8)
        elif prediction.shape != alpha.shape:  # a matte read from a file, at another size
            prediction = cv2.resize(prediction, alpha.shape[::-1], interpolation=cv2.INTER_LINEAR)
        entry = (mae, item["id"], item["image_ref"], alpha, prediction)
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, entry)
        elif mae > self.heap[0][0]:
            heapq.heapreplace(self.heap, entry)

    def write_sheet(self, path: Path) -> None:
        from datagen.preview import tile_sheet

        rows = []
        for mae, sample_id, image_ref, alpha, prediction in sorted(self.heap, reverse=True):
            error = cv2.applyColorMap(cv2.absdiff(alpha, prediction), cv2.COLORMAP_INFERNO)[..., ::-1]
            grey = [np.repeat(a[..., None], 3, axis=2) for a in (alpha, prediction)]
            rows.append((f"{sample_id}  MAE {mae:.4f}", [self.read(image_ref), *grey, error]))
        write_atomic(path, encode_png(tile_sheet(rows)))


@contextmanager
def _scorer(workers: int) -> Iterator[Callable[..., Future]]:
    """score(prediction, alpha uint8, trimap) -> a Future of the image's scores: from a pool of `workers`
    processes, or computed at once in this one when workers <= 1."""
    if workers <= 1:

        def now(*args) -> Future:
            future: Future = Future()
            future.set_result(score_matte(*args))
            return future

        yield now
        return
    with process_pool(workers) as pool:
        yield lambda *args: pool.submit(score_matte, *args)


def auto_metric_workers(predictor) -> int:
    """1 (score in this process) when the model runs on the CPU: its threads use the cores, and processes beside
    them slow it down more than they gain (figures: docs/benchmarks.md). Otherwise the CPU count, at most 8."""
    if predictor is not None and predictor.uses_cpu:
        return 1
    return min(8, os.cpu_count() or 1)


def per_sample_measures(scores: dict[str, Any]) -> dict[str, float]:
    """The scalar measures of one image (MAE first; curves and the trimap band left out), rounded for the report."""
    return {key: round(float(value), 6) for key, value in scores.items() if isinstance(value, (int, float))}


def evaluate_dataset(
    config: EvaluateConfig, root: Path, split: str, predictor, score: Callable[..., Future], in_flight: int
) -> dict[str, Any]:
    """Scores of one DIR:SPLIT; `score` from `_scorer`, at most `in_flight` images waiting for their scores."""
    from tqdm import tqdm

    samples = eval_samples(root, split)
    dataset = EvalSet(samples, config.size, config.predictions, images=config.refine is not None)
    loader = DataLoader(
        dataset,
        batch_size=config.batch_size,
        collate_fn=_collate,
        **loader_options(config.workers),
    )
    reader = (lambda row: samples.row(row)[0]) if isinstance(samples, ParquetRows) else read_image
    meter, worst, missing = Meter(), WorstSamples(config.worst, reader), []
    subsets: dict[str, Meter] = {}  # the field reports P3M-500-P and -NP apart: one line per subset too
    per_sample: list[dict[str, Any]] = []  # id and scalar measures of every sample (review sorts, slices groups)
    scoring: deque[tuple[dict[str, Any], np.ndarray, Future]] = deque()  # in sample order

    def collect(keep: int) -> None:
        while len(scoring) > keep or (scoring and scoring[0][2].done()):
            item, prediction, scores = scoring.popleft()
            measures = meter.record(scores.result())
            mae = measures["mae"]
            worst.offer(mae, item, prediction)
            per_sample.append({"id": item["id"], **per_sample_measures(measures)})
            if item["subset"]:
                subsets.setdefault(item["subset"], Meter()).record(scores.result())

    bad = BadSamples(
        config.max_bad_samples if config.max_bad_samples is not None else BadSamples.default_limit(len(dataset))
    )
    name = Path(str(root)).name  # hf://user/name too
    for batch in tqdm(loader, desc=f"{name}:{split}", unit="img", disable=not config.progress):
        for item in batch:
            if "unreadable" in item:
                bad.add(*item["unreadable"])
        batch = [item for item in batch if "unreadable" not in item]
        if not batch:
            continue
        if predictor is not None:
            pixels = torch.stack([item["pixels"] for item in batch])
            predictions = predictor.predict(pixels, [item["alpha"].shape for item in batch])
            if predictor.matter is not None:
                predictions = predictor.refine([item["image"] for item in batch], predictions)
        else:
            predictions = [item["prediction"] for item in batch]
        for item, prediction in zip(batch, predictions):
            if prediction is None:
                missing.append(item["id"])
                continue
            scoring.append((item, prediction, score(prediction, item["alpha"], item["trimap"])))
        collect(keep=in_flight)  # bounded: each holds a matte and its truth
    collect(keep=0)
    if missing and len(missing) == len(dataset):
        raise MissingInputError(
            f"{config.predictions} holds none of the {len(dataset)} mattes <id>.png of {root}:{split}"
        )
    if missing:
        log.warning("%s:%s: %d predictions missing (first: %s)", root, split, len(missing), missing[0])
    result = meter.result()
    result["missing"] = len(missing)
    result["unreadable"] = len(bad.seen)
    result["per_sample"] = sorted(per_sample, key=lambda entry: -entry["mae"])
    result["second_stage"] = f"vitmatte ({config.refine_model})" if config.refine else "none"
    if subsets:
        result["subsets"] = {name: subsets[name].result() for name in sorted(subsets)}
    if config.worst:
        sheet = Path(config.worst_dir) / f"worst-{name}-{split}.png"
        worst.write_sheet(sheet)
        result["worst_sheet"] = str(sheet)
    return result


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """{"protocol": ..., "datasets": {"DIR:SPLIT": {n, mae, max_f, ..., conn[, unknown: {...}]}}}."""
    predictor = None
    if config.predictions is None:
        from ormbg.infer import Predictor

        refine_model = config.refine_model if config.refine else None
        predictor = Predictor(
            config.checkpoint, config.onnx, config.size, config.device, config.precision, refine_model
        )
    workers = config.metric_workers if config.metric_workers is not None else auto_metric_workers(predictor)
    datasets = {}
    with _scorer(workers) as score:  # one pool for every dataset
        for spec in config.data:
            root, split = resolve_split(spec)
            datasets[f"{root}:{split}"] = evaluate_dataset(config, root, split, predictor, score, 4 * max(1, workers))
    return {"protocol": config.protocol(), "units": UNITS, "datasets": datasets}


def markdown_table(report: dict[str, Any]) -> str:
    """The report as Markdown: protocol and units, one row per dataset, and the trimap band where present."""

    def cell(value) -> str:
        return str(value) if isinstance(value, int) else f"{value:.4f}"

    lines = [f"Protocol: {report['protocol']}.", "", report["units"], ""]
    staged = any(s.get("second_stage", "none") != "none" for s in report["datasets"].values())
    stage = " second stage |" if staged else ""
    lines += [
        "| dataset | " + " | ".join(h for _, h in COLUMNS) + f" |{stage}",
        "|---" * (len(COLUMNS) + 1 + staged) + "|",
    ]
    for name, scores in report["datasets"].items():
        tail = f" {scores['second_stage']} |" if staged else ""
        lines.append(f"| {name} | " + " | ".join(cell(scores[k]) for k, _ in COLUMNS) + f" |{tail}")
        for subset, part in scores.get("subsets", {}).items():
            lines.append(f"| {name} / {subset} | " + " | ".join(cell(part[k]) for k, _ in COLUMNS) + f" |{tail}")
    banded = {name: s["unknown"] for name, s in report["datasets"].items() if "unknown" in s}
    if banded:
        keys = ["n", "sad", "mse", "grad", "conn"]
        lines += ["", "Trimap unknown band (trimap = 128; MSE a mean over the band):", ""]
        lines += ["| dataset | n | SAD | MSE | Grad | Conn |", "|---|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(cell(band[k]) for k in keys) + " |" for name, band in banded.items()]
    return "\n".join(lines) + "\n"


@click.command(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="ormbg")
@logging_options(logging.INFO)
@click.option(
    "--data",
    multiple=True,
    required=True,
    help="Dataset DIR[:SPLIT]: a dataset directory, a folder of the Parquet shards `datagen push` writes, or "
    "hf://user/name (repeatable; default split: test).",
)
@click.option("--checkpoint", type=click.Path(path_type=Path), default=None, help="ormbg.pth, our .pt or .safetensors.")
@click.option("--onnx", type=click.Path(path_type=Path), default=None, help="An ONNX export, run with onnxruntime.")
@click.option("--predictions", type=click.Path(path_type=Path), default=None, help="Folder of <id>.png mattes.")
@click.option("--size", type=int, default=1024, show_default=True, help="Model input side in px.")
@click.option("--batch-size", type=int, default=4, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="DataLoader workers.")
@click.option(
    "--metric-workers",
    type=int,
    default=None,
    help="Processes computing the measures, the slow part on a GPU machine [the CPU count, at most 8; 1 (this "
    "process) when the model runs on the CPU].",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write JSON.")
@click.option("--markdown", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the table.")
@click.option("--worst", type=int, default=0, help="Contact sheet of the N worst samples per dataset.")
@click.option(
    "--max-bad-samples",
    type=click.IntRange(min=0),
    default=None,
    help="Unreadable samples left out (counted in the report) before a dataset's evaluation stops  [1% of it].",
)
@click.option(
    "--refine",
    type=click.Choice(["vitmatte"]),
    default=None,
    help="Score the two-stage output: ViTMatte refines the band of the model's uncertain pixels (compare with a "
    "run without it: trimap-band SAD, Grad and Conn show what it buys).",
)
@click.option("--refine-model", default=VITMATTE, show_default=True, help="For --refine.")
@click.option("--worst-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="[beside --json]")
@click.option("--progress/--no-progress", default=True)
def main(data, json_path, markdown, worst_dir, **options) -> None:
    """Score a checkpoint, an ONNX export or a folder of mattes on dataset directories or pushed Parquet."""
    worst_dir = worst_dir or (json_path.parent if json_path else Path("."))
    with user_errors():
        report = run_evaluate(EvaluateConfig(data=tuple(data), worst_dir=worst_dir, **options))
    table = markdown_table(report)
    with user_errors():
        try:  # the files first; the table is printed even when they cannot be written, so no result is lost
            if json_path:
                write_json(json_path, report)
            if markdown:
                write_atomic(markdown, table.encode())
        finally:
            click.echo(table, nl=False)


if __name__ == "__main__":
    main()
