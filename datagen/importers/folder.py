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

from datagen.console import SPLITS
from datagen.errors import InputError
from datagen.importers.layout import (
    COLUMNS,
    Discovery,
    LayoutError,
    PairColumns,
    _below,
    image_stem,
    index_by_stem,
    pair_files,
    path_order,
    split_column,
)
from datagen.io import readable_path, walk_files
from datagen.records import Skip, StringColumn, index_in, repeated

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
        with _listing(src, config) as bar:
            images, alphas = (
                stem_columns(src, pattern, skipped, bar.update) for pattern in (config.images, config.alphas)
            )
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
    with _listing(src, config) as bar:
        discovery = rgba_columns(src, config.split, bar.update)
    if not len(discovery.pairs):
        raise LayoutError(KIND, src, ["RGBA images (or --images GLOB --alphas GLOB)"])
    return discovery


def _listing(src: Path, config):
    """A counter of the files listed, shown while a large folder is listed (a million take seconds)."""
    from tqdm import tqdm

    return tqdm(desc=f"listing {src}", unit="file", disable=not config.progress, leave=False, mininterval=0.5)


def _parts(item: tuple[str, ...]) -> list[str]:
    return item[0].split(os.sep)  # path order: as pathlib sorts paths, by their parts


def _walk(src: str, skipped: list[tuple[str, str]], batch: int = 65536) -> Iterator[list[str]]:
    """The paths (relative to `src`) of the files below `src`, `batch` at a time, in no set order: what
    `Path.rglob("*")` finds that `is_file()` (`io.walk_files`: links to files followed, a link to a folder not
    entered). A folder that cannot be read is added to `skipped` (path, why), never passed over in silence."""
    root = os.path.join(src, "")

    def unreadable(folder: str, error: OSError) -> None:
        skipped.append(
            (_below(folder, root) if folder != src else ".", f"folder not readable: {error.strerror or error}")
        )

    paths: list[str] = []
    for entry in walk_files(src, unreadable):
        if entry.is_file():
            paths.append(entry.path[len(root) :])
            if len(paths) == batch:
                yield paths
                paths = []
    yield paths


def rgba_columns(src: Path, split: str, counted: Callable[[int], Any] = len) -> Discovery:
    """Every image file below `src` as an RGBA cut-out (image and matte one file), as PairColumns listed a batch at
    a time (a million cut-outs in tens of MB, no object per file); hidden, system and non-image files as skips, in
    path order. Pairs come in the order the folders list them (`run_import` sorts them by key)."""
    import pyarrow as pa

    passed: list[tuple[str, str]] = []
    keys, names = StringColumn(), StringColumn()
    files = None  # the file column's bytes, a column of its own only once a path is not UTF-8 (its key is escaped)
    for listed in _walk(str(src), passed):
        counted(len(listed))
        kept, stems = [], []
        for path in listed:
            stem, reason = image_stem(path.rpartition(os.sep)[2], True)
            if reason:
                passed.append((path, reason))
            else:
                kept.append(path)
                stems.append(stem)
        try:  # valid UTF-8: the key is the path itself, and so are the file column's bytes
            keys.extend(kept)
            if files is not None:
                files.extend(kept)
        except UnicodeEncodeError:  # a name that is not UTF-8: escaped in the key, its own bytes as the file
            files = keys.copy() if files is None else files
            keys.extend([readable_path(path) for path in kept])
            files.extend_bytes([os.fsencode(path) for path in kept])
        try:
            names.extend(stems)
        except UnicodeEncodeError:
            names.extend_bytes([os.fsencode(stem) for stem in stems])
    key = keys.finish()
    image = key.cast(pa.binary()) if files is None else files.finish(binary=True)  # the cast: no copy
    count = len(key)
    columns = {
        "split": split_column(np.full(count, SPLITS.index(split), np.int8)),
        "key": key,
        "name": names.finish(binary=True),
        "image": image,
        "alpha": image,
        "trimap": pa.nulls(count, pa.binary()),
        "rgba": pa.array(np.ones(count, bool)),
        "group": pa.array(np.zeros(count, np.int32)),
    }
    discovery = Discovery(PairColumns(pa.table({name: columns[name] for name in COLUMNS}), os.path.join(str(src), "")))
    passed.sort(key=_parts)
    discovery.skipped = [Skip(readable_path(path), reason) for path, reason in passed]
    return discovery


WILDCARD = re.compile(r"[*?[]")


