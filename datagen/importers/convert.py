"""One source pair -> one contract sample: copy or re-encode the image, orient and check the matte.

Pure per-pair work, run in worker processes; returns the metadata row (files written, row not appended) or
a Skip with its reason (nothing written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from datagen.alpha import trimap_from_alpha
from datagen.importers.layout import Pair
from datagen.io import (
    ImageReadError,
    apply_orientation,
    exif_orientation,
    has_alpha_channel,
    jpeg_is_complete,
    open_image,
    read_alpha,
    read_foreground,
    read_image,
)
from datagen.records import Skip, write_sample_files

LOSSLESS_FORMATS = {"PNG", "BMP", "TIFF", "WEBP"}  # WebP may be lossy; kept as PNG only with --keep-png
TRIMAP_LEVELS = np.array([0, 128, 255], np.uint8)


@dataclass(frozen=True)
class PairJob:
    """Everything a worker needs for one pair (picklable)."""

    pair: Pair
    sample_id: str
    out: Path
    source: str
    license: str
    keep_png: bool
    jpeg_quality: int
    trimaps: bool  # the data set has trimaps: every sample gets one (generated where the source has none)
    foreground: str | None = None  # estimate fg/ with this method (datagen.foreground) as the pair is imported


def _fit(
    array: np.ndarray, orientation: int, raw: tuple[int, int], upright: tuple[int, int], what: str, notes: list[str]
) -> np.ndarray | None:
    """Bring a matte or trimap (HxW, read on its own raw grid) onto the upright image grid.

    It gets the image's EXIF rotation only when it fits the raw grid and not the upright one; then, if its
    size still differs, it is resized only when it is the image at another scale: each side scaled by the other
    side's ratio lands within one pixel (2667x4000 for a 2000x3000 photo). Returns None otherwise.
    Sizes are (width, height). What was done is appended to `notes`.
    """
    size = (array.shape[1], array.shape[0])
    if orientation != 1:
        if size == raw and size != upright:
            array, size = apply_orientation(array, orientation), upright
            notes.append(f"{what} rotated with the image's EXIF orientation (it fit the raw grid)")
        else:
            notes.append(f"{what} kept as stored (it already fit the upright image)")
    if size == upright:
        return array
    if not same_shape_at_another_scale(size, upright):
        return None
    notes.append(f"{what} resized from {size[0]}x{size[1]}")
    shrink = size[0] > upright[0]
    return cv2.resize(array, upright, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def same_shape_at_another_scale(size: tuple[int, int], target: tuple[int, int]) -> bool:
    """True when (width, height) `size` scaled to either side of `target` gives the other side within 1 px."""
    (width, height), (target_width, target_height) = size, target
    return (
        abs(height * target_width / width - target_height) <= 1
        or abs(width * target_height / height - target_width) <= 1
    )


def _snap_trimap(trimap: np.ndarray) -> np.ndarray:
    """Nearest of 0 / 128 / 255 for every pixel (trimaps resized or saved lossy drift off the levels)."""
    return TRIMAP_LEVELS[np.abs(trimap[..., None].astype(np.int16) - TRIMAP_LEVELS).argmin(axis=-1)]


def _image(job: PairJob, source, orientation: int, metadata: dict[str, Any]) -> dict[str, Any]:
    """Arguments of write_sample_files for the image: its bytes copied, or decoded pixels to re-encode."""
    path = job.pair.image
    if source.format == "JPEG" and source.mode == "RGB" and orientation == 1 and jpeg_is_complete(path):
        metadata["image_copied"] = True
        return {"image_bytes": Path(path).read_bytes(), "image_format": "jpg"}
    keep_png = job.keep_png and source.format in LOSSLESS_FORMATS
    return {"image": read_image(path), "image_format": "png" if keep_png else "jpg"}


def _trimap(job: PairJob, alpha: np.ndarray, fit, metadata: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """{"trimap": array} from the source's trimap, or generated from the alpha when the data set has trimaps
    for some samples (so every row has the same columns); {} when it has none at all."""
    if not job.trimaps:
        return {}
    trimap = None
    if job.pair.trimap is not None:
        try:
            trimap = fit(read_alpha(job.pair.trimap, upright=False), "trimap")
        except ImageReadError as error:
            notes.append(f"source trimap unreadable ({error.reason})")
        if trimap is None:
            notes.append("source trimap does not fit the image")
    metadata["trimap_source"] = "original" if trimap is not None else "generated from the alpha"
    return {"trimap": _snap_trimap(trimap) if trimap is not None else trimap_from_alpha(alpha)}


def import_pair(job: PairJob) -> dict[str, Any] | Skip:
    """Convert one pair; returns the row to append, or a Skip (nothing written).

    Every row of one import has the same keys (see docs/FORMAT.md, "uniform rows"): what was done to a sample
    goes into the `notes` string.
    """
    pair = job.pair
    try:
        source = open_image(pair.image, load=False)
        orientation = exif_orientation(source)
    except ImageReadError as error:
        return Skip(pair.key, f"unreadable image: {error.reason}")
    raw = source.size
    upright = raw[::-1] if orientation in (5, 6, 7, 8) else raw
    notes: list[str] = []
    metadata: dict[str, Any] = {
        "source": job.source,
        "license": job.license,
        "original_path": pair.key,
        "subset": "",
        **pair.metadata,
        "exif_orientation": orientation,
        "image_copied": False,
    }
    if pair.rgba:
        if not has_alpha_channel(source):
            return Skip(pair.key, "no alpha channel: not an RGBA cut-out")
        try:
            foreground = read_foreground(pair.image)
        except ImageReadError as error:
            return Skip(pair.key, f"unreadable image: {error.reason}")
        metadata["notes"] = ""
        return write_sample_files(
            job.out,
            pair.split,
            job.sample_id,
            foreground=foreground,
            alpha=np.ascontiguousarray(foreground[..., 3]),
            metadata=metadata,
        )
    try:
        alpha = read_alpha(pair.alpha, upright=False)
    except ImageReadError as error:
        return Skip(str(pair.alpha), f"unreadable matte: {error.reason}")

    def fit(array: np.ndarray, what: str) -> np.ndarray | None:
        return _fit(array, orientation, raw, upright, what, notes)

    fitted = fit(alpha, "alpha")
    if fitted is None:
        return Skip(
            pair.key,
            f"matte size mismatch: matte is {alpha.shape[1]}x{alpha.shape[0]}, image is {upright[0]}x{upright[1]} "
            "(aspect ratios differ, not resized)",
        )
    try:
        extra = _image(job, source, orientation, metadata)
    except ImageReadError as error:
        return Skip(pair.key, f"unreadable image: {error.reason}")
    extra.update(_trimap(job, fitted, fit, metadata, notes))
    if job.foreground:
        from datagen.foreground import estimate_foreground

        image = extra["image"] if "image" in extra else read_image(pair.image)
        extra["foreground"] = np.dstack([estimate_foreground(image, fitted, job.foreground), fitted])
        metadata["foreground_method"] = job.foreground
    metadata["notes"] = "; ".join(notes)
    return write_sample_files(
        job.out, pair.split, job.sample_id, alpha=fitted, metadata=metadata, jpeg_quality=job.jpeg_quality, **extra
    )
