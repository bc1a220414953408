"""What importers share: pairing images with mattes by stem, skips as data, layout errors."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datagen.console import SPLITS
from datagen.errors import InputError
from datagen.io import IMAGE_EXTENSIONS, is_hidden, readable_path
from datagen.records import Skip


@dataclass(slots=True)
class Pair:
    """One source sample: an image, its matte, optionally a trimap, and what to record about it. Paths are strings
    and `metadata` is shared by the pairs of one folder; none is changed once discovered (`dataclasses.replace`
    makes another). Not frozen: a frozen dataclass sets each field through object.__setattr__, 2.7 us a pair
    against 1.2 us, seconds at a million pairs."""

    split: str
    key: str  # unique within the source: the image path relative to the source root
    name: str  # what the id is made from: the stem
    image: str
    alpha: str
    trimap: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rgba: bool = False  # image and matte are one RGBA file: imported as a foreground (fg/ + gt/)


COLUMNS = ("split", "key", "name", "image", "alpha", "trimap", "rgba", "group")
FILE_NAMED = ("name", "image", "alpha", "trimap")  # binary columns: a file name's bytes (os.fsencode)


def split_column(codes: np.ndarray):
    """A split column: Arrow dictionary codes (int8, an index into SPLITS) over the split names, one byte a row where
    strings took nine (9 MB a million pairs)."""
    import pyarrow as pa

    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int8, copy=False)), pa.array(SPLITS))


def split_codes(column) -> np.ndarray:
    """The int8 codes (index into SPLITS) of a split column (`split_column`'s, or plain strings): a new array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(column.type):
        lookup = np.array([SPLITS.index(name) for name in column.dictionary.to_pylist()], np.int8)
        return lookup[column.indices.to_numpy(zero_copy_only=False)]
    codes = np.full(len(column), -1, np.int8)
    for code, name in enumerate(SPLITS):
        codes[pc.equal(column, name).to_numpy(zero_copy_only=False)] = code
    if (codes < 0).any():
        raise ValueError(f"a split not in {SPLITS}: {column.filter(pa.array(codes < 0))[0]}")
    return codes


def _bytes(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class PairColumns:
    """The pairs of a discovery as columns: a pyarrow Table (split (`split_column`), key, name, image, alpha, trimap,
    rgba, group), its paths relative to `root` (a prefix: "" for absolute paths) and, like the name, binary
    (`FILE_NAMED`), `group` an index into `metadata`. A million photo pairs take tens of MB this way, where Pair
    objects took about 400 bytes each. Iterable as Pair objects (`rows` makes those of some rows)."""

    def __init__(self, table, root: str = "", metadata: list[dict[str, Any]] | None = None):
        self.table, self.root, self.metadata = table, root, metadata or [{}]

    @classmethod
    def of(cls, pairs: list[Pair] | PairColumns) -> PairColumns:
        """`pairs` as columns (a list of Pair, as the importers of small data sets give it, is converted)."""
        if isinstance(pairs, PairColumns):
            return pairs
        import pyarrow as pa

        metadata = [pair.metadata for pair in {id(pair.metadata): pair for pair in pairs}.values()]
        index = {id(item): number for number, item in enumerate(metadata)}
        columns = {"split": split_column(np.array([SPLITS.index(pair.split) for pair in pairs], np.int8))}
        columns["key"] = pa.array([pair.key for pair in pairs], pa.string())
        for name in FILE_NAMED:  # as the bytes of the name: a file name that is not UTF-8 is kept as it is
            columns[name] = pa.array([_bytes(getattr(pair, name)) for pair in pairs], pa.binary())
        columns["rgba"] = pa.array([pair.rgba for pair in pairs], pa.bool_())
        columns["group"] = pa.array([index[id(pair.metadata)] for pair in pairs], pa.int32())
        return cls(pa.table(columns), "", metadata)

    def __len__(self) -> int:
        return self.table.num_rows

    def __iter__(self) -> Iterator[Pair]:
        return self.rows(range(len(self)))

    def column(self, name: str):
        return self.table.column(name)

    def rows(self, indices: Iterable[int], batch: int = 65536) -> Iterator[Pair]:
        """The Pairs of rows `indices`, made a batch at a time."""
        indices = np.asarray(indices, np.int64)
        root = self.root
        for start in range(0, len(indices), batch):
            part = self.table.take(indices[start : start + batch]).to_pydict()
            for split, key, name, image, alpha, trimap, rgba, group in zip(*(part[column] for column in COLUMNS)):
                trimap = None if trimap is None else root + os.fsdecode(trimap)
                image, alpha = root + os.fsdecode(image), root + os.fsdecode(alpha)
                yield Pair(split, key, os.fsdecode(name), image, alpha, trimap, self.metadata[group], rgba)


@dataclass
class Discovery:
    pairs: list[Pair] | PairColumns = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)

    def extend(self, other: Discovery) -> None:
        self.pairs += other.pairs
        self.skipped += other.skipped


class LayoutError(InputError):
    """SRC is not a copy of the named data set: says which folders were expected and which were found."""

    def __init__(self, kind: str, src: Path, expected: list[str]):
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in src.iterdir()) if src.is_dir() else []
        shown = ", ".join(found[:20]) + (" ..." if len(found) > 20 else "") if found else "nothing"
        super().__init__(
            f"{src} does not look like {kind}: expected {' and '.join(expected)}; found {shown}. "
            f"Point SRC at the folder that holds them (or pick the right KIND, see `datagen import --help`)."
        )


