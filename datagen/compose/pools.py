"""Foreground, background and occluder pools: listing them in a fixed order, loading them with a cache."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datagen.alpha import NoAlphaError, crop_to_alpha
from datagen.cluster import batched
from datagen.errors import InputError
from datagen.io import (
    IMAGE_EXTENSIONS,
    has_alpha_channel,
    is_hidden,
    open_image,
    read_alpha,
    read_foreground,
    read_image,
    readable_path,
)
from datagen.records import (
    STRING_BATCH,
    StringColumn,
    iter_samples,
    parse_spec,
    plane_name,
    pull_first,
    rejected_ids,
    splits,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolItem:
    """One pool entry. id: '<pool folder name>:<sample id or relative path>'. For a photo row used as a
    foreground, `path` is the image and `alpha` its matte; otherwise `path` is an RGBA file or a background."""

    id: str
    path: Path
    alpha: Path | None = None
    license: str = "unknown"


class Pool(Sequence[PoolItem]):
    """Pool items as Arrow columns (id, path, alpha, license), sorted by id, each PoolItem made when asked (17 us). A
    pool reaches every compose or loader worker as a few buffers, about 100 bytes an item (10 MB and 0.01 s per 10^5
    unpickled); a list of PoolItem objects took 78-85 MB and 0.8-1.1 s per 10^5 in every worker."""

    def __init__(self, table) -> None:
        self.table = table

    @classmethod
    def of(cls, items: Iterable[PoolItem]) -> Pool:
        """A pool of `items`, sorted by id; built a batch at a time (no list of a million items)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        columns = {name: StringColumn() for name in ("id", "path", "alpha", "license")}
        for batch in batched(items, STRING_BATCH):
            columns["id"].extend([item.id for item in batch])
            columns["path"].extend_bytes([os.fsencode(item.path) for item in batch])  # a file name need not be UTF-8
            columns["alpha"].extend_bytes([os.fsencode(item.alpha) if item.alpha else b"" for item in batch])
            columns["license"].extend([item.license for item in batch])
        arrays = {name: column.finish(binary=name in ("path", "alpha")) for name, column in columns.items()}
        arrays["license"] = arrays["license"].dictionary_encode()  # a handful of licences
        table = pa.table(arrays)
        return cls(table.take(pc.sort_indices(table, [("id", "ascending")])))

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> PoolItem:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"pool index {index} out of range ({len(self)} items)")
        row = self.table.slice(index % len(self), 1).to_pylist()[0]
        return _item(row)

    def __iter__(self) -> Iterator[PoolItem]:
        for batch in self.table.to_batches(STRING_BATCH):
            yield from map(_item, batch.to_pylist())

    def subset(self, keep: np.ndarray) -> Pool:
        """The items where the bool mask `keep` is set, in the same order."""
        import pyarrow as pa

        return Pool(self.table.filter(pa.array(keep)))


def _item(row: dict[str, Any]) -> PoolItem:
    alpha = Path(os.fsdecode(row["alpha"])) if row["alpha"] else None
    return PoolItem(row["id"], Path(os.fsdecode(row["path"])), alpha, row["license"])


class PoolError(InputError):
    """A pool that is missing or empty: says where and how to make one."""


def pool_splits(root: Path, split: str | None) -> list[str]:
    """The splits a pool reads: the one named, else every split but `test` (test splits hold the field's
    benchmarks: they feed composites, and so training, only when a user names them)."""
    present = splits(root)
    if split:
        if split not in present:
            raise PoolError(f"{root} has no split {split!r} (it has {', '.join(present)})")
        return [split]
    return [name for name in present if name != "test"]


def list_pool(
    specs: Sequence[str | Path], kind: str, raw_foreground: bool = False, raw_option: str | None = "--raw-foreground"
) -> Pool:
    """All items of dataset directories or plain image folders, sorted by id (`kind`: foreground or background).

    `specs` are `DIR[:SPLIT]`. Dataset directories give their complete samples of the split named, or of every split
    but `test`: foregrounds from `fg/`; backgrounds from `im/`. A photo row (im/ + gt/) without `fg/` is refused as
    a foreground (its colour holds its old background: `datagen foreground DIR` estimates the person's own) unless
    `raw_foreground` (`raw_option` names the option that allows it; None where there is none: training).
    Plain folders give every image file below them.
    """
    pool = Pool.of(_pool_items(specs, kind, raw_foreground, raw_option))
    if not len(pool):
        raise PoolError(f"{kind} pool {', '.join(map(str, specs))} is empty: " + HOW_TO_MAKE[kind])
    return pool


