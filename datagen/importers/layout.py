"""What importers share: pairing images with mattes by stem, skips as data, layout errors."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.errors import InputError
from datagen.io import IMAGE_EXTENSIONS, is_hidden, readable_path
from datagen.records import Skip


@dataclass(frozen=True)
class Pair:
    """One source sample: an image, its matte, optionally a trimap, and what to record about it."""

    split: str
    key: str  # unique within the source: the image path relative to the source root
    name: str  # what the id is made from: the stem
    image: Path
    alpha: Path
    trimap: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rgba: bool = False  # image and matte are one RGBA file: imported as a foreground (fg/ + gt/)


@dataclass
class Discovery:
    pairs: list[Pair] = field(default_factory=list)
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


def index_by_stem(paths: Iterable[Path], root: Path, skipped: list[Skip]) -> dict[str, Path]:
    """{stem: path} of the image files among `paths`; hidden, system and non-image files become skips."""
    found: dict[str, Path] = {}
    for path in sorted(paths):
        relative = str(path.relative_to(root))
        if is_hidden(path.name):
            skipped.append(Skip(relative, "hidden or system file"))
        elif not path.is_file():
            continue
        elif path.suffix.lower() not in IMAGE_EXTENSIONS:
            skipped.append(Skip(relative, "not an image file"))
        elif path.stem in found:
            skipped.append(Skip(relative, f"second file with the stem {path.stem!r}"))
        else:
            found[path.stem] = path
    return found


def list_images(directory: Path | None, root: Path, skipped: list[Skip]) -> dict[str, Path]:
    """`index_by_stem` over the entries of `directory` (nothing when it is None or absent)."""
    if directory is None or not directory.is_dir():
        return {}
    return index_by_stem((Path(entry.path) for entry in os.scandir(directory)), root, skipped)


def pair_files(
    root: Path,
    split: str,
    images: dict[str, Path],
    alphas: dict[str, Path],
    trimaps: dict[str, Path] | None = None,
    metadata: dict[str, Any] | None = None,
) -> Discovery:
    """Pair {stem: path} indexes of images and mattes; orphans on either side become skips."""
    discovery, trimaps = Discovery(), trimaps or {}
    for stem, image in images.items():
        if stem not in alphas:
            discovery.skipped.append(Skip(str(image.relative_to(root)), "orphan image: no matte with this stem"))
            continue
        key = readable_path(image.relative_to(root))
        discovery.pairs.append(Pair(split, key, stem, image, alphas[stem], trimaps.get(stem), dict(metadata or {})))
    for stem, alpha in alphas.items():
        if stem not in images:
            discovery.skipped.append(Skip(str(alpha.relative_to(root)), "orphan matte: no image with this stem"))
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
