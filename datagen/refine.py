"""ViTMatte: soft mattes from coarse masks (`datagen refine DIR`) and the second stage of `ormbg.infer --refine`.

One implementation for both uses:

- `alpha.trimap_from_alpha(mask, band_px, edge_of=127)`: a trimap from a coarse matte: unknown (128) within
  `band_px` of its edge, the mask's own 0 / 255 elsewhere. `band_width` scales the width with the person (a share
  of the mask's bounding-box height).
- `Matter`: `transformers`' `VitMatteForImageMatting` from a Hub id or a local folder (`--offline`), run on image +
  trimap prepared as its image processor does (RGB / 255, normalised with mean 0.5 and std 0.5; the trimap / 255 as
  a fourth channel; zero padding at the bottom and right to a multiple of 32), in batches of equal padded size.
  Images longer than `max_side_px` take a resized pass (image area-resized, trimap nearest) whose alpha is resized
  back linearly; the known region is then restored from the full-size trimap, so only the band is resampled.
- `refine_alpha`: the final alpha is ViTMatte's inside the band and exactly the trimap's 0 / 255 outside it.

`run_refine` rewrites the alpha of the coarse photo rows of a dataset directory: the original matte is kept in
`mask/`, the trimap used in `refine_trimap/` (a source's own `trimap/`, a benchmark's, is never touched), and the rows
record `alpha_source`, `refine_model` and `refine_band_px`. The new alpha goes through `records.replace_alpha`, which
deletes what was derived from the old one (fg/ of `datagen foreground`: run it again).
"""

from __future__ import annotations

import functools
import itertools
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import cv2
import numpy as np
from tqdm import tqdm

from datagen.alpha import alpha_bbox, trimap_from_alpha
from datagen.cluster import batched, check_shared_paths, ray_map
from datagen.console import option
from datagen.errors import InputError
from datagen.io import ImageReadError, encode_png, read_alpha, read_pair, write_atomic
from datagen.parallel import pick_device, reuse_freed_memory, torch_dtype
from datagen.records import (
    DERIVED_FROM_ALPHA,
    FILE_COLUMNS,
    FILE_KINDS,
    REFINE_KINDS,
    SPLITS,
    STRING_BATCH,
    InPlaceResult,
    Sample,
    Skip,
    StringColumn,
    StringIndex,
    append_rows,
    cache_batches,
    chosen_splits,
    file_table,
    file_table_rows,
    files_of_ids,
    forget_derived,
    index_in,
    iter_rows,
    iter_strings,
    metadata_path,
    named_by_id,
    photo_flags,
    plane_name,
    replace_alpha,
    resolve_shard,
    update_rows,
)
from datagen.stage import stage_run
from datagen.weights import MissingModelError

DEFAULT_MODEL = "hustvl/vitmatte-small-composition-1k"
PAD_MULTIPLE = 32  # the image processor pads height and width to a multiple of this
SOFT_SHARE = 0.05  # a matte with more soft pixels than this share of its foreground is already soft: skipped


def band_width(mask: np.ndarray, band_px: int | None = None, band_fraction: float = 0.02) -> int:
    """The unknown band's half-width in px: `band_px`, else `band_fraction` of the mask's bounding-box height
    (at least 3 px), so a small person gets a narrow band and a close-up a wide one."""
    if band_px:
        return band_px
    box = alpha_bbox(mask > 127)
    height = box[2] - box[0] if box else min(mask.shape)
    return max(3, round(band_fraction * height))


def uncertain_trimap(alpha: np.ndarray, widen_px: int = 4, low: int = 16, high: int = 239) -> np.ndarray:
    """The trimap of a predicted matte (ORMBG's, for `infer --refine`): unknown where it is soft or uncertain
    (low < alpha < high) and on the edge of its mask, widened by `widen_px`; known elsewhere."""
    unsure = ((alpha > low) & (alpha < high)).astype(np.uint8)
    edge = trimap_from_alpha(alpha, 1, edge_of=127) == 128
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * widen_px + 1, 2 * widen_px + 1))
    unknown = cv2.dilate((unsure | edge).astype(np.uint8), disc) > 0
    return np.where(unknown, 128, np.where(alpha >= 128, 255, 0)).astype(np.uint8)