def _pool_items(
    specs: Sequence[str | Path], kind: str, raw_foreground: bool, raw_option: str | None
) -> Iterator[PoolItem]:
    """The items of `list_pool`, as they are found (unsorted)."""
    for spec in specs:
        path, split, _ = parse_spec(str(spec), OPTIONS[kind])
        root = Path(path)
        if message := pull_first(path, f"a {kind} pool"):
            raise PoolError(f"{kind} pool {path}: {message}")
        if not root.is_dir():
            raise PoolError(f"{kind} pool {root} does not exist: " + HOW_TO_MAKE[kind])
        name = root.name
        if splits(root):
            if rejected := rejected_ids(root):
                log.info("%s pool %s: %d samples rejected in rejected.jsonl are left out", kind, root, len(rejected))
            raw = []  # photo rows without fg/: refused (after the listing, to name them all) unless raw_foreground
            for split_name in pool_splits(root, split):
                for sample in iter_samples(root, split_name):
                    license = str(sample.row.get("license", "unknown"))
                    if kind != "background" and sample.path("foreground"):
                        yield PoolItem(f"{name}:{sample.id}", sample.path("foreground"), None, license)
                    elif kind != "background" and sample.is_background:
                        continue  # no alpha: not a foreground
                    elif sample.path("image"):
                        alpha = sample.path("alpha") if kind != "background" else None
                        yield PoolItem(f"{name}:{sample.id}", sample.path("image"), alpha, license)
                        raw += [sample] if alpha and not raw_foreground else []
            if raw:
                raise PoolError(_without_foreground(root, kind, raw, raw_option))
        elif split:
            raise PoolError(f"{kind} pool {root} is a plain folder: it has no splits, so give it without :{split}")
        else:
            for path in sorted(root.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not is_hidden(path.name):
                    yield PoolItem(f"{name}:{readable_path(path.relative_to(root))}", path)


def _without_foreground(root: Path, kind: str, raw: list, raw_option: str | None) -> str:
    """What to do about photo rows without fg/: run `datagen foreground`, or, where it ran and left some rows without
    a file (their split's rows then name no fg/), fix or reject those rows first."""
    failed = [sample.id for sample in raw if not (root / sample.split / plane_name("foreground", sample.id)).is_file()]
    raw_hint = f", or pass {raw_option} to composite the photos as they are" if raw_option else ""
    if failed and len(failed) < len(raw):
        shown = ", ".join(failed[:3]) + (" ..." if len(failed) > 3 else "")
        return (
            f"{kind} pool {root}: `datagen foreground` made fg/ for every photo row but {len(failed)} ({shown}), so "
            f"their split's rows do not name fg/ yet; the reasons are in {root / 'skipped.jsonl'}. Fix those files "
            f"or reject them (`datagen review {root} --reject ID`), then run `datagen foreground {root}` again"
            + raw_hint
        )
    return (
        f"{kind} pool {root}: {len(raw)} photo rows have no fg/ (the person's own colour; the photo's holds its old "
        f"background, a halo in every composite): run `datagen foreground {root}` first" + raw_hint
    )


OPTIONS = {"foreground": "--fg", "background": "--bg", "occluder": "--occluders"}
HOW_TO_MAKE = {
    "foreground": "make one with `datagen synth` (or `datagen import folder DIR` for RGBA cut-outs), or pass --fg",
    "background": "make one with `datagen synth --kind background`, or pass --bg with any folder of images",
    "occluder": "pass --occluders with a folder of RGBA images, or leave it out for procedural occluders",
}


def load_foreground(item: PoolItem) -> np.ndarray:
    """Straight RGBA uint8, cropped to its alpha bounding box. An image of a plain folder must carry its alpha
    (NoAlphaError otherwise: the composite would paste a rectangle and label it person)."""
    if item.alpha is not None:
        rgba = np.dstack([read_image(item.path), read_alpha(item.alpha)])
    else:
        with open_image(item.path, load=False) as header:
            if not has_alpha_channel(header):
                raise NoAlphaError("no alpha channel: a plain folder's images must be RGBA cut-outs (PNG, WebP)")
        rgba = read_foreground(item.path)
    return np.ascontiguousarray(crop_to_alpha(rgba))


def load_background(item: PoolItem, max_side_px: int) -> np.ndarray:
    """RGB uint8, shrunk (INTER_AREA) so its short side is at most `max_side_px`: bounds memory and cost."""
    image = read_image(item.path)
    short = min(image.shape[:2])
    if short > max_side_px:
        scale = max_side_px / short
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


class Cache:
    """A least-recently-used cache of decoded images (one per worker process), bounded in bytes."""

    def __init__(self, capacity_mb: float):
        self.capacity = int(capacity_mb * 2**20)
        self.size = 0
        self.entries: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, key: str, load: Callable[[], np.ndarray]) -> np.ndarray:
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        value = load()
        if value.nbytes <= self.capacity:
            self.entries[key] = value
            self.size += value.nbytes
            while self.size > self.capacity:
                self.size -= self.entries.popitem(last=False)[1].nbytes
        return value


def partition(count: int, fraction: float, seed: int, salt: int) -> np.ndarray:
    """Boolean mask of the `count` pool items held out for validation: round(fraction * count) of them, at
    least one when fraction > 0, drawn by (seed, salt). The rest stay for training (at least one too)."""
    held = np.zeros(count, bool)
    if fraction <= 0:
        return held
    size = min(count - 1, max(1, round(fraction * count)))
    if size < 1:
        raise PoolError(f"--val-fraction needs at least 2 items in every pool, found {count}")
    held[np.random.default_rng([seed, salt]).permutation(count)[:size]] = True
    return held
