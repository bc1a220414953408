"""`datagen import`: public matting data sets and plain folders into the dataset-directory contract.

One module per data set (`discover(src, config) -> Discovery`), a registry, and `run_import`, which pairs,
skips what is done, converts in worker processes and appends rows in a fixed order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datagen import __version__
from datagen.card import write_card
from datagen.cluster import check_shared_paths, ray_map, recording
from datagen.errors import InputError
from datagen.importers import aim500, am2k, dis5k, folder, p3m, ppm100
from datagen.importers.convert import PairJob, import_pair
from datagen.importers.layout import Discovery, LayoutError, Pair
from datagen.io import write_run_json
from datagen.parallel import process_pool
from datagen.records import (
    SPLITS,
    Skip,
    StageResult,
    check_shard,
    iter_rows,
    resume_run,
    unique_ids,
    write_skipped,
)

__all__ = ["IMPORTERS", "ImportConfig", "ImportResult", "LayoutError", "run_import"]

log = logging.getLogger(__name__)
IMPORTERS = {module.KIND: module for module in (p3m, ppm100, aim500, dis5k, am2k, folder)}


@dataclass(frozen=True)
class ImportConfig:
    out: Path  # dataset directory to write (the CLI's default: datasets/<kind>)
    workers: int = 1  # processes converting pairs
    keep_png: bool = False  # lossless sources stay PNG instead of JPEG q95
    jpeg_quality: int = 95  # for re-encoded images (copied JPEGs keep their bytes)
    overwrite: bool = False  # start over instead of resuming
    shard: tuple[int, int] = (0, 1)  # (I, K): this process converts pairs with index % K == I
    images: str | None = None  # folder kind: glob of images under SRC
    alphas: str | None = None  # folder kind: glob of mattes under SRC
    split: str = "train"  # folder kind: the split to write
    # share of train pairs held out as split validation, for data sets without a validation split of their own
    # (P3M-10k, folder): chosen by a hash of each pair's source path, so stable when files are added or sharded
    val_fraction: float = 0.05
    foreground: str | None = None  # also estimate fg/ during import with this method (see datagen foreground)
    ray: str | None = None  # convert on Ray (datagen.cluster): its address, or "local"; None: this machine's workers
    progress: bool = True

    def __post_init__(self) -> None:
        check_shard(self.shard, self.overwrite)
        check_shared_paths(self.ray, {"--out": self.out})
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.foreground is not None and self.foreground not in ("blur-fusion", "ml"):
            raise InputError(f"foreground method {self.foreground!r}: use blur-fusion or ml")
        if bool(self.images) != bool(self.alphas):
            raise InputError("give both --images and --alphas, or neither (a folder of RGBA cut-outs)")


@dataclass
class ImportResult(StageResult):
    counts: dict[str, int] = field(default_factory=dict)  # "<split>[/<subset>]" -> samples in the directory


RAY_BATCH = 16  # pairs per Ray task (a pair takes tens of milliseconds; a task's scheduling about one)


def _convert(jobs: list[PairJob], workers: int, ray: str | None = None) -> Iterator[dict[str, Any] | Skip]:
    if ray:
        yield from ray_map(import_pair, jobs, ray, batch_size=RAY_BATCH)
        return
    if workers == 1:
        yield from map(import_pair, jobs)
        return
    with process_pool(workers, preload=[__name__]) as pool:
        yield from pool.map(import_pair, jobs, chunksize=4)


def run_import(kind: str, src: str | Path, config: ImportConfig, command: str | None = None) -> ImportResult:
    """Import the data set `kind` found at `src` into `config.out`; resumes unless `config.overwrite`."""
    if kind not in IMPORTERS:
        raise InputError(f"unknown kind {kind!r}: use one of {', '.join(IMPORTERS)}")
    started, module, src, out = time.time(), IMPORTERS[kind], Path(src), Path(config.out)
    if not src.is_dir():
        raise LayoutError(kind, src, ["a folder"])
    check_shared_paths(config.ray, {"SRC": src})
    discovery: Discovery = module.discover(src, config)
    discovery.pairs = hold_out(discovery.pairs, kind, config.val_fraction)
    with resume_run(out, config.shard, config.overwrite) as state:
        ids = unique_ids(kind, {pair.key: pair.name for pair in discovery.pairs})
        index, count = config.shard
        mine = [pair for i, pair in enumerate(sorted(discovery.pairs, key=lambda p: p.key)) if i % count == index]
        trimaps = any(pair.trimap for pair in discovery.pairs)
        jobs = [
            PairJob(
                pair,
                ids[pair.key],
                out,
                kind,
                module.LICENSE,
                config.keep_png,
                config.jpeg_quality,
                trimaps,
                config.foreground,
            )
            for pair in mine
            if not state.is_done(pair.split, ids[pair.key])
        ]
        result = ImportResult(out, existing=len(mine) - len(jobs))
        skipped = list(discovery.skipped) if index == 0 else []
        with recording(config.ray) as report:
            outcomes = _convert(jobs, config.workers, config.ray)
            bar = tqdm(outcomes, total=len(jobs), desc=f"import {kind}", unit="pair", disable=not config.progress)
            for job, outcome in zip(jobs, bar):
                if isinstance(outcome, Skip):
                    skipped.append(Skip(_relative(outcome.path, src), outcome.reason))
                else:
                    state.add(job.pair.split, outcome)
                    result.new += 1
        result.ray = report.to_record() if report else None
        result.counts = _counts(out)
        result.seconds = time.time() - started
        _write_records(kind, src, config, result, skipped, module, command)
    return result


def held_out(kind: str, key: str, fraction: float) -> bool:
    """Whether the pair `key` of data set `kind` is in the held-out share `fraction`: by a hash of its name, never
    by position, so the split does not move when files are added, removed or sharded."""
    value = int(hashlib.sha1(f"{kind}:{key}".encode()).hexdigest()[:8], 16) / 2**32
    return value < fraction


def hold_out(pairs: list[Pair], kind: str, fraction: float) -> list[Pair]:
    """Train pairs of a data set without a validation split of its own move to validation by `held_out`."""
    if not fraction or any(pair.split == "validation" for pair in pairs):
        return pairs
    return [
        dataclasses.replace(pair, split="validation")
        if pair.split == "train" and held_out(kind, pair.key, fraction)
        else pair
        for pair in pairs
    ]


def _relative(path: str, src: Path) -> str:
    """A skip's path relative to SRC (workers report matte paths below SRC; image skips are already relative)."""
    for base in (src, src.resolve()):
        if Path(path).is_relative_to(base):
            return str(Path(path).relative_to(base))
    return path