def _folders(src: Path, pattern: str) -> tuple[list[Path], Callable[[str], Any] | None] | None:
    """(the folders, a matcher of names or None for every name) of a pattern without `**` in its last part (`im/*`,
    `masks/*.png`, `*/im/*.jpg`, `**/gt/*`): the folders that its folder part names, as pathlib finds them (wildcards
    expanded by `src.glob`, folders only, each once), whose names are matched as pathlib matches them (case-sensitive,
    hidden files too). None for any other pattern."""
    folder, _, last = pattern.rpartition("/")
    if not last or "**" in last or pattern.startswith("/"):
        return None
    matches = None if last == "*" else re.compile(fnmatch.translate(last)).match  # fnmatchcase, compiled once
    if not WILDCARD.search(folder):
        return [src / folder if folder else src], matches
    found = {str(path): path for path in src.glob(folder) if path.is_dir()}  # a handful of folders, each once
    return list(found.values()), matches


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
    """(path, is a file) of what `src.glob(pattern)` finds, in `path_order`. A pattern whose last part has no `**` is
    one scandir of each folder it names (`_folders`); any other pattern goes through pathlib."""
    simple = _folders(src, pattern)
    if simple is None:
        return path_order([(str(path), path.is_file()) for path in src.glob(pattern)])
    directories, matches = simple
    listed = []
    for directory in directories:
        prefix = os.path.join(str(directory), "")
        listed += [
            (prefix + name, file) for names, files in _scan(directory, matches) for name, file in zip(names, files)
        ]
    return path_order(listed, one_folder=len(directories) == 1)


@dataclass
class StemColumns:
    """`index_by_stem` as Arrow columns: the stems and the paths (relative to SRC) of the image files that a pattern
    finds, in the order the folders list them."""

    stems: Any  # pa.StringArray
    paths: Any


def stem_columns(
    src: Path, pattern: str, skipped: list[Skip], counted: Callable[[int], Any] = len
) -> StemColumns | None:
    """`index_by_stem(glob_entries(src, pattern))` as columns, its skips appended to `skipped` in the same order (path
    order); None where the pattern is not one that `_folders` lists or a name is not valid UTF-8 (then the caller
    lists with Python, as before). Names are classified as they are listed and appended to one buffer a batch at a
    time (`StringColumn`): no Python string per file outlives its batch."""
    simple = _folders(src, pattern)
    if simple is None:
        return None
    directories, matches = simple
    root = os.path.join(str(src), "")
    paths, stems, passed = StringColumn(), StringColumn(), []  # the image files' paths and stems; (path, why) of skips
    try:
        for directory in directories:
            prefix = _below(os.path.join(str(directory), ""), root)
            prefix.encode()  # a folder whose name is not UTF-8 raises UnicodeEncodeError, as such a file name does
            for listed, files in _scan(directory, matches):
                counted(len(listed))
                kept, kept_stems = [], []
                for name, is_file in zip(listed, files):
                    stem, reason = image_stem(name, is_file)
                    if reason:
                        passed.append((prefix + name, reason))
                    elif stem is not None:
                        kept.append(name)
                        kept_stems.append(stem)
                paths.extend(kept, prefix)
                stems.extend(kept_stems)
    except UnicodeEncodeError:  # a name Python holds with surrogates (not UTF-8)
        return None
    paths, stems = paths.finish(), stems.finish()
    rows = np.flatnonzero(repeated(stems))
    if rows.size:  # one stem, two files: the first in path order is kept
        first: dict[str, str] = {}
        for path, stem in sorted(zip(paths.take(rows).to_pylist(), stems.take(rows).to_pylist()), key=_parts):
            if stem in first:
                passed.append((path, f"second file with the stem {stem!r}"))
            else:
                first[stem] = path
        kept = set(first.values())
        keep = np.ones(len(paths), bool)
        keep[rows] = [path in kept for path in paths.take(rows).to_pylist()]
        paths, stems = paths.filter(keep), stems.filter(keep)
    skipped += [Skip(path, reason) for path, reason in sorted(passed, key=_parts)]
    return StemColumns(stems, paths)


def pair_columns(src: Path, split: str, images: StemColumns, alphas: StemColumns) -> Discovery:
    """`pair_files` of two StemColumns: the pairs as PairColumns (paths relative to SRC; in the order the folder lists
    them, `run_import` sorts them by key), orphans as skips."""
    import pyarrow as pa

    discovery = Discovery()
    where = index_in(images.stems, alphas.stems)  # each image's matte, or -1 (the stems of each side are unique)
    paired = where >= 0
    matted = np.zeros(len(alphas.stems), bool)
    matted[where[paired]] = True
    for path in sorted(images.paths.filter(~paired).to_pylist()):  # in path order, as pair_files
        discovery.skipped.append(Skip(path, "orphan image: no matte with this stem"))
    for path in sorted(alphas.paths.filter(~matted).to_pylist()):
        discovery.skipped.append(Skip(path, "orphan matte: no image with this stem"))
    everyone = paired.all()  # the usual case: the image columns are taken as they are, not copied
    keys = images.paths if everyone else images.paths.filter(paired)
    count = len(keys)
    columns = {
        "split": split_column(np.full(count, SPLITS.index(split), np.int8)),
        "key": keys,
        "name": (images.stems if everyone else images.stems.filter(paired)).cast(pa.binary()),  # binary: no copy
        "image": keys.cast(pa.binary()),
        "alpha": alphas.paths.take(where[paired]).cast(pa.binary()),
        "trimap": pa.nulls(count, pa.binary()),
        "rgba": pa.array(np.zeros(count, bool)),
        "group": pa.array(np.zeros(count, np.int32)),
    }
    discovery.pairs = PairColumns(pa.table({name: columns[name] for name in COLUMNS}), os.path.join(str(src), ""))
    return discovery
