"""`datagen preview`: a contact sheet of a dataset directory, one row per sample.

Photo rows: image | alpha | cutout over a checkerboard. Foreground-pool rows: foreground over a
checkerboard | alpha. Background rows: the image. Each tile keeps the sample's aspect ratio; the id is
written under the first tile.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from datagen.alpha import over
from datagen.errors import InputError
from datagen.io import ImageReadError, encode_png, read_alpha, read_foreground, read_image, read_pair, write_atomic
from datagen.records import Sample, iter_samples, no_splits, splits

log = logging.getLogger(__name__)

LABEL_PX = 18
GAP_PX = 4


def checkerboard(height: int, width: int, square_px: int = 16) -> np.ndarray:
    """HxWx3 uint8 light-grey checkerboard, the usual backdrop for showing transparency."""
    ys, xs = np.indices((height, width)) // square_px
    return np.where(((ys + xs) % 2 == 0)[..., None], 204, 153).astype(np.uint8).repeat(3, axis=2)


def unreadable_tile(size_px: int = 64) -> np.ndarray:
    """HxWx3 uint8 placeholder for a sample that cannot be shown: dark grey, crossed out in red."""
    tile = np.full((size_px, size_px, 3), 48, np.uint8)
    cv2.line(tile, (0, 0), (size_px - 1, size_px - 1), (200, 40, 40), 2)
    cv2.line(tile, (0, size_px - 1), (size_px - 1, 0), (200, 40, 40), 2)
    return tile


def sample_tiles(sample: Sample) -> list[np.ndarray]:
    """The row of RGB tiles (full resolution) that shows one sample; one placeholder tile (unreadable_tile) for a
    sample whose files cannot be read or disagree in size, so one bad file never fails a sheet or a page."""
    try:
        return _tiles(sample)
    except ImageReadError as error:
        log.warning("%s: %s (shown as a crossed-out tile)", error.path, error.reason)
        return [unreadable_tile()]


def _tiles(sample: Sample) -> list[np.ndarray]:
    if sample.is_background:
        return [read_image(sample.path("image"))]
    if sample.is_foreground_only:
        return cutout_tiles(read_foreground(sample.path("foreground")), read_alpha(sample.path("alpha")), True)
    image, alpha = read_pair(sample.path("image"), sample.path("alpha"))
    return cutout_tiles(np.dstack([image, alpha]), alpha, False)


def cutout_tiles(foreground: np.ndarray, alpha: np.ndarray, foreground_only: bool) -> list[np.ndarray]:
    """A photo's tiles (image | alpha | cutout over a checkerboard) from its RGBA (the image with its alpha), or a
    foreground-pool row's (foreground over a checkerboard | alpha)."""
    height, width = alpha.shape
    cutout = over(foreground, checkerboard(height, width, max(8, min(height, width) // 24)))
    alpha_rgb = np.repeat(alpha[..., None], 3, axis=2)
    return [cutout, alpha_rgb] if foreground_only else [foreground[..., :3], alpha_rgb, cutout]


def _fit(tile: np.ndarray, size_px: int) -> np.ndarray:
    """Scale a tile to fit a size_px square (aspect kept), centred on a dark square."""
    height, width = tile.shape[:2]
    scale = size_px / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(tile, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = np.full((size_px, size_px, 3), 32, np.uint8)
    top, left = (size_px - new_h) // 2, (size_px - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def choose_samples(root: str | os.PathLike, n: int, split: str | None, seed: int) -> list[Sample]:
    """n complete samples of `split` (default: the first split present), drawn without replacement by seed."""
    split = split or next(iter(splits(root)), None)
    if split is None:
        raise InputError(no_splits(root, "preview"))
    ids = sorted(sample.id for sample in iter_samples(root, split))  # ids, not rows: a million of them fit
    if not ids:
        raise InputError(f"{root}/{split} has no complete sample")
    order = sorted(np.random.default_rng(seed).permutation(len(ids))[:n])
    chosen = {ids[i] for i in order}
    found = {sample.id: sample for sample in iter_samples(root, split) if sample.id in chosen}
    return [found[ids[i]] for i in order]


def tile_sheet(rows: list[tuple[str, list[np.ndarray]]], tile_px: int = 256) -> np.ndarray:
    """HxWx3 uint8 sheet of (label, RGB tiles) rows; each tile fitted into a tile_px square, the label below."""
    columns = max(len(tiles) for _, tiles in rows)
    row_h, col_w = tile_px + LABEL_PX + GAP_PX, tile_px + GAP_PX
    sheet = np.full((row_h * len(rows) + GAP_PX, col_w * columns + GAP_PX, 3), 16, np.uint8)
    for r, (label, tiles) in enumerate(rows):
        top = GAP_PX + r * row_h
        for c, tile in enumerate(tiles):
            left = GAP_PX + c * col_w
            sheet[top : top + tile_px, left : left + tile_px] = _fit(tile, tile_px)
        cv2.putText(
            sheet,
            label,
            (GAP_PX, top + tile_px + LABEL_PX - 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            (230, 230, 230),
            1,
            cv2.LINE_AA,
        )
    return sheet


def write_preview(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 16,
    split: str | None = None,
    seed: int = 0,
    tile_px: int = 256,
) -> int:
    """Write a contact sheet PNG of n samples of `root` (a dataset directory, or the Parquet shards that push writes:
    a folder of them or hf://user/name, read in place) to `out`; returns the number of rows drawn."""
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    from datagen.shards import is_shard_location, preview_rows  # it builds on this module

    if is_shard_location(str(root)):
        rows = preview_rows(str(root), n, split, seed)
    else:
        rows = [(f"{s.split}/{s.id}", sample_tiles(s)) for s in choose_samples(root, n, split, seed)]
    write_atomic(Path(out), encode_png(tile_sheet(rows, tile_px)))
    return len(rows)