def _counts(out: Path) -> dict[str, int]:
    counts: Counter = Counter()
    for split in SPLITS:
        for row in iter_rows(out, split):  # streamed: a million rows are counted, never held
            counts[f"{split}/{row['subset']}" if row.get("subset") else split] += 1
    return dict(sorted(counts.items()))


def _write_records(
    kind: str, src: Path, config: ImportConfig, result: ImportResult, skipped: list[Skip], module, command
):
    """skipped.jsonl (every skip with its path), run.json (what made it) and the dataset card."""
    result.skipped = write_skipped(result.out, skipped, config.shard)
    record = {
        "command": command or f"datagen import {kind} {src}",
        "tool": f"datagen {__version__}",
        "kind": kind,
        "source": str(src.resolve()),
        "license": module.LICENSE,
        "download": module.URL,
        "config": {**asdict(config), "out": str(config.out)},
        "counts": result.counts,
        "new_samples": result.new,
        "resumed_existing": result.existing,
        "failures_by_reason": dict(result.skipped),
        "ray": result.ray,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(result.seconds, 2),
    }
    write_run_json(result.out, record, config.shard)
    if result.counts:
        write_card(
            result.out,
            f"{kind} (imported with ormbg datagen)",
            f"{module.__doc__.strip()}\n\nLicence as its authors state it: {module.LICENSE}.\nDownload: {module.URL}.",
        )
