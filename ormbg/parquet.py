"""Parquet shards as training and validation sources, read row group by row group, never unpacked to files: a folder
of them (what `datagen push --dry-run` stages) or a Hub dataset (`hf://user/name`, read in place over HTTP ranges).

Order. A split's rows are cut into pieces: its Parquet row groups, each split further only when there are fewer row
groups than lanes. A lane is what one DataLoader worker of one process reads: micro-step b of process r is read
from lane `r * lanes_per_rank + b % lanes_per_rank`, and the loader hands batches to its workers in turn, so each
worker reads one lane's row groups and no row group is read twice in an epoch. In epoch e a lane reads the pieces
`perm[lane::lanes]` of a permutation drawn from (seed, e), each piece's rows in a permutation drawn from (seed, e,
piece), then goes on to epoch e + 1. The n-th row a lane gives is a function of (seed, lane, n) alone: `MixSampler`
counts each lane's draws from the step numbers, so `--resume` at step s continues exactly where an uninterrupted run
would be, and no reader state is saved. There is no shuffle buffer (the datasets library's is not part of its saved
state, so it would make resume inexact); the two seeded permutations are the shuffle.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from datagen.errors import InputError, MissingInputError
from datagen.io import ImageReadError, check_pair, decode_bytes, read_alpha, read_image
from datagen.records import HUB_MATTE_COLUMNS, HUB_SCHEME
from datagen.shards import (
    hub_repo,
    image_columns,
    list_shards,
    read_row_group,
    reading,
    shard_metadata,
    shard_name,
)

log = logging.getLogger(__name__)
EVALUATION_COLUMNS = ("id", "subset", "trimap")  # what evaluation reads of a row where `push` wrote it
SALT = 0x50415251  # "PARQ": keeps these permutations apart from the sampler's draws of the same seed


def lane_of(step: int, rank: int, lanes_per_rank: int) -> int:
    """The lane that micro-step `step` of process `rank` reads its Parquet rows from."""
    return rank * lanes_per_rank + step % lanes_per_rank


@dataclass
class ParquetRows:
    """One split of Parquet shards: its files, row groups and columns (footers only; the rows stay in the files).

    Small and picklable: DataLoader workers get a copy and each keeps the one row group it is reading."""

    location: str  # the folder or hf://user/name, for messages and `what`
    split: str
    files: list[str]  # local paths, or paths on hub_filesystem()
    groups: np.ndarray  # (G, 3) int64: file index, row group index, rows
    image_column: str
    matte_column: str
    seed: int = 0
    lanes_per_rank: int = 1
    world_size: int = 1
    extra_columns: tuple[str, ...] = ()  # read beside image and matte, for evaluation: of EVALUATION_COLUMNS
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return int(self.groups[:, 2].sum())

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cache": {}}  # a worker starts without the parent's row group

    # ----- reading -----
    def _group(self, file_index: int, group: int) -> dict[str, list]:
        """The image bytes, matte bytes and `extra_columns` of one row group (the last one read is kept)."""
        key = (file_index, group)
        if self._cache.get("key") != key:
            columns = [self.image_column, self.matte_column, *self.extra_columns]
            table = read_row_group(self.location, self.files[file_index], group, columns)
            data = {
                name: [cell.get("bytes") if isinstance(cell, dict) else cell for cell in table.column(name).to_pylist()]
                for name in columns
            }
            self._cache.update(key=key, data=data)
        return self._cache["data"]

    def name(self, file_index: int) -> str:
        """A file's path within the dataset (data/train-00000-of-00004.parquet)."""
        return shard_name(self.location, self.files[file_index])

    def read(self, file_index: int, group: int, row: int) -> tuple[np.ndarray, np.ndarray, str]:
        """(HxWx3 image, HxW uint8 alpha, what) of one row, decoded and checked as files are (datagen.io's readers);
        an unreadable row is an ImageReadError naming the file and row."""
        data = self._group(file_index, group)
        name = self.name(file_index)
        where = f"{self.location}/{name}:group {group}:row {row}"
        image_bytes, matte_bytes = data[self.image_column][row], data[self.matte_column][row]
        if not image_bytes or not matte_bytes:
            raise ImageReadError(where, f"empty `{self.image_column if not image_bytes else self.matte_column}`")
        image, alpha = check_pair(
            decode_bytes(image_bytes, read_image, where), decode_bytes(matte_bytes, read_alpha, where), where
        )
        return image, alpha, json.dumps({"parquet": f"{self.location}/{name}", "group": group, "row": row})

    def locate(self, index: int) -> tuple[int, int, int]:
        """(file index, row group, row in it) of row `index` in file order."""
        ends = np.cumsum(self.groups[:, 2])
        piece = int(np.searchsorted(ends, index, side="right"))
        file_index, group, rows = (int(v) for v in self.groups[piece])
        return file_index, group, index - int(ends[piece]) + rows

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Row `index` in file order (validation and evaluation read every row once, in this order)."""
        return self.read(*self.locate(index))

    def extras(self, file_index: int, group: int, row: int) -> dict[str, Any]:
        """The `extra_columns` that a row (as `locate` names it) fills: id and subset as they are, the trimap decoded
        (uint8)."""
        data = self._group(file_index, group)
        found = {name: data[name][row] for name in self.extra_columns if data[name][row] not in (None, b"", "")}
        if "trimap" in found:
            where = f"{self.location}/{self.name(file_index)}:group {group}:row {row}"
            found["trimap"] = decode_bytes(found["trimap"], read_alpha, where)
        return found

    # ----- the training order -----
    @property
    def lanes(self) -> int:
        return self.lanes_per_rank * self.world_size

    def pieces(self) -> np.ndarray:
        """(P, 4) int64: file index, row group, first row, end row; at least one piece per lane."""
        parts = -(-self.lanes // len(self.groups))  # row groups are split only when there are fewer than lanes
        pieces = []
        for file_index, group, rows in self.groups.tolist():
            bounds = np.linspace(0, rows, min(parts, rows) + 1).round().astype(int)
            pieces += [(file_index, group, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        return np.asarray(pieces, np.int64)

    def _lane_epoch(self, lane: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The pieces lane `lane` reads in epoch `epoch`, in order, and their cumulative row counts (0 first)."""
        key = ("epoch", lane, epoch)
        if key not in self._cache:
            pieces = self._cache.setdefault("pieces", self.pieces())
            order = np.random.default_rng([self.seed, SALT, epoch]).permutation(len(pieces))[lane :: self.lanes]
            sizes = pieces[order, 3] - pieces[order, 2]
            self._cache = {k: v for k, v in self._cache.items() if not (isinstance(k, tuple) and k[1] == lane)}
            self._cache[key] = (order, np.concatenate([[0], np.cumsum(sizes)]))
        return self._cache[key]

    def lane_row(self, lane: int, n: int) -> tuple[np.ndarray, np.ndarray, str]:
        """The n-th row (from 0) that lane `lane` reads, over as many epochs as it takes."""
        epoch, start = self._cache.get(("position", lane), (0, 0))
        if n < start:
            epoch, start = 0, 0
        while True:
            order, ends = self._lane_epoch(lane, epoch)
            if n < start + ends[-1]:
                break
            start, epoch = start + int(ends[-1]), epoch + 1
        self._cache[("position", lane)] = (epoch, start)
        at = int(np.searchsorted(ends, n - start, side="right")) - 1
        piece_index = int(order[at])
        file_index, group, first, end = (int(v) for v in self._cache["pieces"][piece_index])
        within = np.random.default_rng([self.seed, SALT, epoch, piece_index]).permutation(end - first)
        return self.read(file_index, group, first + int(within[n - start - int(ends[at])]))

    def sample(self, step: int, rank: int, n: int) -> tuple[np.ndarray, np.ndarray, str]:
        return self.lane_row(lane_of(step, rank, self.lanes_per_rank), n)


