"""Plain folders: images and mattes paired by stem (--images GLOB --alphas GLOB), or RGBA cut-outs.

Without globs, every image under SRC must carry an alpha channel (RGBA PNG or WebP): each becomes a
foreground-pool sample (fg/ + gt/), which is how the original ormbg `humans` data set is stored. With globs
(relative to SRC, `**` allowed), images and mattes become photo samples (im/ + gt/). `--split` names the split.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datagen.errors import InputError
from datagen.importers.layout import (
    COLUMNS,
    Discovery,
    LayoutError,
    Pair,
    PairColumns,
    _below,
    image_stem,
    index_by_stem,
    pair_files,
    path_order,
)
from datagen.io import IMAGE_EXTENSIONS, is_hidden, readable_path
from datagen.records import Skip, arrow_strings

KIND = "folder"
LICENSE = "as stated by the owner of the folder (unknown to the importer)"
URL = "-"


def discover(src: Path, config) -> Discovery:
    if not src.is_dir():
        raise LayoutError(KIND, src, ["a folder of images"])
    if config.images or config.alphas:
        if not (config.images and config.alphas):
            raise InputError("folder import: give both --images and --alphas, or neither (RGBA cut-outs)")
        skipped: list[Skip] = []
        images, alphas = (stem_columns(src, pattern, skipped) for pattern in (config.images, config.alphas))
        if images is not None and alphas is not None:  # both listed by Arrow: a million pairs in tens of MB
            found, discovery = len(images.stems), pair_columns(src, config.split, images, alphas)
        else:
            skipped = []
            images = index_by_stem(glob_entries(src, config.images), src, skipped)
            alphas = index_by_stem(glob_entries(src, config.alphas), src, skipped)
            found, discovery = len(images), pair_files(src, config.split, images, alphas)
        if not found:
            raise LayoutError(KIND, src, [f"images matching {config.images!r}"])
        discovery.skipped[:0] = skipped
        return discovery
    discovery = Discovery()
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        key = readable_path(path.relative_to(src))
        if is_hidden(path.name):
            discovery.skipped.append(Skip(key, "hidden or system file"))
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            discovery.skipped.append(Skip(key, "not an image file"))
        else:  # one stem in two subfolders is fine: ids are made unique from the relative path
            discovery.pairs.append(Pair(config.split, key, path.stem, str(path), str(path), rgba=True))
    if not discovery.pairs:
        raise LayoutError(KIND, src, ["RGBA images (or --images GLOB --alphas GLOB)"])
    return discovery


WILDCARD = re.compile(r"[*?[]")


def _one_folder(src: Path, pattern: str) -> tuple[Path, Callable[[str], Any] | None] | None:
    """(the folder, a matcher of names or None for every name) of a pattern whose wildcards are all in its last part
    (`im/*`, `masks/*.png`): its names matched as pathlib matches them (case-sensitive, hidden files too). None for
    any other pattern."""
    folder, _, last = pattern.rpartition("/")
    if not last or WILDCARD.search(folder) or "**" in last or pattern.startswith("/"):
        return None
    matches = None if last == "*" else re.compile(fnmatch.translate(last)).match  # fnmatchcase, compiled once
    return (src / folder if folder else src), matches


def _scan(directory: Path, matches: Callable[[str], Any] | None, batch: int = 65536) -> Iterator[tuple[list, list]]:
    """(names, is a file) of the entries of `directory` that `matches` (all when None), `batch` entries at a time:
    no stat per file, and never a list of a million names."""
    if not directory.is_dir():
        return
    names, files = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if matches is None or matches(entry.name):
                names.append(entry.name)
                files.append(entry.is_file())
                if len(names) == batch:
                    yield names, files
                    names, files = [], []
    yield names, files


def glob_entries(src: Path, pattern: str) -> list[tuple[str, bool]]:
    """(path, is a file) of what `src.glob(pattern)` finds, in `path_order`. A pattern whose wildcards are all in its
    last part is one scandir of that folder (`_one_folder`); any other pattern goes through pathlib."""
    simple = _one_folder(src, pattern)
    if simple is None:
        return path_order([(str(path), path.is_file()) for path in src.glob(pattern)])
    directory, matches = simple
    prefix = os.path.join(str(directory), "")
    listed = [(prefix + name, file) for names, files in _scan(directory, matches) for name, file in zip(names, files)]
    return path_order(listed, one_folder=True)


@dataclass
class StemColumns:
    """`index_by_stem` as Arrow columns: the stems and the paths (relative to SRC) of the image files of one folder,
    in the order the folder lists them."""

    stems: Any  # pa.StringArray
    paths: Any


def stem_columns(src: Path, pattern: str, skipped: list[Skip]) -> StemColumns | None:
    """`index_by_stem(glob_entries(src, pattern))` as columns, its skips appended to `skipped` in the same order (path
    order); None where the pattern is not one folder's (`_one_folder`) or a name is not valid UTF-8 (then the caller
    lists with Python, as before). Names are classified as they are listed and kept as Arrow strings a batch at a
    time: no Python string per file outlives its batch."""
    import pyarrow as pa
    import pyarrow.compute as pc

    simple = _one_folder(src, pattern)
    if simple is None:
        return None
    directory, matches = simple
    prefix = _below(os.path.join(str(directory), ""), os.path.join(str(src), ""))
    names, stems, passed = [], [], []  # Arrow chunks of the image files' names and stems; (name, why) of skips
    try:
        for listed, files in _scan(directory, matches):
            kept, kept_stems = [], []
            for name, is_file in zip(listed, files):
                stem, reason = image_stem(name, is_file)
                if reason:
                    passed.append((name, reason))
                elif stem is not None:
                    kept.append(name)
                    kept_stems.append(stem)
            names.append(arrow_strings(kept))
            stems.append(arrow_strings(kept_stems))
    except UnicodeEncodeError:  # a name Python holds with surrogates (not UTF-8)
        return None
    names = pa.chunked_array(names, pa.string()).combine_chunks()
    stems = pa.chunked_array(stems, pa.string()).combine_chunks()
    if pc.count_distinct(stems).as_py() < len(stems):  # one stem, two files: the first in path order is kept
        counts = pc.value_counts(stems)
        repeated = pc.is_in(stems, value_set=counts.field("values").filter(pc.greater(counts.field("counts"), 1)))
        rows = np.flatnonzero(_numpy(repeated))
        first: dict[str, str] = {}
        for name, stem in sorted(zip(names.take(rows).to_pylist(), stems.take(rows).to_pylist())):
            if stem in first:
                passed.append((name, f"second file with the stem {stem!r}"))
            else:
                first[stem] = name
        keep = np.ones(len(names), bool)
        keep[rows] = _numpy(pc.is_in(names.take(rows), value_set=pa.array(list(first.values()), pa.string())))
        names, stems = names.filter(keep), stems.filter(keep)
    skipped += [Skip(prefix + name, reason) for name, reason in sorted(passed)]  # in path order (one folder)
    return StemColumns(stems, pc.binary_join_element_wise(prefix, names, ""))


def _numpy(mask) -> np.ndarray:
    return mask.to_numpy(zero_copy_only=False)  # Arrow packs booleans in bits: numpy's bytes are a copy


def pair_columns(src: Path, split: str, images: StemColumns, alphas: StemColumns) -> Discovery:
    """`pair_files` of two StemColumns: the pairs as PairColumns (paths relative to SRC; in the order the folder lists
    them, `run_import` sorts them by key), orphans as skips."""
    import pyarrow as pa
    import pyarrow.compute as pc

    discovery = Discovery()
    where = pc.index_in(images.stems, value_set=alphas.stems)  # each image's matte, or null
    paired = where.is_valid()
    for path in sorted(images.paths.filter(pc.invert(paired)).to_pylist()):  # in path order, as pair_files
        discovery.skipped.append(Skip(path, "orphan image: no matte with this stem"))
    for path in sorted(alphas.paths.filter(pc.invert(pc.is_in(alphas.stems, value_set=images.stems))).to_pylist()):
        discovery.skipped.append(Skip(path, "orphan matte: no image with this stem"))
    keys = images.paths.filter(paired)
    count = len(keys)
    columns = {
        "split": pa.repeat(split, count),
        "key": keys,
        "name": images.stems.filter(paired).cast(pa.binary()),  # FILE_NAMED columns are binary: no copy
        "image": keys.cast(pa.binary()),
        "alpha": alphas.paths.take(where.filter(paired)).cast(pa.binary()),
        "trimap": pa.nulls(count, pa.binary()),
        "rgba": pa.array(np.zeros(count, bool)),
        "group": pa.array(np.zeros(count, np.int32)),
    }
    discovery.pairs = PairColumns(pa.table({name: columns[name] for name in COLUMNS}), os.path.join(str(src), ""))
    return discovery
