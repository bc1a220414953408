"""`datagen import`: public matting data sets and plain folders into the dataset-directory contract.

One module per data set (`discover(src, config) -> Discovery`), a registry, and `run_import`, which pairs,
skips what is done, converts in worker processes and appends rows in a fixed order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from datagen.card import write_card
from datagen.cluster import check_shared_paths
from datagen.console import DATA_ROOT, option
from datagen.errors import InputError
from datagen.foreground import METHODS
from datagen.importers import aim500, am2k, dis5k, folder, p3m, ppm100
from datagen.importers.convert import PairJob, import_pair
from datagen.importers.layout import COLUMNS, Discovery, LayoutError, PairColumns, split_codes, split_column
from datagen.parallel import return_freed_memory, runs_in_workers
from datagen.records import (
    SPLITS,
    SampleIds,
    Skip,
    StageResult,
    file_table,
    iter_strings,
    resolve_shard,
)
from datagen.stage import Lazy, map_items, stage_run

runs_in_workers(__name__)  # its functions run in pool workers

__all__ = ["IMPORTERS", "ImportConfig", "ImportResult", "LayoutError", "run_import"]

log = logging.getLogger(__name__)
IMPORTERS = {module.KIND: module for module in (p3m, ppm100, aim500, dis5k, am2k, folder)}


@dataclass(frozen=True)
class ImportConfig:
    out: Path | None = option(None, f"Dataset directory to write  [default: {DATA_ROOT}/<kind>].")
    workers: int = option(1, "Processes converting pairs.")
    keep_png: bool = option(False, "Keep lossless (PNG) source images as PNG instead of JPEG q95.")
    jpeg_quality: int = option(95, "Quality of re-encoded images (8-bit RGB JPEG sources are copied byte for byte).",
                               type=click.IntRange(1, 100))  # fmt: skip
    overwrite: bool = option(False)
    shard: tuple[int, int] | None = option(None)
    images: str | None = option(None, "folder: glob of images under SRC, e.g. 'photos/*.jpg'.")
    alphas: str | None = option(None, "folder: glob of mattes under SRC, paired with images by stem.")
    split: str = option("train", "folder: the split to write.", type=click.Choice(SPLITS))
    val_fraction: float = option(
        0.05,
        "For data sets without a validation split of their own (p3m, folder): the share of train pairs held out as "
        "split validation, chosen by a hash of each file name (stable when files are added or the run is sharded). "
        "Checkpoints are selected on it, never on the test benchmarks.",
        type=click.FloatRange(0, 1, max_open=True),
    )
    foreground: str | None = option(
        None,
        "Also estimate each photo's foreground colour into fg/ (as `datagen foreground` does), for compose.",
        type=click.Choice(METHODS),
    )
    ray: str | None = option(None)  # convert on Ray (datagen.cluster): its address, or "local"; None: here
    progress: bool = option(True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shard", resolve_shard(self.shard, self.overwrite))
        check_shared_paths(self.ray, {"--out": self.out})
        if self.workers < 1:
            raise InputError(f"workers must be at least 1, got {self.workers}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")
        if self.split not in SPLITS:
            raise InputError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.foreground is not None and self.foreground not in METHODS:
            raise InputError(f"foreground method {self.foreground!r}: use one of {', '.join(METHODS)}")
        if bool(self.images) != bool(self.alphas):
            raise InputError("give both --images and --alphas, or neither (a folder of RGBA cut-outs)")


RAY_BATCH = 16  # pairs per Ray task (a pair takes tens of milliseconds; a task's scheduling about one)


@dataclass
class ImportResult(StageResult):
    counts: dict[str, int] = field(default_factory=dict)  # "<split>[/<subset>]" -> samples in the directory


def run_import(kind: str, src: str | Path, config: ImportConfig, command: str | None = None) -> ImportResult:
    """Import the data set `kind` found at `src` into `config.out`; resumes unless `config.overwrite`. The pairs are
    columns (`PairColumns`) until the ones to convert are made: a no-op rerun of a million holds no object per pair."""
    if kind not in IMPORTERS:
        raise InputError(f"unknown kind {kind!r}: use one of {', '.join(IMPORTERS)}")
    module, src, out = IMPORTERS[kind], Path(src), Path(config.out or Path(DATA_ROOT) / kind)
    config = dataclasses.replace(config, out=out)
    if not src.is_dir():
        raise LayoutError(kind, src, ["a folder"])
    check_shared_paths(config.ray, {"SRC": src})
    return_freed_memory()  # listing a million files and pairing them: large buffers go back when freed (stage_run's)
    discovery: Discovery = module.discover(src, config)
    pairs, skipped = hold_out(PairColumns.of(discovery.pairs), kind, config.val_fraction), discovery.skipped
    del discovery  # its pairs live on as `pairs` alone, dropped once the jobs are made (tens of MB at a million)
    result = ImportResult(out)
    with stage_run(result, config, command or f"datagen import {kind} {src}", shard=config.shard, ray=config.ray,
                   overwrite=config.overwrite) as run:  # fmt: skip
        jobs, splits, mine = _jobs(kind, module.LICENSE, pairs, run.state, config)
        del pairs  # the jobs hold it until the last is made
        result.existing = mine - len(jobs)
        for skip in skipped if config.shard[0] == 0 else []:
            run.skip(skip)
        outcomes = (
            Skip(_relative(outcome.path, src), outcome.reason) if isinstance(outcome, Skip) else outcome
            for outcome in map_items(
                import_pair,
                jobs,
                workers=config.workers,
                ray=config.ray,
                ray_batch=RAY_BATCH,
                chunksize=4,
            )  # fmt: skip
        )
        run.collect_split(zip(splits, outcomes), len(jobs), f"import {kind}", "pair", config.progress)
        del jobs, splits, outcomes  # and the pairs they hold, before the counts are read (30 MB of a peak at 10^6)
        result.counts = _counts(out)
        run.extra = {"kind": kind, "source": str(src.resolve()), "license": module.LICENSE, "download": module.URL}
        if result.counts:
            write_card(
                out,
                f"{kind} (imported with ormbg datagen)",
                f"{module.__doc__.strip()}\n\nLicence as its authors state it: {module.LICENSE}.\nDownload: "
                f"{module.URL}.",
            )
    return result


def _jobs(kind: str, license: str, pairs: PairColumns, state, config: ImportConfig) -> tuple[Lazy, Iterator[str], int]:
    """(the conversions this shard has left to do, in key order, made as they are taken (all made first and queued,
    a fresh import of 10^5 pairs peaked at 287 MB, now 213); their splits, in the same order; how many pairs the
    shard has)."""
    ids = SampleIds(kind, pairs.column("key"), pairs.column("name"))  # made as asked: a million are not held
    todo, mine = _todo(pairs, state.done_mask(pairs.column("split"), ids), config.shard)
    trimaps = pairs.column("trimap").null_count < len(pairs)

    def made() -> Iterator[PairJob]:
        sample_ids = (sample_id for start in range(0, len(todo), 65536) for sample_id in ids.take(todo[start:][:65536]))
        for pair, sample_id in zip(pairs.rows(todo), sample_ids):
            yield PairJob(pair, sample_id, config.out, kind, license, config.keep_png, config.jpeg_quality, trimaps,
                          config.foreground)  # fmt: skip

    return Lazy(made, len(todo)), iter_strings(pairs.column("split").take(todo)), mine


def _todo(pairs: PairColumns, done: np.ndarray, shard: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(the rows of this shard that are not `done`, in key order; how many rows the shard has). A shard takes every
    K-th pair in key order; one shard sorts only the rows left to do (none in a no-op rerun)."""
    import pyarrow.compute as pc

    index, count = shard
    if count == 1:
        todo = np.flatnonzero(~done)
        return todo[pc.sort_indices(pairs.column("key").take(todo)).to_numpy()], len(done)
    mine = pc.sort_indices(pairs.column("key")).to_numpy()[index::count]
    return mine[~done[mine]], len(mine)


