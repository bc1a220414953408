"""Foreground colour estimation: real matted photos become compositing material (`datagen foreground DIR`).

A photo I with matte a is I = a F + (1 - a) B. Where 0 < a < 1 (hair above all) the photo's colour holds the old
background, so compositing I itself onto a new background carries a halo of the old one. `estimate_foreground`
recovers F:

- "ml" (the default): pymatting's multi-level estimator (`estimate_foreground_ml`, MIT), the field's reference
  (rembg uses it); numba compiles it at its first import in an environment (about half a minute), then it is
  cached.
- "blur-fusion": Forte & Pitie, "Approximate Fast Foreground Colour Estimation" (ICIP 2021). Local means of
  foreground and background colour (box blurs weighted by a and 1 - a), then F = F_mean + a (I - a F_mean -
  (1 - a) B_mean), clipped; a second pass with a small radius starts from the first pass's F and B.
  OpenCV box filters only: about half the time of "ml", with about 1.6x its error (docs/benchmarks.md).

`run_foreground` writes `fg/<id>.png` (straight RGBA: F with the row's own alpha, byte for byte) for every photo row
of a split that has none, then adds `foreground_file_name` and `foreground_method` to the rows once every row of the
split has its file (rows stay uniform). Resumable, sharded, atomic like every writer; scripts/bench_foreground.py
measures the methods.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from tqdm import tqdm

from datagen.cluster import check_shared_paths
from datagen.console import option
from datagen.errors import InputError
from datagen.io import ImageReadError, encode_png, read_pair, write_atomic
from datagen.parallel import runs_in_workers
from datagen.records import (
    SPLITS,
    STRING_BATCH,
    InPlaceResult,
    Skip,
    StringColumn,
    StringIndex,
    chosen_splits,
    file_table,
    file_table_rows,
    files_of_ids,
    named_by_id,
    photo_flags,
    plane_name,
    rejected_ids,
    resolve_shard,
    update_rows,
)
from datagen.stage import Lazy, Run, map_items, stage_run

runs_in_workers(__name__)  # its functions run in pool workers

METHODS = ("blur-fusion", "ml")
DEFAULT_METHOD = "ml"  # the most accurate, and fast enough: scripts/bench_foreground.py (docs/benchmarks.md)
BLUR_RADIUS_AT_1024 = 90  # the paper's first-pass radius for images of about 1000 px; scaled with the image
SECOND_RADIUS = 6  # the paper's second pass


def _blur_fusion_pass(
    image: np.ndarray, foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray, radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """One pass of blur fusion on float32 arrays in [0, 1] (HxWx3, alpha HxWx1): (F, local background mean)."""
    size = (radius, radius)
    alpha_mean = cv2.blur(alpha, size)[..., None]
    foreground_mean = cv2.blur(foreground * alpha, size) / (alpha_mean + 1e-5)
    background_mean = cv2.blur(background * (1 - alpha), size) / (1 - alpha_mean + 1e-5)
    estimate = foreground_mean + alpha * (image - alpha * foreground_mean - (1 - alpha) * background_mean)
    return np.clip(estimate, 0, 1, out=estimate), background_mean


def blur_fusion(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """F (HxWx3 float32 in [0, 1]) of an HxWx3 float32 image and HxW float32 alpha in [0, 1], two passes."""
    radius = max(3, round(BLUR_RADIUS_AT_1024 * max(alpha.shape) / 1024))
    alpha3 = alpha[..., None]
    foreground, background = _blur_fusion_pass(image, image, image, alpha3, radius)
    return _blur_fusion_pass(image, foreground, background, alpha3, SECOND_RADIUS)[0]


@functools.cache
def multilevel_estimator():
    """pymatting's `estimate_foreground_ml`, loaded from its own file. `import pymatting` compiles every numba function
    of the package (its alpha-matting solvers too): about 45-55 s the first time in an environment, before the first
    foreground or cut-out; this file holds three (about 5 s), cached by numba like the rest."""
    import importlib.util

    spec = importlib.util.find_spec("pymatting")  # finds the package without running its __init__
    if spec is None or spec.origin is None:
        raise InputError(
            "--method ml needs pymatting, a dependency of this project: pip install pymatting; "
            "--method blur-fusion needs nothing"
        )
    path = Path(spec.origin).parent / "foreground" / "estimate_foreground_ml.py"
    if not path.is_file():  # another layout of pymatting: the package import (slow the first time, still right)
        from pymatting import estimate_foreground_ml

        return estimate_foreground_ml
    # under its own name, so numba's cache entries name the module as the package would (either can load them) and
    # a later `import pymatting` in this process takes this module as its submodule
    name = "pymatting.foreground.estimate_foreground_ml"
    if name not in sys.modules:
        module_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return sys.modules[name].estimate_foreground_ml


def _multilevel(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    return multilevel_estimator()(image, alpha)  # float32 in and out (pymatting computes in float32 anyway)


def estimate_foreground(image: np.ndarray, alpha: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """The foreground colour F of a photo: image HxWx3 uint8 RGB, alpha HxW uint8 -> F HxWx3 uint8.

    Where alpha is 255 F is the image itself (exactly); where it is 0 F is an extrapolation (never seen through the
    alpha); in between, the old background is taken out.
    """
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")
    if image.shape[:2] != alpha.shape:
        raise ValueError(f"image {image.shape[:2]} and alpha {alpha.shape} differ in size")
    pixels = image.astype(np.float32) / 255
    weight = alpha.astype(np.float32) / 255
    if alpha.size == 1:  # one pixel: no neighbours to estimate from (pymatting divides by zero): its own colour
        estimate = pixels
    else:
        estimate = blur_fusion(pixels, weight) if method == "blur-fusion" else _multilevel(pixels, weight)
    result = cv2.convertScaleAbs(estimate, alpha=255.0)  # round(255 F), in [0, 255]: one pass
    # a = 1: the photo is the foreground, to the byte (OpenCV's masked copy: 0.3 ms at 1024 px, numpy's 17-32 ms)
    cv2.copyTo(image, (alpha == 255).view(np.uint8), result)
    return result


@dataclass(frozen=True)
class ForegroundConfig:
    root: Path  # the dataset directory whose photo rows get fg/
    splits: tuple[str, ...] = option(())  # empty: every split present
    method: str = option(
        DEFAULT_METHOD,
        "ml: pymatting's multi-level estimator (the most accurate); blur-fusion: Forte & Pitie's approximation "
        "(OpenCV, faster, less accurate). Both measured in docs/benchmarks.md.",
        type=click.Choice(METHODS),
    )
    workers: int = option(1)
    shard: tuple[int, int] | None = option(None)
    overwrite: bool = option(False, "Estimate every fg/ file again (this or another --method).")
    ray: str | None = option(None)  # estimate on Ray (datagen.cluster): its address, or "local"; None: here
    progress: bool = option(True)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown method {self.method!r}: use one of {', '.join(METHODS)}")
        for split in self.splits:
            if split not in SPLITS:
                raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        object.__setattr__(self, "shard", resolve_shard(self.shard))
        check_shared_paths(self.ray, {"DIRECTORY": self.root})


@dataclass
class ForegroundResult(InPlaceResult):
    """`new`: fg/ files written now; `existing`: photo rows whose fg/ file was already there; `rows_updated`: rows
    given foreground_file_name; `waiting`: photo rows still without fg/."""


@dataclass(frozen=True)
class ForegroundJob:
    image: Path
    alpha: Path
    target: Path
    method: str


def estimate_one(job: ForegroundJob) -> Skip | None:
    """Estimate and write one fg/ file (F with the row's own alpha); a Skip when an input cannot be read."""
    try:
        image, alpha = read_pair(job.image, job.alpha)
    except ImageReadError as error:
        return Skip(error.path, f"unreadable input: {error.reason}")
    rgba = np.dstack([estimate_foreground(image, alpha, job.method), alpha])
    write_atomic(job.target, encode_png(rgba))
    return None


RAY_BATCH = 4  # images per Ray task: `ml` takes about a second per 1024 px image


FOREGROUND_COLUMNS = ("file_name", "alpha_file_name", "foreground_file_name", "foreground_method")


@dataclass
class PhotoRows:
    """The photo rows (an image and an alpha) of a split as foreground reads them: `records.file_table` reduced a batch
    at a time as it is read, so no object per row and of the FOREGROUND_COLUMNS only the ids are held: `ids` (an Arrow
    array), `numbers` (each one's row number in the file), `named` (whether its row already names its fg/ file and
    `method`), `methods` (the methods the rows name)."""

    ids: Any
    numbers: np.ndarray
    named: np.ndarray
    methods: set[str]

    @classmethod
    def read(cls, root: Path, split: str, method: str) -> PhotoRows:
        import pyarrow as pa
        import pyarrow.compute as pc

        ids, numbers, named, methods = StringColumn(), [], [], set()

        def keep(batch, start: int):
            if start == 0:  # the first batch of a reading (Arrow's, or the row by row one that replaces it)
                ids.finish(), numbers.clear(), named.clear(), methods.clear()
            photo = photo_flags(batch)
            part = batch.filter(photo)
            ids.extend_array(part.column("id"))
            numbers.append(start + np.flatnonzero(photo.to_numpy(zero_copy_only=False)))
            same = named_by_id(part.column("foreground_file_name"), part.column("id"), "fg")
            same = pc.and_(same, pc.equal(part.column("foreground_method"), method).fill_null(False))
            named.append(same.to_numpy(zero_copy_only=False))
            methods.update(pc.unique(part.column("foreground_method")).drop_null().to_pylist())
            return pa.record_batch([photo], names=["photo"])

        file_table(root, split, FOREGROUND_COLUMNS, reduce=keep)
        return cls(ids.finish(), np.concatenate(numbers), np.concatenate(named), methods)


def run_foreground(config: ForegroundConfig, command: str = "datagen foreground") -> ForegroundResult:
    """Write fg/ for the photo rows of `config.root` (this shard's share) and record them in the rows."""
    root = Path(config.root)
    result = ForegroundResult(root)
    chosen = chosen_splits(root, config.splits, "foreground")
    with stage_run(result, config, command, shard=config.shard, ray=config.ray, in_place=True,
                   record="foreground.json") as run:  # fmt: skip
        rejected = rejected_ids(root)  # a rejected row (say, an unreadable one) holds no split back
        for split in chosen:
            _estimate_split(config, split, rejected, run)
    return result


def _estimate_split(config: ForegroundConfig, split: str, rejected: dict[str, str], run: Run) -> None:
    """This shard's missing fg/ files of one split; once no row of the split waits, its rows get the columns. The fg/
    folder is listed once, not stat-ed a file at a time (`records.files_of_ids`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    root, result = Path(config.root), run.result
    photos = PhotoRows.read(root, split, config.method)
    if not len(photos.ids):
        raise InputError(f"{root}/{split} has no photo rows (image + alpha): nothing to estimate")
    check_method(root, split, sorted(photos.methods), config)
    folder = os.path.join(str(root / split), "")
    ids = StringIndex(photos.ids)
    index, count = config.shard
    mine = np.arange(index, len(photos.ids), count)
    every = np.arange(len(photos.ids))
    present = files_of_ids(f"{folder}fg/", ids, ".png", every)
    todo = mine if config.overwrite else mine[~present[mine]]
    result.existing += len(mine) - len(todo)
    table = file_table_rows(root, split, FOREGROUND_COLUMNS, photos.numbers[todo], photos.ids.take(todo))

    def made() -> Iterator[ForegroundJob]:  # a batch of rows at a time: a million jobs are never all held
        for start in range(0, table.num_rows, STRING_BATCH):
            part = table.slice(start, STRING_BATCH).to_pydict()
            for sample_id, image, alpha in zip(part["id"], part["file_name"], part["alpha_file_name"]):
                foreground = Path(folder + plane_name("foreground", sample_id))
                yield ForegroundJob(Path(folder + image), Path(folder + alpha), foreground, config.method)

    jobs = Lazy(made, table.num_rows)
    outcomes = map_items(estimate_one, jobs, workers=config.workers, ray=config.ray, ray_batch=RAY_BATCH, chunksize=2)
    for outcome in tqdm(
        outcomes, total=len(jobs), desc=f"foreground {split}", unit="image", disable=not config.progress
    ):
        if outcome is None:
            result.new += 1
        else:
            run.skip(outcome)
    counted = ~pc.is_in(photos.ids, value_set=pa.array(list(rejected), pa.string())).to_numpy(zero_copy_only=False)
    if jobs:  # fg/ changed: listed again (other shards may have written theirs meanwhile too)
        present = files_of_ids(f"{folder}fg/", ids, ".png", every)
    waiting = int(np.count_nonzero(counted & ~present))
    if waiting:
        result.waiting[split] = waiting
    else:
        result.rows_updated[split] = record_foregrounds(root, split, config.method, photos)


def check_method(root: Path, split: str, methods: list[str], config: ForegroundConfig) -> None:
    """Refuse to label fg/ files of another method (`methods`: those the split's photo rows name) as this one's:
    --overwrite estimates them again."""
    methods = sorted(set(methods) - {config.method})
    if methods and not config.overwrite:
        raise InputError(
            f"fg/ of {root}/{split} was estimated with {', '.join(methods)}, not {config.method}: add "
            f"--overwrite to estimate it again with {config.method}, or pass --method {methods[0]}"
        )


def record_foregrounds(root: Path, split: str, method: str, photos: PhotoRows) -> int:
    """Give every photo row of the split `foreground_file_name` and `foreground_method`; returns how many changed. A
    split whose rows all say so already (`photos.named`) is not rewritten."""
    if photos.named.all():
        return 0

    def update(row: dict[str, Any]) -> dict[str, Any]:
        if not (row.get("file_name") and row.get("alpha_file_name")):
            return {}
        return {"foreground_file_name": f"fg/{row['id']}.png", "foreground_method": method}

    return update_rows(root, split, update)