def open_parquet(
    path: str, split: str, seed: int = 0, option: str = "--data", download: bool = False, evaluation: bool = False
) -> ParquetRows:
    """The `split` of the Parquet shards at `path` (a folder or hf://user/name) as a ParquetRows; only footers are
    read. With `download` a Hub dataset's files are fetched into the Hugging Face cache first (once; for a fixed
    validation set or a benchmark). `evaluation`: also read the EVALUATION_COLUMNS the files have. Errors name
    `option` and say what was found."""
    files, found = list_shards(path, split)
    if not files:
        raise MissingInputError(
            f"{option} {path}:{split}: no Parquet files of split {split!r} (splits found: {', '.join(found) or 'none'})"
        )
    if path.startswith(HUB_SCHEME) and download:
        from huggingface_hub import hf_hub_download

        repo = hub_repo(path)
        with reading(path):
            files = [
                hf_hub_download(repo, name.split(f"datasets/{repo}/", 1)[1], repo_type="dataset") for name in files
            ]
    groups, schema = [], None
    for index, name in enumerate(files):
        file_schema, metadata = shard_metadata(path, name, option)
        schema = schema or file_schema
        groups += [(index, g, metadata.row_group(g).num_rows) for g in range(metadata.num_row_groups)]
    images = image_columns(schema)
    if "image" not in images:
        raise InputError(
            f"{option} {path}: no `image` column of images (columns: {', '.join(schema.names)}); training reads the "
            "image + alpha columns that `datagen push` writes"
        )
    matte = next((name for name in HUB_MATTE_COLUMNS if name in images), None)
    if matte is None:
        raise InputError(
            f"{option} {path}: no matte column ({', '.join(HUB_MATTE_COLUMNS)}) among its image columns "
            f"({', '.join(images)})"
        )
    groups = np.asarray([g for g in groups if g[2] > 0], np.int64).reshape(-1, 3)
    if not len(groups):
        raise MissingInputError(f"{option} {path}:{split}: its Parquet files hold no rows")
    log.info(
        "%s:%s: %d rows in %d row groups of %d files (matte: %s)",
        path,
        split,
        groups[:, 2].sum(),
        len(groups),
        len(files),
        matte,
    )
    readable = [name for name in schema.names if name != "trimap" or name in images]  # a trimap: an image column
    extras = tuple(name for name in EVALUATION_COLUMNS if evaluation and name in readable)
    return ParquetRows(path, split, files, groups, "image", matte, seed, extra_columns=extras)