def held_out(kind: str, key: str, fraction: float) -> bool:
    """Whether the pair `key` of data set `kind` is in the held-out share `fraction`: by a hash of its name, never
    by position, so the split does not move when files are added, removed or sharded."""
    value = int(hashlib.sha1(f"{kind}:{key}".encode()).hexdigest()[:8], 16) / 2**32
    return value < fraction


def hold_out(pairs: PairColumns, kind: str, fraction: float) -> PairColumns:
    """Train pairs of a data set without a validation split of its own move to validation by `held_out`."""
    import pyarrow.compute as pc

    splits = pairs.column("split")
    if not fraction or not len(pairs) or pc.any(pc.equal(splits, "validation")).as_py():
        return pairs
    held = np.fromiter((held_out(kind, key, fraction) for key in iter_strings(pairs.column("key"))), bool, len(pairs))
    codes = split_codes(splits)
    codes[held & (codes == SPLITS.index("train"))] = SPLITS.index("validation")
    table = pairs.table.set_column(COLUMNS.index("split"), "split", split_column(codes))
    return PairColumns(table, pairs.root, pairs.metadata)


def _relative(path: str, src: Path) -> str:
    """A skip's path relative to SRC (workers report matte paths below SRC; image skips are already relative)."""
    for base in (src, src.resolve()):
        if Path(path).is_relative_to(base):
            return str(Path(path).relative_to(base))
    return path


def _counts(out: Path) -> dict[str, int]:
    import pyarrow.compute as pc

    counts: Counter = Counter()
    for split in SPLITS:  # the subset column alone, read and counted by Arrow: a million rows are never held
        for item in pc.value_counts(file_table(out, split, ("subset",)).column("subset")).to_pylist():
            counts[f"{split}/{item['values']}" if item["values"] else split] += item["counts"]
    return dict(sorted(counts.items()))