def image_stem(name: str, is_file: bool) -> tuple[str | None, str | None]:
    """(stem, None) for an image file's name; (None, why it is skipped) for a hidden, system or non-image file; (None,
    None) for what is passed over in silence (a folder). Asked by `index_by_stem` and by folder.py's Arrow listing."""
    if is_hidden(name):
        return None, "hidden or system file"
    if not is_file:
        return None, None
    stem, dot, extension = name.rpartition(".")  # as os.path.splitext for a name not starting with a dot
    stem, suffix = (stem, dot + extension) if dot else (name, "")
    if suffix.lower() not in IMAGE_EXTENSIONS:
        return None, "not an image file"
    return stem, None


def index_by_stem(entries: Iterable[tuple[str, bool]], root: Path, skipped: list[Skip]) -> dict[str, str]:
    """{stem: path} of the image files among `entries` ((path, is a file) below `root`, in `path_order`); hidden,
    system and non-image files become skips (`image_stem`), and of two files with one stem the first is kept. Plain
    strings: a folder of a million files takes seconds."""
    found: dict[str, str] = {}
    prefix = os.path.join(str(root), "")
    for path, is_file in entries:
        stem, reason = image_stem(path.rpartition(os.sep)[2], is_file)
        if reason:
            skipped.append(Skip(_below(path, prefix), reason))
        elif stem is None:
            continue
        elif stem in found:
            skipped.append(Skip(_below(path, prefix), f"second file with the stem {stem!r}"))
        else:
            found[stem] = path
    return found


def path_order(entries: list[tuple[str, bool]], one_folder: bool = False) -> list[tuple[str, bool]]:
    """(path, is a file) entries sorted as pathlib sorts paths (by their parts); `one_folder`: all in one folder,
    where that is the order of the strings (a faster sort)."""
    return sorted(entries) if one_folder else sorted(entries, key=lambda entry: entry[0].split(os.sep))


def _below(path: str, prefix: str) -> str:
    """`path` relative to the root that `prefix` names (the root with a trailing separator)."""
    return path[len(prefix) :] if path.startswith(prefix) else os.path.relpath(path, prefix)


def list_images(directory: Path | None, root: Path, skipped: list[Skip]) -> dict[str, str]:
    """`index_by_stem` over the entries of `directory` (nothing when it is None or absent)."""
    if directory is None or not directory.is_dir():
        return {}
    with os.scandir(directory) as entries:
        listed = [(entry.path, entry.is_file()) for entry in entries]
    return index_by_stem(path_order(listed, one_folder=True), root, skipped)


def pair_files(
    root: Path,
    split: str,
    images: dict[str, str],
    alphas: dict[str, str],
    trimaps: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Discovery:
    """Pair {stem: path} indexes of images and mattes; orphans on either side become skips."""
    discovery, trimaps, metadata = Discovery(), trimaps or {}, dict(metadata or {})
    prefix = os.path.join(str(root), "")
    for stem, image in images.items():
        if stem not in alphas:
            discovery.skipped.append(Skip(_below(image, prefix), "orphan image: no matte with this stem"))
            continue
        key = _below(image, prefix)
        key = key if key.isascii() else readable_path(key)  # an ASCII name is its own readable form
        discovery.pairs.append(Pair(split, key, stem, image, alphas[stem], trimaps.get(stem), metadata))
    for stem, alpha in alphas.items():
        if stem not in images:
            discovery.skipped.append(Skip(_below(alpha, prefix), "orphan matte: no image with this stem"))
    return discovery


def pair_by_stem(
    root: Path,
    split: str,
    images: Path,
    alphas: Path,
    trimaps: Path | None = None,
    metadata: dict[str, Any] | None = None,
) -> Discovery:
    """Pair `images/*` with `alphas/*` (and `trimaps/*` where present) by file stem; extensions may differ."""
    skipped: list[Skip] = []
    indexes = [list_images(folder, root, skipped) for folder in (images, alphas, trimaps)]
    discovery = pair_files(root, split, *indexes, metadata=metadata)
    discovery.skipped[:0] = skipped
    return discovery


def unwrap(src: Path, wrapper: str, marker: str) -> Path:
    """`src/<wrapper>` when the archive wrapped everything in a second folder and `src/<marker>` is absent."""
    if not (src / marker).exists() and (src / wrapper / marker).exists():
        return src / wrapper
    return src