def vitmatte_config(shape: str = "small"):
    """A VitMatteConfig of the published architectures ("small": ViT-S, 384 wide; "base": ViT-B, 768 wide; 12 blocks,
    windowed attention in 8, global in 4) or "tiny" (2 blocks, 32 wide): random-weight models for tests and
    benchmarks, saved with save_pretrained and loaded like a real checkpoint."""
    from transformers import VitDetConfig, VitMatteConfig

    if shape == "tiny":
        backbone = VitDetConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, num_channels=4, image_size=64,
            patch_size=16, out_features=["stage2"], pretrain_image_size=64, window_block_indices=[],
            residual_block_indices=[], use_relative_position_embeddings=False,
        )  # fmt: skip
        return VitMatteConfig(backbone_config=backbone, hidden_size=32, convstream_hidden_sizes=[8, 16, 16],
                              fusion_hidden_sizes=[16, 16, 8, 8])  # fmt: skip
    hidden, heads = {"small": (384, 6), "base": (768, 12)}[shape]
    backbone = VitDetConfig(
        hidden_size=hidden, num_hidden_layers=12, num_attention_heads=heads, mlp_ratio=4, num_channels=4,
        image_size=512, patch_size=16, pretrain_image_size=224, window_size=14, out_features=["stage12"],
        window_block_indices=[0, 1, 3, 4, 6, 7, 9, 10], residual_block_indices=[2, 5, 8, 11],
        use_relative_position_embeddings=True,
    )  # fmt: skip
    # the decoder widths as published, passed as lists (some transformers versions default to tuples, which fail)
    return VitMatteConfig(backbone_config=backbone, hidden_size=hidden, convstream_hidden_sizes=[48, 96, 192],
                          fusion_hidden_sizes=[256, 128, 64, 32])  # fmt: skip


def load_matting_model(model: str, offline: bool = False, option: str = "--model"):
    """VitMatteForImageMatting from a local folder or a Hub id; a missing one raises MissingModelError with the
    command that fetches it (a Hub id) or what the folder lacks; `option` names the option that gave it."""
    from transformers import AutoConfig, VitMatteForImageMatting

    try:
        config = AutoConfig.from_pretrained(model, local_files_only=offline)  # HF_HUB_OFFLINE is honoured
        if config.model_type != "vitmatte":
            raise ValueError(f"it holds a {config.model_type!r} model, not ViTMatte")
        return VitMatteForImageMatting.from_pretrained(model, config=config, local_files_only=offline)
    except (OSError, ValueError) as error:
        reason = str(error).splitlines()[0]
        folder = f"pass {option} with a local folder that holds a ViTMatte config.json and its weights"
        if Path(model).exists():
            raise MissingModelError(
                f"{option} {model}: cannot load ViTMatte from this folder ({reason}); {folder}"
            ) from error
        if model.startswith((".", "/", "~")) or model.count("/") != 1:  # a path, not a Hub id user/name
            raise MissingModelError(
                f"{option} {model}: no such folder; {folder}, or a Hub id such as {DEFAULT_MODEL}"
            ) from error
        raise MissingModelError(
            f"{option} {model}: cannot load ViTMatte from the Hub model {model} ({reason}); with Hub access run "
            f"`hf download {model}`, or {folder}"
        ) from error


