"""Plain folders: images and mattes paired by stem (--images GLOB --alphas GLOB), or RGBA cut-outs.

Without globs, every image under SRC must carry an alpha channel (RGBA PNG or WebP): each becomes a
foreground-pool sample (fg/ + gt/), which is how the original ormbg `humans` data set is stored. With globs
(relative to SRC, `**` allowed), images and mattes become photo samples (im/ + gt/). `--split` names the split.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from datagen.errors import InputError
from datagen.importers.layout import (
    Discovery,
    LayoutError,
    Pair,
    index_by_stem,
    pair_files,
    path_order,
)
from datagen.io import IMAGE_EXTENSIONS, is_hidden, readable_path
from datagen.records import Skip

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
        images = index_by_stem(glob_entries(src, config.images), src, skipped)
        alphas = index_by_stem(glob_entries(src, config.alphas), src, skipped)
        if not images:
            raise LayoutError(KIND, src, [f"images matching {config.images!r}"])
        discovery = pair_files(src, config.split, images, alphas)
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


def glob_entries(src: Path, pattern: str) -> list[tuple[str, bool]]:
    """(path, is a file) of what `src.glob(pattern)` finds, in `path_order`. A pattern whose wildcards are all in its
    last part (`im/*`, `masks/*.png`) is one scandir of that folder, its names matched as pathlib matches them
    (case-sensitive, hidden files too), with no stat per file; any other pattern goes through pathlib."""
    folder, _, last = pattern.rpartition("/")
    if last and not WILDCARD.search(folder) and "**" not in last and not pattern.startswith("/"):
        directory = src / folder if folder else src
        if not directory.is_dir():
            return []
        with os.scandir(directory) as entries:
            if last == "*":  # every name
                found = [(entry.path, entry.is_file()) for entry in entries]
            else:
                matches = re.compile(fnmatch.translate(last)).match  # what fnmatchcase does, compiled once
                found = [(entry.path, entry.is_file()) for entry in entries if matches(entry.name)]
        return path_order(found, one_folder=True)
    return path_order([(str(path), path.is_file()) for path in src.glob(pattern)])