class Matter:
    """ViTMatte on HxWx3 uint8 images and HxW uint8 trimaps -> HxW uint8 alphas (see the module docstring)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        device: str = "auto",
        dtype: str = "fp32",
        offline: bool = False,
        max_side_px: int = 2048,
        option: str = "--model",  # the option that named the model, for errors
    ):

        self.name, self.max_side_px = model, max_side_px
        self.device = pick_device(device)
        self.dtype = torch_dtype(dtype, self.device)
        self.model = load_matting_model(model, offline, option).to(self.device, self.dtype).eval()

    def prepare(self, image: np.ndarray, trimap: np.ndarray):
        """4xHpxWp float tensor as the image processor makes it (normalised RGB, trimap / 255, zero padding)."""
        import torch

        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255  # a copy: inputs may be read-only
        pixels = (pixels - 0.5) / 0.5
        channels = torch.cat([pixels, torch.from_numpy(trimap).float()[None] / 255])
        height, width = trimap.shape
        pad_h, pad_w = -height % PAD_MULTIPLE, -width % PAD_MULTIPLE
        return torch.nn.functional.pad(channels, (0, pad_w, 0, pad_h))

    def predict(self, images: list[np.ndarray], trimaps: list[np.ndarray]) -> list[np.ndarray]:
        """Raw ViTMatte alphas (HxW float32 in [0, 1]) of images and trimaps of one padded size, in one batch."""
        import torch

        batch = torch.stack([self.prepare(i, t) for i, t in zip(images, trimaps)]).to(self.device, self.dtype)
        with torch.no_grad():
            alphas = self.model(pixel_values=batch).alphas.float().clamp(0, 1).cpu().numpy()
        return [alpha[0, : t.shape[0], : t.shape[1]] for alpha, t in zip(alphas, trimaps)]

    def __call__(self, images: list[np.ndarray], trimaps: list[np.ndarray]) -> list[np.ndarray]:
        """Final alphas (HxW uint8): ViTMatte's inside each trimap's band, the trimap's 0 / 255 outside."""
        results: list[np.ndarray | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        small = []
        for index, (image, trimap) in enumerate(zip(images, trimaps)):
            scale = min(1.0, self.max_side_px / max(trimap.shape))
            small.append(_shrink(image, trimap, scale))
            height, width = small[-1][1].shape
            groups.setdefault((-(-height // PAD_MULTIPLE), -(-width // PAD_MULTIPLE)), []).append(index)
        for indices in groups.values():
            predicted = self.predict([small[i][0] for i in indices], [small[i][1] for i in indices])
            for index, alpha in zip(indices, predicted):
                height, width = trimaps[index].shape
                if alpha.shape != (height, width):  # the resized pass: back to full size, linearly
                    alpha = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
                results[index] = restore_known(alpha, trimaps[index])
        return results


def _shrink(image: np.ndarray, trimap: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    if scale >= 1.0:
        return image, trimap
    size = (max(1, round(trimap.shape[1] * scale)), max(1, round(trimap.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.resize(
        trimap, size, interpolation=cv2.INTER_NEAREST
    )


def restore_known(alpha: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    """HxW uint8: round(alpha * 255) in the unknown band (trimap 128), the trimap's own 0 / 255 elsewhere."""
    refined = np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    return np.where(trimap == 128, refined, trimap).astype(np.uint8)


def soft_share(alpha: np.ndarray) -> float:
    """Share of the foreground (alpha > 0) that is soft (0 < alpha < 255)."""
    foreground = int((alpha > 0).sum())
    return float(((alpha > 0) & (alpha < 255)).sum() / foreground) if foreground else 0.0


@dataclass(frozen=True)
class RefineConfig:
    root: Path
    splits: tuple[str, ...] = option(())  # empty: every split present
    model: str = option(
        DEFAULT_MODEL, "ViTMatte Hub id or local folder (also -base-composition-1k, -small/-base-distinctions-646)."
    )
    band_px: int | None = option(
        None,
        "Half-width of the unknown band in px  [default: --band-fraction of the person's height].",
        flags=("--band",),
        type=click.IntRange(min=1),
    )
    band_fraction: float = option(
        0.02,
        "Band half-width as a share of the mask's bounding-box height (at least 3 px).",
        type=click.FloatRange(0, 0.5, min_open=True, max_open=True),
    )
    # only rows whose FIELD equals VALUE (all must hold): pairs, or FIELD=VALUE strings
    where: tuple[tuple[str, str], ...] = option(
        (), "FIELD=VALUE: only rows whose metadata field has this value (repeatable, all must hold).", type=str,
        multiple=True,
    )  # fmt: skip
    force: bool = option(False, "Refine mattes that are already soft too (more than 5% soft pixels).")
    overwrite: bool = option(False, "Refine again rows refined before (another --model), each from its mask/.")
    device: str = option("auto")
    dtype: str = option("fp32")
    batch_size: int = option(4, "Images per batch (of equal padded size).")
    max_side_px: int = option(
        2048,
        "Longer images take a resized pass; the known region is kept at full size.",
        flags=("--max-side",),
        type=click.IntRange(min=64),
    )
    offline: bool = option(False)
    shard: tuple[int, int] | None = option(None)
    ray: str | None = option(None)  # refine on Ray (datagen.cluster): its address, or "local"; None: here
    progress: bool = option(True)

    def __post_init__(self) -> None:
        for split in self.splits:
            if split not in SPLITS:
                raise InputError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
        if self.band_px is not None and self.band_px < 1:
            raise InputError(f"band_px must be at least 1, got {self.band_px}")
        if not 0 < self.band_fraction < 0.5 or self.batch_size < 1 or self.max_side_px < 64:
            raise InputError("band_fraction must be in (0, 0.5), batch_size >= 1 and max_side_px >= 64")
        object.__setattr__(self, "shard", resolve_shard(self.shard, self.overwrite))
        object.__setattr__(self, "where", parse_where(self.where))
        check_shared_paths(self.ray, {"DIRECTORY": self.root})


@dataclass
class RefineResult(InPlaceResult):
    """`new`: mattes refined now (also `refined`); `existing`: refined by an earlier run; `waiting`: rows still to
    refine."""

    soft_skipped: int = 0  # already soft (more than SOFT_SHARE soft pixels): kept unless --force
    foregrounds_removed: int = 0  # fg/ files derived from a replaced alpha, deleted: `datagen foreground` redoes them

    @property
    def refined(self) -> int:
        return self.new

    def summary_parts(self) -> list[str]:
        return [f"kept (already soft) {self.soft_skipped}", *super().summary_parts()]

    def summary_lines(self) -> list[str]:
        removed = self.foregrounds_removed
        return [
            *([f"fg/ of {removed} refined rows removed (estimated from the old alpha): run `datagen foreground "
               f"{self.out}` to estimate them again"] if removed else []),
            *super().summary_lines(),
        ]  # fmt: skip


def _paths(sample: Sample) -> dict[str, Path]:
    folder = sample.root / sample.split
    return {
        "alpha": sample.path("alpha"),
        "mask": folder / plane_name("mask", sample.id),
        "refine_trimap": folder / plane_name("refine_trimap", sample.id),
    }


# what refine reads of each row: its files, the markers of files derived from its alpha, and what it recorded
REFINE_COLUMNS = (*FILE_COLUMNS, *DERIVED_FROM_ALPHA.values(), "alpha_source", "refine_model")
ALPHA_FOLDER = FILE_KINDS["alpha"][1]  # where the stages put a row's alpha: gt/<id>.png


def _flags(batch):
    """What refine keeps of a batch of rows read with REFINE_COLUMNS, beside their ids and alpha file names: whether
    each row is a photo (an image and an alpha), records `alpha_source: vitmatte` (`model`: its refine_model) or
    nothing yet, and whether its refine columns already name its mask/ and refine_trimap/ files."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = dict(zip(batch.schema.names, batch.columns))
    source, ids = column["alpha_source"], column["id"]
    vitmatte = pc.equal(source, "vitmatte").fill_null(False)
    named = pc.and_(pc.is_valid(source), pc.is_valid(column["refine_model"]))
    for kind in REFINE_KINDS:
        named = pc.and_(named, named_by_id(column[FILE_KINDS[kind][0]], ids, FILE_KINDS[kind][1]))
    values = {
        "photo": photo_flags(batch),
        "vitmatte": vitmatte,
        "unrecorded": pc.is_null(source),
        "named": named,
        "model": pc.if_else(vitmatte, column["refine_model"], pa.scalar(None, pa.string())),
    }
    return pa.record_batch(list(values.values()), names=list(values))


@dataclass
class SplitRows:
    """One split's rows as refine reads them: `records.file_table` of the REFINE_COLUMNS, reduced a batch at a time as
    it is read: the ids are held (`StringColumn`), the alpha file names only where they are not `gt/<id>.png` (as the
    stages name them: 30 MB of names at 10^6 rows otherwise), the rest as a flag a row (`_flags`); no object per row."""

    root: Path
    split: str
    table: Any  # pyarrow Table: the columns of _flags, and the ids
    photos: np.ndarray
    chosen: np.ndarray  # photos that --where chooses
    vitmatte: np.ndarray
    unrecorded: np.ndarray
    other_rows: np.ndarray  # the rows whose alpha is not named gt/<id>.png (sorted), and their names
    other_alphas: Any  # pyarrow StringArray

    @classmethod
    def read(cls, root: Path, split: str, where: tuple[tuple[str, str], ...] = ()) -> SplitRows:
        import pyarrow.compute as pc

        ids, others, other_rows = StringColumn(), StringColumn(), []

        def keep(batch, start: int):
            if start == 0:  # the first batch of a reading (Arrow's, or the row by row one that replaces it)
                ids.finish(), others.finish(), other_rows.clear()
            ids.extend_array(batch.column("id"))
            alphas = pc.fill_null(batch.column("alpha_file_name"), "")
            usual = named_by_id(alphas, batch.column("id"), ALPHA_FOLDER)
            other_rows.append(start + np.flatnonzero(~usual.to_numpy(zero_copy_only=False)))
            others.extend_array(alphas.filter(pc.invert(usual)))
            return _flags(batch)

        table = file_table(root, split, REFINE_COLUMNS, reduce=keep)
        # one buffer, apart from Arrow's pool (which then holds only what a batch needs), and one chunk (Arrow's take of
        # a chunked array joins its chunks first)
        table = table.append_column("id", ids.finish())
        photos, vitmatte, unrecorded = (table.column(name).to_numpy() for name in ("photo", "vitmatte", "unrecorded"))
        chosen = photos.copy()
        if where:  # any field of the row, compared as text: the rows themselves, streamed
            matches = (all(str(row.get(key)) == value for key, value in where) for row in iter_rows(root, split))
            chosen &= np.fromiter(matches, bool, table.num_rows)
        rows = np.concatenate(other_rows) if other_rows else np.zeros(0, np.int64)
        return cls(root, split, table, photos, chosen, vitmatte, unrecorded, rows, others.finish())

    def alpha_names(self, numbers: np.ndarray) -> list[str]:
        """The alpha file names of the rows `numbers` ("" for a row without one)."""
        names = [f"{ALPHA_FOLDER}/{sample_id}.png" for sample_id in self.ids.take(numbers).to_pylist()]
        if len(self.other_rows):
            at = np.searchsorted(self.other_rows, numbers)
            hit = np.flatnonzero(self.other_rows[np.minimum(at, len(self.other_rows) - 1)] == numbers)
            for number, name in zip(hit.tolist(), self.other_alphas.take(at[hit]).to_pylist()):
                names[number] = name
        return names

    @functools.cached_property
    def folder(self) -> str:
        return os.path.join(str(self.root / self.split), "")

    @property
    def ids(self):
        return self.table.column("id")

    @functools.cached_property
    def index(self) -> StringIndex:
        """The ids, searchable (`records.StringIndex`: 12 bytes a row), made once."""
        return StringIndex(self.ids)

    def rows(self, numbers: np.ndarray):
        """The REFINE_COLUMNS of the rows `numbers` (sorted), read again (no other row is held): a pyarrow Table."""
        import pyarrow as pa

        return file_table_rows(self.root, self.split, REFINE_COLUMNS, numbers, self.ids.take(pa.array(numbers)))


def refined_mask(rows: SplitRows, now: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Which rows' alpha is ViTMatte's: refined by this run (`now`), recorded in the row (unless `overwrite` redoes
    those), or (a photo row not yet recorded) its files say so: refine_trimap/, the last file written, is there and the
    alpha is no longer the original kept in mask/. mask/ and refine_trimap/ are listed once, not stat-ed a row at a
    time; only the few rows a killed run left are read."""

    refined = now | (rows.vitmatte & (not overwrite))
    unrecorded = np.flatnonzero(rows.photos & ~now & rows.unrecorded)
    if not len(unrecorded):
        return refined
    written = unrecorded[_present(rows, unrecorded)]
    for row, alpha in zip(written.tolist(), rows.alpha_names(written)):
        mask = rows.folder + plane_name("mask", rows.ids[row].as_py())
        refined[row] = _read(mask) != _read(rows.folder + alpha)
    return refined


def _present(rows: SplitRows, numbers: np.ndarray) -> np.ndarray:
    """Which of the rows `numbers` have both their mask/ and refine_trimap/ files: each folder listed once
    (`records.files_of_ids`)."""
    present = np.ones(len(numbers), bool)
    for kind in REFINE_KINDS:
        present &= files_of_ids(f"{rows.folder}{FILE_KINDS[kind][1]}/", rows.index, ".png", numbers)
    return present


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError:
        return None


SOFT_SHARES = "refine-soft.jsonl"  # DIR/refine-soft.jsonl: the soft share of each alpha measured, see SoftShares
SOFT_APPEND = 256  # measures appended to it at a time: a killed run measures at most these again


class SoftShares:
    """The soft share (`soft_share`) of each row's alpha, measured once: measures are appended to DIR/refine-soft.jsonl
    (SOFT_APPEND at a time) with the alpha file's size and modification time, so a rerun, or a run resumed after a
    crash, stats the alpha instead of decoding it (5.7 ms a 1024x768 matte: minutes at 10^5 rows); an alpha whose size
    or time changed is measured again. Bad or partial lines of the file are measured again too (it is a cache). The file
    is streamed (`records.cache_batches`) once for the splits asked about, each line's id found among the split's ids
    (`StringIndex`): what is held is three numbers a row, a later line of an id winning."""

    SCHEMA = (("id", "string"), ("split", "string"), ("size", "int64"), ("mtime_ns", "int64"), ("soft_share", "double"))

    def __init__(self, root: Path):
        self.path = root / SOFT_SHARES
        self._known: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # per split: sizes, times, shares
        self._measured: list[dict[str, Any]] = []  # appended SOFT_APPEND at a time (one lock and sync for them)

    def reload(self) -> None:
        """Read the file again when next asked (other shards append to it too)."""
        self._known.clear()

    def read(self, splits: list[SplitRows]) -> None:
        """What the file says of the rows of `splits`: one pass over it, a batch of lines at a time."""
        import pyarrow as pa
        import pyarrow.compute as pc

        indexes = {}
        for rows in splits:
            count = rows.table.num_rows
            self._known[rows.split] = (np.full(count, -1, np.int64), np.full(count, -1, np.int64), np.zeros(count))
            indexes[rows.split] = rows.index
        schema = pa.schema([(name, pa.type_for_alias(kind)) for name, kind in self.SCHEMA])
        for batch in cache_batches(self.path, schema):
            for split, index in indexes.items():
                part = batch.filter(pc.equal(batch.column("split"), split))
                at = index.find(part.column("id"))
                last = len(at) - 1 - np.unique(at[::-1], return_index=True)[1]  # each row's last line in the batch
                last = last[at[last] >= 0]
                for known, name in zip(self._known[split], ("size", "mtime_ns", "soft_share")):
                    known[at[last]] = part.column(name).to_numpy()[last]

    def shares(self, rows: SplitRows, which: np.ndarray) -> np.ndarray:
        """The soft share of the alpha of each of `which` (row numbers of `rows`); 0.0 (coarse: its batch then skips
        it with the reason) where it cannot be read, which is not kept."""
        if rows.split not in self._known:
            self.read([rows])
        sizes, times, known = self._known[rows.split]
        shares = np.zeros(len(which))
        for start in range(0, len(which), STRING_BATCH):
            part = which[start : start + STRING_BATCH]
            paths = [rows.folder + name for name in rows.alpha_names(part)]
            stats = _stats(paths)
            same = (stats[:, 0] == sizes[part]) & (stats[:, 1] == times[part])
            shares[start : start + len(part)][same] = known[part][same]
            for number in np.flatnonzero(~same & (stats[:, 0] >= 0)).tolist():  # changed, or never measured
                shares[start + number] = self._measure(rows, int(part[number]), paths[number])
        self.flush()
        return shares

    def _measure(self, rows: SplitRows, row: int, path: str) -> float:
        """Decode one alpha, measure its soft share and keep it with the file's size and time; 0.0, not kept, when it
        cannot be read."""
        try:
            stat = os.stat(path)
            value = soft_share(read_alpha(path))
        except (OSError, ImageReadError):
            return 0.0
        entry = {"split": rows.split, "id": rows.ids[row].as_py(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        self._measured.append({**entry, "soft_share": value})
        if len(self._measured) >= SOFT_APPEND:
            self.flush()
        return value

    def flush(self) -> None:
        """Append the measures not yet in the file."""
        append_rows(self.path, self._measured)
        self._measured.clear()


def _stats(paths: list[str]) -> np.ndarray:
    """(size, modification time in ns) of each file, int64 rows; -2, -2 for one that cannot be stat-ed."""
    stats = np.full((len(paths), 2), -2, np.int64)
    for number, path in enumerate(paths):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        stats[number] = stat.st_size, stat.st_mtime_ns
    return stats


def wanted_mask(rows: SplitRows, refined: np.ndarray, config: RefineConfig, soft: SoftShares, among=None) -> np.ndarray:
    """Which rows (of `among`, default all) this run should refine: chosen, not refined yet (`refined`), and coarse (or
    --force); `soft` measures each alpha's soft share once (across runs)."""
    wanted = rows.chosen & ~refined & (True if among is None else among)
    forced = np.full(len(wanted), config.force) | (config.overwrite & rows.vitmatte)
    measured = np.flatnonzero(wanted & ~forced)
    wanted[measured] = soft.shares(rows, measured) <= SOFT_SHARE
    return wanted


def _refine_batch(matter: Matter, samples: list[Sample], config: RefineConfig) -> list[Skip | tuple[str, bool]]:
    """Refine a batch of rows: original to mask/ (once), new alpha to gt/ (what derives from the old one deleted), the
    trimap used to refine_trimap/ (last). Per sample: a Skip, or (its id, whether an fg/ derived from the old alpha
    was deleted)."""
    outcomes: list[Skip | tuple[str, bool]] = []
    images, trimaps, ready = [], [], []
    for sample in samples:
        paths = _paths(sample)
        source = paths["mask"] if paths["mask"].is_file() else paths["alpha"]  # a resumed row: the original
        try:
            image, mask = read_pair(sample.path("image"), source)
        except ImageReadError as error:
            outcomes.append(Skip(error.path, f"unreadable input: {error.reason}"))
            continue
        if not paths["mask"].is_file():
            write_atomic(paths["mask"], source.read_bytes())  # the original matte, byte for byte, before anything
        images.append(image)
        trimaps.append(trimap_from_alpha(mask, band_width(mask, config.band_px, config.band_fraction), edge_of=127))
        ready.append(len(outcomes))
        outcomes.append((sample.id, False))
    for position, trimap, alpha in zip(ready, trimaps, matter(images, trimaps) if images else []):
        sample = samples[position]
        removed = "foreground" in replace_alpha(sample, encode_png(alpha))
        write_atomic(_paths(sample)["refine_trimap"], encode_png(trimap))  # last: with gt/ != mask/, marks it done
        outcomes[position] = (sample.id, removed)
    return outcomes


class _Worker:
    """Per-process state of a Ray refine worker: the config and its loaded ViTMatte."""

    config: RefineConfig
    matter: Matter


def _init_worker(config: RefineConfig) -> None:
    _Worker.config = config
    _Worker.matter = Matter(config.model, config.device, config.dtype, config.offline, config.max_side_px)


def refine_batch(samples: list[Sample]) -> list[Skip | tuple[str, bool]]:
    """On a Ray worker (an actor holding ViTMatte): one batch of rows, as a local run refines it."""
    return _refine_batch(_Worker.matter, samples, _Worker.config)


def _outcomes(todo: _Todo, config: RefineConfig, matter: Matter | None) -> Iterator[Skip | tuple[str, bool]]:
    """Each row's outcome in order: batches of --batch-size through ViTMatte here, or on Ray's actors (one per GPU;
    one per CPU with --device cpu), each loading the model once."""
    if config.ray:
        gpus = 0 if config.device == "cpu" else 1
        options = {"batch_size": config.batch_size, "gpus": gpus, "actors": True, "per_batch": True}
        yield from ray_map(refine_batch, todo, config.ray, _init_worker, (config,), **options)
        return
    if todo:
        matter = matter or Matter(config.model, config.device, config.dtype, config.offline, config.max_side_px)
        reuse_freed_memory()  # once the model is loaded (its freed host copies went back): see the test's figures
    for batch in batched(todo, config.batch_size):
        yield from _refine_batch(matter, batch, config)


def run_refine(config: RefineConfig, matter: Matter | None = None, command: str = "datagen refine") -> RefineResult:
    """Refine the coarse photo rows of `config.root` (this shard's share) with ViTMatte; see the module docstring.

    `matter` replaces the model (tests pass one built from a tiny random checkpoint through the same loader). The rows
    are read as columns, the folders listed once and the soft shares looked up by id (`SplitRows`, `SoftShares`): a
    rerun over a million rows holds their ids and file names, not a dict a row."""
    if matter is not None and config.ray:
        raise ValueError("a matter passed in runs in this process only: leave config.ray unset")
    root = Path(config.root)
    result = RefineResult(root)
    split_names = chosen_splits(root, config.splits, "refine")
    with stage_run(result, config, command, shard=config.shard, ray=config.ray, in_place=True,
                   record="refine.json") as run:  # fmt: skip
        soft, todo, selected = SoftShares(root), _Todo(), {}
        splits = [SplitRows.read(root, split, config.where) for split in split_names]
        for rows in splits:
            check_model(rows, config)
        if not config.force:
            soft.read([rows for rows in splits if (rows.chosen & ~rows.vitmatte).any()])  # one pass for all splits
        for rows in splits:
            index, count = config.shard
            mine = np.arange(rows.table.num_rows) % count == index
            refined = refined_mask(rows, np.zeros_like(mine), config.overwrite)
            wanted = wanted_mask(rows, refined, config, soft, among=mine)
            result.existing += int(np.count_nonzero(mine & rows.photos & refined))
            result.soft_skipped += int(np.count_nonzero(mine & rows.chosen & ~refined & ~wanted))
            todo.add(rows, np.flatnonzero(wanted))
            selected[rows.split] = (rows, mine, wanted)
        del splits, rows
        refined_now: dict[str, set[str]] = {split: set() for split in split_names}
        outcomes = zip(todo.splits(), _outcomes(todo, config, matter))
        for split, outcome in tqdm(outcomes, total=len(todo), desc="refine", unit="image", disable=not config.progress):
            if isinstance(outcome, Skip):
                run.skip(outcome)
            else:
                refined_now[split].add(outcome[0])
                result.foregrounds_removed += outcome[1]
                result.new += 1
        del todo
        soft.reload()  # what it read is not needed again (a shard that needs it reads it anew): 24 MB at 10^6 rows
        for split in split_names:
            _record_split(root, split, config, result, refined_now[split], soft, selected.pop(split))
    return result


class _Todo:
    """The rows a run refines, in order: each split's rows to refine, their REFINE_COLUMNS read when the run begins
    (`SplitRows.rows`), made Samples a batch at a time as they are taken (a first run over a million rows holds no
    million dicts)."""

    def __init__(self) -> None:
        self.parts: list[tuple[SplitRows, Any]] = []

    def add(self, rows: SplitRows, numbers: np.ndarray) -> None:
        if len(numbers):
            self.parts.append((rows, rows.rows(numbers)))

    def __len__(self) -> int:
        return sum(table.num_rows for _, table in self.parts)

    def __iter__(self) -> Iterator[Sample]:
        for rows, table in self.parts:
            for start in range(0, table.num_rows, STRING_BATCH):
                for row in table.slice(start, STRING_BATCH).to_pylist():
                    yield Sample(rows.root, rows.split, {key: value for key, value in row.items() if value is not None})

    def splits(self) -> Iterator[str]:
        """The split of each row, in the same order."""
        for rows, table in self.parts:
            yield from itertools.repeat(rows.split, table.num_rows)


def check_model(rows: SplitRows, config: RefineConfig) -> None:
    """Refuse to call rows refined by another model done: name the option that refines them again."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if config.overwrite:
        return
    models = rows.table.column("model").filter(pa.array(rows.chosen & rows.vitmatte))
    counts = pc.value_counts(models)
    others = Counter(dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())))
    others.pop(config.model, None)
    if others:
        model, count = others.most_common(1)[0]
        raise InputError(
            f"{count} rows of {rows.root / rows.split} were refined with {model}, not {config.model}: "
            "add --overwrite to refine them again with this model (each from its original in mask/), or pass "
            f"--model {model}"
        )


def _record_split(
    root: Path, split: str, config: RefineConfig, result: RefineResult, refined_now: set[str], soft: SoftShares,
    selected: tuple[SplitRows, np.ndarray, np.ndarray],
) -> None:  # fmt: skip
    """Once no row of the split waits, give every photo row mask/, refine_trimap/ and the refine columns (rows stay
    uniform: a row kept as it was gets its own matte in mask/, a trimap from its alpha, `alpha_source: original`).
    First, the columns of files derived from a replaced alpha go (records.forget_derived). `selected`: the split's rows,
    this shard's share of them and those it wanted, as read when the run began; this shard's rows are not looked at
    again (only those it refined now are done), the other shards' are, read anew (they may have finished meanwhile)."""
    import pyarrow as pa

    selection, mine, wanted = selected
    forget_derived(root, split, selection.index)  # the ids as read at the start, if the rows are still those
    # one shard: the rows are as read at the start (forget_derived drops columns that SplitRows does not read)
    rows = selection if config.shard[1] == 1 else SplitRows.read(root, split, config.where)
    ids = selection.ids
    now = np.zeros(rows.table.num_rows, bool)
    if refined_now:
        now = index_in(rows.ids, pa.array(sorted(refined_now), pa.string())) >= 0
    if rows.ids.equals(ids):
        waiting = wanted & ~now
        if not mine.all():
            soft.reload()  # with what the other shards measured
            refined = refined_mask(rows, now, config.overwrite)
            waiting |= wanted_mask(rows, refined, config, soft, among=~mine)
    else:  # the rows are not those read at the start (never under the shard locks): every row looked at again
        soft.reload()
        waiting = wanted_mask(rows, refined_mask(rows, now, config.overwrite), config, soft)
    if waiting.any():
        result.waiting[split] = int(np.count_nonzero(waiting))
        return
    if _recorded(rows, now):
        result.rows_updated[split] = 0
        return
    refined = refined_mask(rows, now)  # what each alpha is, whatever --overwrite asked

    numbered = enumerate(iter_strings(rows.ids))  # the rows as read above, in the same order

    def update(row: dict[str, Any]) -> dict[str, Any]:
        number, expected = next(numbered, (None, None))
        if row["id"] != expected:  # the metadata changed since it was read (never under the shard locks)
            raise RuntimeError(f"{metadata_path(root, split)} changed while refine recorded it: run it again")
        if not (row.get("file_name") and row.get("alpha_file_name")):
            return {}
        sample = Sample(root, split, row)
        paths = _paths(sample)
        names = {FILE_KINDS[kind][0]: plane_name(kind, sample.id) for kind in REFINE_KINDS}
        if not paths["mask"].is_file():
            write_atomic(paths["mask"], paths["alpha"].read_bytes())
        if not paths["refine_trimap"].is_file():
            write_atomic(paths["refine_trimap"], encode_png(trimap_from_alpha(read_alpha(paths["alpha"]))))
        if not refined[number]:
            return {
                **names,
                "alpha_source": row.get("alpha_source", "original"),
                "refine_model": "",
                "refine_band_px": 0,
            }
        if not now[number] and row.get("refine_model"):  # refined by an earlier run: as it recorded
            return {**names, "alpha_source": "vitmatte"}
        band = band_width(read_alpha(paths["mask"]), config.band_px, config.band_fraction)
        return {**names, "alpha_source": "vitmatte", "refine_model": config.model, "refine_band_px": band}

    result.rows_updated[split] = update_rows(root, split, update)


def _recorded(rows: SplitRows, now: np.ndarray) -> bool:
    """Whether every photo row already records what `_record_split` would give it and has its mask/ and refine_trimap/
    files: nothing refined now, so the split is not rewritten (a no-op rerun over a million rows writes nothing)."""

    if now.any() or not rows.table.column("named").to_numpy()[rows.photos].all():
        return False
    return bool(_present(rows, np.flatnonzero(rows.photos)).all())


def parse_where(items) -> tuple[tuple[str, str], ...]:
    """`FIELD=VALUE` strings (or pairs) -> pairs; a string without `=` is an InputError naming --where."""
    pairs = []
    for item in items:
        if not isinstance(item, str):
            pairs.append(tuple(item))
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InputError(f"--where {item!r}: expected FIELD=VALUE, for example source=dis5k")
        pairs.append((key, value))
    return tuple(pairs)
